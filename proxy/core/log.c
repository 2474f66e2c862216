/* log.c: JSON lines on stderr. */
#include "core/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static atomic_int min_level = LOG_LEVEL_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    atomic_store(&min_level, (int)level);
}

bool log_enabled(enum log_level level)
{
    return (int)level >= atomic_load_explicit(&min_level, memory_order_relaxed);
}

void log_begin(struct buf *b, enum log_level level, const char *event)
{
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    buf_appendf(b, "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\",\"level\":\"%s\"",
                tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                (int)(tv.tv_usec / 1000), level_names[level]);
    log_str(b, "event", event);
}

void log_strn(struct buf *b, const char *key, const char *value, size_t len)
{
    buf_appendf(b, ",\"%s\":", key);
    log_json_stringn(b, value, len);
}

void log_json_string(struct buf *b, const char *value)
{
    log_json_stringn(b, value, value ? strlen(value) : 0);
}

void log_json_stringn(struct buf *b, const char *value, size_t len)
{
    if (value == NULL) {
        buf_appends(b, "null");
        return;
    }
    char *out = buf_reserve(b, len * 6 + 2);
    size_t n = 0;
    out[n++] = '"';
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)value[i];
        if (ch == '"' || ch == '\\') {
            out[n++] = '\\';
            out[n++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            n += (size_t)sprintf(out + n, "\\u%04x", ch);
        } else {
            out[n++] = (char)ch;
        }
    }
    out[n++] = '"';
    buf_commit(b, n);
}

void log_str(struct buf *b, const char *key, const char *value)
{
    log_strn(b, key, value, value ? strlen(value) : 0);
}

void log_num(struct buf *b, const char *key, long long value)
{
    buf_appendf(b, ",\"%s\":%lld", key, value);
}

void log_end(struct buf *b)
{
    buf_append(b, "}\n", 2);
    const char *p = buf_data(b);
    size_t left = buf_used(b);
    while (left > 0) {
        ssize_t n = write(STDERR_FILENO, p, left);
        if (n <= 0)
            break;
        p += n;
        left -= (size_t)n;
    }
    buf_free(b);
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct buf b = {0};
    log_begin(&b, level, event);
    log_str(&b, "message", msg);
    log_end(&b);
}
