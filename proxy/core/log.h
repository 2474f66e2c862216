/* log.h: one JSON object per line on stderr, for events and the access log. A line is built in
 * a struct buf and written with a single write(2), so lines from several workers never mix. */
#ifndef CERTGATE_LOG_H
#define CERTGATE_LOG_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "core/config.h"

/* log_set_level sets the lowest event level written. */
void log_set_level(enum log_level level);

/* log_enabled tells whether events of |level| are written. */
bool log_enabled(enum log_level level);

/* log_begin starts a line in |b|: {"time":...,"level":...,"event":|event| */
void log_begin(struct buf *b, enum log_level level, const char *event);

/* log_str appends ,"key":"value" with JSON escaping; NULL |value| writes null. */
void log_str(struct buf *b, const char *key, const char *value);

/* log_strn is log_str for |len| bytes that need not be NUL-terminated. */
void log_strn(struct buf *b, const char *key, const char *value, size_t len);

/* log_num appends ,"key":number. */
void log_num(struct buf *b, const char *key, long long value);

/* log_end closes the line, writes it to stderr and frees |b|. */
void log_end(struct buf *b);

/* log_msg writes {"event":|event|,"message":...} at |level| in one call. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* log_json_string appends |value| as a JSON string (quotes, backslashes and control bytes
 * escaped), or null when it is NULL; log_json_stringn takes its length. For every module that
 * writes JSON. */
void log_json_string(struct buf *b, const char *value);
void log_json_stringn(struct buf *b, const char *value, size_t len);

#endif
