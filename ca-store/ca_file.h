/* ca_file.h: whole-file reads for the CA store. */
#ifndef CERTGATE_CA_FILE_H
#define CERTGATE_CA_FILE_H

#include <stddef.h>
#include <stdint.h>

/* ca_file_read reads the regular file |path| (at most 16 MiB) until two reads give the same
 * bytes, and sets |*out| (malloc'd, the caller frees it) and |*out_len|. Returns 0, or a
 * negative errno with "PATH: what" in |err| (-EAGAIN when the file keeps changing, -EFBIG when it
 * is too large, -EISDIR when it is not a regular file: a FIFO, socket or device is refused
 * without being opened for a blocking read). */
int ca_file_read(const char *path, uint8_t **out, size_t *out_len, char *err, size_t err_len);

#endif
