/* notify.h: systemd's readiness protocol (sd_notify) without libsystemd, for Type=notify. */
#ifndef CERTGATE_NOTIFY_H
#define CERTGATE_NOTIFY_H

/* notify_send sends |state| ("READY=1", "STOPPING=1", ...) to $NOTIFY_SOCKET: a datagram unix
 * socket, in the abstract namespace when the variable starts with '@'. Returns 1 when sent, 0
 * when NOTIFY_SOCKET is unset (not run by a service manager), a negative errno on failure. */
int notify_send(const char *state);

#endif
