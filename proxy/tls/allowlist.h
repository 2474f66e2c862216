/* allowlist.h: the allowed client certificate subjects of CONTRACT section 6 (as Corda's),
 * managed through the admin API, persisted in access.allowed_subjects_file and read by every
 * worker. Two subjects are equal when they hold the same attribute=value pairs in any order,
 * attribute names compared case-insensitively. */
#ifndef CERTGATE_ALLOWLIST_H
#define CERTGATE_ALLOWLIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* allowlist_canon parses |subject| (RFC 4514 "CN=x,O=y", also with spaces around '=' or ',',
 * '+' in multi-valued RDNs, backslash and \XX escapes, quoted values, and the usual aliases:
 * E/email for emailAddress, S for ST, dotted OIDs of the common attributes) into a canonical
 * string that is equal for equal subjects. On success |*out| gets a new string the caller frees
 * and 0 is returned; -EINVAL when |subject| is not a distinguished name (|*out| is NULL). */
int allowlist_canon(const char *subject, char **out);

/* allowlist_init loads |path| (a JSON array of subject strings; NULL or a missing file is an
 * empty allowlist). Returns 0, or -EINVAL with "FILE:LINE:COL: message" in |err| when the file
 * does not parse or holds a bad subject, or another negative errno when it cannot be read. */
int allowlist_init(const char *path, char *err, size_t err_len);

/* allowlist_cleanup frees the allowlist. */
void allowlist_cleanup(void);

/* allowlist_version changes whenever the allowlist does; cheap, from any thread. */
uint64_t allowlist_version(void);

/* allowlist_contains reports whether a subject whose canonical form (allowlist_canon) is
 * |canon| is allowed. Thread-safe. */
bool allowlist_contains(const char *canon);

/* allowlist_add adds |subject| and writes the file (atomically: temporary file, fsync, rename).
 * Returns 0 when added, 1 when an equal subject was already there, -EINVAL for a subject that
 * does not parse or is not UTF-8 text, -ENOTSUP when no file is configured, or the errno of a
 * failed write (then nothing changed). |err| gets a message on failure. Main thread only. */
int allowlist_add(const char *subject, char *err, size_t err_len);

/* allowlist_remove removes the subject equal to |subject| and writes the file. Returns 0, or
 * -ENOENT when no equal subject is present (|err| says which), otherwise as allowlist_add. */
int allowlist_remove(const char *subject, char *err, size_t err_len);

/* allowlist_json appends the subjects, as they were added, as a JSON array. */
void allowlist_json(struct buf *out);

#endif
