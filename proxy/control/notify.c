/* notify.c: one datagram to $NOTIFY_SOCKET, as sd_notify(3) sends it; the protocol is stable and
 * small enough that linking libsystemd for it would cost more than it saves. */
#include "control/notify.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int notify_send(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (path == NULL || path[0] == '\0')
        return 0;
    struct sockaddr_un sun;
    size_t len = strlen(path);
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if ((path[0] != '/' && path[0] != '@') || len >= sizeof(sun.sun_path))
        return -EINVAL;
    memcpy(sun.sun_path, path, len);
    if (path[0] == '@')
        sun.sun_path[0] = '\0'; /* abstract: the name is the bytes after the NUL, not terminated */
    socklen_t sun_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len +
                                    (path[0] == '@' ? 0 : 1));
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (const struct sockaddr *)&sun,
                       sun_len);
    int rc = n < 0 ? -errno : 1;
    close(fd);
    return rc;
}
