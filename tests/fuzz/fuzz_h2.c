/* fuzz_h2.c: libFuzzer target for the HTTP/2 frame path of the client side (h2/h2_server.c,
 * h2_request.c, h2_hdrs.c, h2_mem.c under nghttp2). The input is what a client sends after the
 * TLS handshake, fed to a connection in CONN_H2 (h2_harness.h) in pieces; the streams go to a
 * stub backend that records every request and answers some of them (a head, a body from the
 * input, trailers; or a failure), so that the response path runs too. Checked:
 * - every started request has :method, :scheme (https), :authority and :path first, each
 *   once; no other pseudo-header, no connection-specific header, no host, exactly one
 *   x-forwarded-client-cert (certgate's own), no other header of the client-certificate
 *   family, nothing from strip_headers, no name with uppercase or '_' (headers_with_underscores
 *   drop), no NUL, CR or LF in names and values; request trailers obey the same rules;
 * - no more streams start than the input opened (distinct HEADERS stream ids), in increasing
 *   order; none starts after a GOAWAY that ends the connection with an error, none above the
 *   last-stream-id of a graceful GOAWAY;
 * - a stream's buffered request body stays within its window: H2_STREAM_HWM plus a frame;
 *   a body whose content-length was given arrives whole or not at all;
 * - ASan and UBSan stay quiet (the fuzz build has them).
 *
 * Input layout (tests/fuzz/make_h2_corpus.py writes it):
 *   byte 0   flags: F_RAW the input carries its own connection preface (else the harness
 *            prepends the preface and an empty SETTINGS frame); F_DRAIN the connection starts
 *            draining halfway through (a reload); F_TRIM idle memory is trimmed between pieces;
 *            F_REPEAT the last |tail| bytes are fed |rep| times (bodies beyond the window,
 *            floods): the script's first two bytes are |tail| (little-endian; 0: all the
 *            client's bytes), its third |rep| / 8; F_APPEND the listener is fuzz-append
 *            (append_forward, forwarded_headers: append) instead of fuzz (sanitize_set).
 *   byte 1   n, the length of the script that follows (bytes 2 .. 2+n): the sizes of the
 *            pieces and the stub's choices, used in turn, cyclically; none: one piece.
 *   then     the client's bytes.
 * Without -DFUZZING, main() replays a corpus. */
#include "h2_harness.h"

#include <errno.h>

#include "http/message.h"
#include "http/reqhead.h"

#define F_RAW 0x01
#define F_DRAIN 0x02
#define F_TRIM 0x04
#define F_REPEAT 0x08
#define F_APPEND 0x10

#define MAX_FED (512 * 1024) /* bytes fed per input, repeats included */
#define FRAME_MAX 16384      /* SETTINGS_MAX_FRAME_SIZE: certgate keeps the default */
#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define PREFACE_LEN 24
static const uint8_t empty_settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};

/* --- the script: the pieces' sizes and the stub's choices --------------------------------- */

static const uint8_t *script;
static size_t script_len, script_pos;
static const uint8_t *body_src; /* response bodies are cut from the input */
static size_t body_src_len, body_pos;

static uint8_t next_byte(void)
{
    if (script_len == 0)
        return 0;
    return script[script_pos++ % script_len];
}

/* --- what was seen -------------------------------------------------------------------------- */

/* A frame scanner over one direction's bytes, as they come in pieces. */
struct scan {
    uint8_t hd[9];
    size_t hd_len;
    size_t left;    /* payload bytes of the current frame still to come */
    uint8_t pay[8]; /* the first payload bytes of a GOAWAY */
    size_t pay_len;
    bool magic_ok; /* client direction: the preface was seen */
    size_t magic_len;
    bool dead; /* client direction: no preface, nothing further parses */
};

static struct scan in_scan, out_scan;
static uint32_t opened, max_opened_id; /* HEADERS stream ids in the client's bytes */
static uint32_t started, last_started_id;
static bool goaway_seen, goaway_error;
static uint32_t goaway_last_id;

static void frame_begun(struct scan *sc, bool client)
{
    uint32_t len = (uint32_t)sc->hd[0] << 16 | (uint32_t)sc->hd[1] << 8 | sc->hd[2];
    uint8_t type = sc->hd[3];
    uint32_t id = ((uint32_t)sc->hd[5] << 24 | (uint32_t)sc->hd[6] << 16 |
                   (uint32_t)sc->hd[7] << 8 | sc->hd[8]) &
                  0x7fffffffu;
    sc->left = len;
    sc->pay_len = 0;
    if (client && type == NGHTTP2_HEADERS && (id & 1) != 0 && id > max_opened_id) {
        opened++;
        max_opened_id = id;
    }
}

static void frame_payload_done(struct scan *sc, bool client)
{
    if (client || sc->hd[3] != NGHTTP2_GOAWAY || sc->pay_len < 8)
        return;
    uint32_t last = ((uint32_t)sc->pay[0] << 24 | (uint32_t)sc->pay[1] << 16 |
                     (uint32_t)sc->pay[2] << 8 | sc->pay[3]) &
                    0x7fffffffu;
    uint32_t code = (uint32_t)sc->pay[4] << 24 | (uint32_t)sc->pay[5] << 16 |
                    (uint32_t)sc->pay[6] << 8 | sc->pay[7];
    if (!goaway_seen || last < goaway_last_id)
        goaway_last_id = last;
    goaway_seen = true;
    goaway_error |= code != NGHTTP2_NO_ERROR;
    if (getenv("FUZZ_DUMP") != NULL)
        fprintf(stderr, "GOAWAY last %u code %u\n", last, code);
}

static void scan_bytes(struct scan *sc, bool client, const uint8_t *p, size_t n)
{
    while (n > 0 && !sc->dead) {
        if (client && !sc->magic_ok) {
            if (p[0] != (uint8_t)PREFACE[sc->magic_len]) {
                sc->dead = true;
                return;
            }
            p++, n--;
            sc->magic_ok = ++sc->magic_len == PREFACE_LEN;
            continue;
        }
        if (sc->hd_len < 9) {
            sc->hd[sc->hd_len++] = *p++;
            n--;
            if (sc->hd_len == 9) {
                frame_begun(sc, client);
                if (sc->left == 0) {
                    frame_payload_done(sc, client);
                    sc->hd_len = 0;
                }
            }
            continue;
        }
        size_t k = MIN(n, sc->left);
        for (size_t i = 0; i < k && sc->pay_len < sizeof(sc->pay); i++)
            sc->pay[sc->pay_len++] = p[i];
        p += k, n -= k, sc->left -= k;
        if (sc->left == 0) {
            frame_payload_done(sc, client);
            sc->hd_len = 0;
        }
    }
}

/* --- the checks on what would go upstream --------------------------------------------------- */

static bool bytes_clean(const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] == '\0' || p[i] == '\r' || p[i] == '\n')
            return false;
    return true;
}

static void check_name(const char *n, size_t nl)
{
    CHECK(nl > 0 && bytes_clean(n, nl));
    for (size_t i = 0; i < nl; i++)
        CHECK(!(n[i] >= 'A' && n[i] <= 'Z') && n[i] != '_');
    CHECK(!h2_connection_specific(n, nl));
    CHECK(!http_name_is(n, nl, "host"));
}

static void check_request(struct h2_stream *s)
{
    const struct listener_config *lc = s->c->lc;
    if (getenv("FUZZ_DUMP") != NULL) { /* what the upstream would receive, for a failing input */
        for (size_t i = 0; i < s->req.num; i++) {
            const char *n, *v;
            size_t nl, vl;
            h2_hdrs_at(&s->req, i, &n, &nl, &v, &vl);
            fprintf(stderr, "stream %d: %.*s: %.*s\n", (int)s->id, (int)nl, n, (int)vl, v);
        }
    }
    static const char *const pseudo[] = {":method", ":scheme", ":authority", ":path"};
    CHECK(s->req.num >= 4);
    for (size_t i = 0; i < s->req.num; i++) {
        const char *n, *v;
        size_t nl, vl;
        h2_hdrs_at(&s->req, i, &n, &nl, &v, &vl);
        CHECK(bytes_clean(v, vl));
        if (i < 4) {
            CHECK(nl == strlen(pseudo[i]) && memcmp(n, pseudo[i], nl) == 0);
            CHECK(vl > 0);
            if (i == 0)
                CHECK(s->method == v && s->method_len == vl);
            if (i == 1)
                CHECK(vl == 5 && memcmp(v, "https", 5) == 0);
        }
    }
    bool append = lc->forward_client_cert == FCC_APPEND_FORWARD;
    unsigned n_cc = 0, n_proto = 0, n_rid = 0, n_xff = 0;
    for (size_t i = 4; i < s->req.num; i++) {
        const char *n, *v;
        size_t nl, vl;
        h2_hdrs_at(&s->req, i, &n, &nl, &v, &vl);
        CHECK(n[0] != ':');
        check_name(n, nl);
        CHECK(!reqhead_is_stripped(lc, n, nl));
        if (http_name_is(n, nl, "x-forwarded-client-cert")) {
            /* append_forward: the client's elements, then ours, in one header. */
            n_cc++;
            size_t ol = strlen(H2H_CC_VALUE);
            CHECK(append ? vl >= ol : vl == ol);
            CHECK(memcmp(v + vl - ol, H2H_CC_VALUE, ol) == 0);
            continue;
        }
        CHECK(!reqhead_is_cc_family(n, nl));
        if (http_name_is(n, nl, "x-forwarded-proto")) {
            n_proto++;
            CHECK(vl == 5 && memcmp(v, "https", 5) == 0);
            continue;
        }
        if (http_name_is(n, nl, "x-forwarded-for")) {
            /* Ours: the client's address, after the client's own list under append. */
            n_xff++;
            size_t al = strlen(H2H_CLIENT);
            CHECK(append ? vl >= al : vl == al);
            CHECK(memcmp(v + vl - al, H2H_CLIENT, al) == 0);
            continue;
        }
        n_rid += http_name_is(n, nl, "x-request-id");
        CHECK(reqhead_classify(lc, n, nl) == REQHEAD_FORWARD);
    }
    CHECK(n_cc == 1 && n_proto == 1 && n_rid == 1 && n_xff == 1);
}

/* Request trailers (kept for an h2c upstream) follow the header rules: no client copy of a
 * client-certificate header or of strip_headers there either (SECURITY 8). */
static void check_trailers(struct h2_stream *s)
{
    for (size_t i = 0; i < s->req_trailers.num; i++) {
        const char *n, *v;
        size_t nl, vl;
        h2_hdrs_at(&s->req_trailers, i, &n, &nl, &v, &vl);
        CHECK(bytes_clean(v, vl));
        CHECK(n[0] != ':');
        check_name(n, nl);
        CHECK(!reqhead_is_cc_family(n, nl));
        CHECK(!reqhead_is_stripped(s->c->lc, n, nl));
        CHECK(reqhead_classify(s->c->lc, n, nl) == REQHEAD_FORWARD);
    }
}

/* --- the stub backend ----------------------------------------------------------------------- */

enum stub_mode {
    STUB_ANSWER, /* answers at once, whatever the request body does */
    STUB_FAIL,   /* fails (502, 503, 504), maybe after the response head */
    STUB_ECHO,   /* reads the request body, answers once it ended */
    STUB_SILENT, /* reads nothing, answers nothing */
};

struct stub {
    struct h2_stream *s;
    struct stub *next, *prev;
    enum stub_mode mode;
    unsigned step;
    uint8_t choice;
    bool late_end;  /* the end comes with the event after the body's last bytes */
    bool end_next;  /* the body is out: the end comes with the next event */
    uint64_t taken; /* request body bytes taken */
    size_t body_left;
};

static struct stub *stubs;

static void stub_unlink(struct stub *st)
{
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        stubs = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    st->s->be_data = NULL;
    free(st);
}

static void check_body_bound(struct h2_stream *s)
{
    CHECK(buf_used(&s->req_body) <= H2_STREAM_HWM + FRAME_MAX);
}

static int stub_start(struct h2_stream *s)
{
    CHECK(s->be_data == NULL);
    CHECK(s->id > 0 && (s->id & 1) == 1);
    CHECK(s->id > (int32_t)last_started_id);
    CHECK((uint32_t)s->id <= max_opened_id);
    CHECK(!goaway_error);
    CHECK(!goaway_seen || (uint32_t)s->id <= goaway_last_id);
    last_started_id = (uint32_t)s->id;
    started++;
    CHECK(started <= opened);
    check_request(s);
    check_body_bound(s);
    uint8_t b = next_byte();
    if ((b & 0x70) == 0x70)
        return -ECONNREFUSED; /* the client side answers 503 */
    struct stub *st = xcalloc(1, sizeof(*st));
    st->s = s;
    st->mode = (enum stub_mode)(b & 3);
    st->choice = b;
    /* Up to ~180 KB: past the client's window and then the stream's high-water mark. */
    st->body_left = (size_t)(b >> 2 & 3) * 60000 + next_byte();
    st->late_end = (next_byte() & 1) != 0;
    st->next = stubs;
    if (stubs != NULL)
        stubs->prev = st;
    stubs = st;
    s->be_data = st;
    return 0;
}

static void stub_take(struct stub *st)
{
    struct h2_stream *s = st->s;
    size_t n = buf_used(&s->req_body);
    if (n == 0)
        return;
    buf_consume(&s->req_body, n);
    st->taken += n;
    h2_stream_req_taken(s, n);
}

static void stub_req_more(struct h2_stream *s)
{
    struct stub *st = s->be_data;
    CHECK(st != NULL && st->s == s);
    check_body_bound(s);
    if (s->req_end) {
        check_trailers(s);
        /* nghttp2 holds DATA against content-length: a body ends whole or not at all. */
        if (s->req_content_length >= 0 && st->mode == STUB_ECHO)
            CHECK(st->taken + buf_used(&s->req_body) == (uint64_t)s->req_content_length);
    }
    if (st->mode == STUB_ECHO)
        stub_take(st);
}

static void stub_resp_room(struct h2_stream *s)
{
    struct stub *st = s->be_data;
    CHECK(st != NULL && st->s == s && !h2_stream_resp_full(s));
}

static void stub_abort(struct h2_stream *s)
{
    struct stub *st = s->be_data;
    CHECK(st != NULL && st->s == s);
    stub_unlink(st);
}

static const struct h2_backend stub_backend = {
    .start = stub_start,
    .req_more = stub_req_more,
    .resp_room = stub_resp_room,
    .abort = stub_abort,
};

/* The response head: some names in uppercase and a connection-specific one, which the client
 * side lowercases and drops. */
static void stub_head(struct stub *st)
{
    static const int statuses[] = {200, 204, 404, 500};
    char v[16];
    size_t vl = MIN(sizeof(v), body_src_len);
    memcpy(v, body_src, vl);
    nghttp2_nv nv[] = {
        {(uint8_t *)"Content-Type", (uint8_t *)"text/plain", 12, 10, 0},
        {(uint8_t *)"connection", (uint8_t *)"close", 10, 5, 0},
        {(uint8_t *)"x-up", (uint8_t *)v, 4, vl, 0},
    };
    h2_stream_response_head(st->s, statuses[st->choice >> 4 & 3], nv, ARRAY_SIZE(nv));
}

/* Appends up to |max| body bytes (cut from the input), not past the stream's high-water mark. */
static void stub_body(struct stub *st, size_t max)
{
    struct h2_stream *s = st->s;
    while (max > 0 && st->body_left > 0 && !h2_stream_resp_full(s) && body_src_len > 0) {
        body_pos %= body_src_len;
        size_t k = MIN(MIN(max, st->body_left), body_src_len - body_pos);
        h2_stream_response_data(s, body_src + body_pos, k);
        body_pos += k;
        st->body_left -= k;
        max -= k;
    }
    if (body_src_len == 0)
        st->body_left = 0;
}

/* Ends the response (with trailers when the choice says so); the stub is done. */
static void stub_end(struct stub *st)
{
    static const nghttp2_nv trailers[] = {
        {(uint8_t *)"grpc-status", (uint8_t *)"0", 11, 1, 0},
        {(uint8_t *)"Grpc-Message", (uint8_t *)"ok", 12, 2, 0},
        {(uint8_t *)"transfer-encoding", (uint8_t *)"chunked", 17, 7, 0},
    };
    bool with = (st->choice & 0x80) != 0;
    h2_stream_response_end(st->s, with ? trailers : NULL, with ? ARRAY_SIZE(trailers) : 0);
    stub_unlink(st);
}

/* Ends the response once the body is out, in the same event or (when the choice says so)
 * the next one, after the client side may have deferred the stream for want of data. */
static void stub_maybe_end(struct stub *st)
{
    if (st->body_left > 0)
        return;
    if (st->late_end && !st->end_next) {
        st->end_next = true;
        return;
    }
    stub_end(st);
}

/* One upstream event for |st|: the next step of its mode. Returns whether it touched the
 * stream. */
static bool stub_step(struct stub *st)
{
    struct h2_stream *s = st->s;
    check_body_bound(s);
    switch (st->mode) {
    case STUB_ANSWER:
        if (st->step++ == 0)
            stub_head(st);
        stub_body(st, 4096 << (st->choice >> 6));
        stub_maybe_end(st);
        return true;
    case STUB_FAIL: {
        static const int fail[] = {502, 503, 504, 502};
        if ((st->choice & 0x40) != 0 && st->step == 0) {
            st->step++;
            stub_head(st);
            stub_body(st, 100);
            return true;
        }
        h2_stream_failed(s, fail[st->choice >> 4 & 3]);
        stub_unlink(st);
        return true;
    }
    case STUB_ECHO:
        stub_take(st);
        if (!s->req_end)
            return false;
        if (st->step++ == 0)
            stub_head(st);
        stub_body(st, 8192);
        stub_maybe_end(st);
        return true;
    case STUB_SILENT:
        return false;
    }
    return false;
}

/* --- driving the connection ------------------------------------------------------------------ */

/* The connection's output, as conn_event_end's h2_pump takes it, scanned and discarded.
 * Returns false once the session is over. */
static bool pump(struct conn *c)
{
    /* Connections an upstream event touched: h2_flush_touched without the socket I/O. */
    while (h2h_w.h2_touched != NULL) {
        struct conn *t = h2h_w.h2_touched;
        h2h_w.h2_touched = t->h2_touched_next;
        t->h2_touched = false;
        t->h2_touched_next = NULL;
    }
    for (int i = 0; i < 64; i++) {
        bool more = h2_server_output(c);
        scan_bytes(&out_scan, false, (const uint8_t *)buf_data(&c->cout), buf_used(&c->cout));
        bool any = buf_used(&c->cout) > 0;
        buf_free(&c->cout);
        if (!more)
            return false;
        if (!any)
            return true;
    }
    return true;
}

/* One upstream event: each stub takes a step when the script says so. */
static void upstream_event(void)
{
    uint8_t b = next_byte();
    unsigned i = 0;
    for (struct stub *st = stubs, *next; st != NULL; st = next, i++) {
        next = st->next;
        struct h2_stream *s = st->s; /* stub_step may free st */
        if ((b >> (i % 8) & 1) == 0 && stub_step(st))
            h2_stream_touch(s);
    }
}

static void check_all_bounds(void)
{
    for (struct stub *st = stubs; st != NULL; st = st->next)
        check_body_bound(st->s);
}

/* Feeds |n| bytes to the connection; returns false once the session is over. */
static bool feed(struct conn *c, const uint8_t *p, size_t n, bool output)
{
    scan_bytes(&in_scan, true, p, n);
    buf_append(&c->cin, p, n);
    h2_server_input(c);
    check_all_bounds();
    if (!output)
        return true;
    upstream_event();
    return pump(c);
}

static void reset_state(const uint8_t *data, size_t size)
{
    script = NULL;
    script_len = script_pos = 0;
    body_src = data;
    body_src_len = size;
    body_pos = 0;
    memset(&in_scan, 0, sizeof(in_scan));
    memset(&out_scan, 0, sizeof(out_scan));
    opened = max_opened_id = started = last_started_id = 0;
    goaway_seen = goaway_error = false;
    goaway_last_id = 0;
    stubs = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2 || size > 1 << 16)
        return 0;
    h2h_init(&stub_backend);
    reset_state(data, size);
    uint8_t flags = data[0];
    size_t n = MIN((size_t)data[1], size - 2);
    script = data + 2;
    script_len = n;
    const uint8_t *in = data + 2 + n;
    size_t in_len = size - 2 - n;

    /* F_REPEAT: the last |tail| bytes of the input go |rep| times, within MAX_FED. */
    size_t rep = 1, tail = 0;
    if ((flags & F_REPEAT) != 0 && in_len > 0) {
        size_t t = next_byte();
        t |= (size_t)next_byte() << 8;
        tail = t == 0 ? in_len : MIN(in_len, t);
        rep = 1 + (size_t)next_byte() * 8;
        rep = MIN(rep, MAX_FED / tail);
    }
    size_t head_len = in_len - tail;

    struct conn *c = h2h_conn_new((flags & F_APPEND) != 0 ? 1 : 0);
    bool alive = pump(c);
    if ((flags & F_RAW) == 0) {
        alive = alive && feed(c, (const uint8_t *)PREFACE, PREFACE_LEN, false);
        alive = alive && feed(c, empty_settings, sizeof(empty_settings), true);
    }
    /* The client's bytes in pieces: the script says how big, and whether an upstream event
     * and the output follow each piece (else several pieces are parsed in one go). */
    size_t total = head_len + tail * rep, fed = 0;
    bool drained = false;
    /* A connection whose session wants no more input is not read (conn.c's can_read_client). */
    while (alive && fed < total && h2_server_want_read(c)) {
        uint8_t b = next_byte();
        size_t want = script_len == 0 ? total
                      : (b & 0x80)    ? (size_t)(b & 0x3f) * 331 + 1
                                      : (size_t)(b & 0x3f) + 1;
        want = MIN(want, total - fed);
        /* The piece comes from the head, or from the repeated tail. */
        const uint8_t *p;
        size_t k;
        if (fed < head_len) {
            p = in + fed;
            k = MIN(want, head_len - fed);
        } else {
            size_t off = (fed - head_len) % tail;
            p = in + head_len + off;
            k = MIN(want, tail - off);
        }
        fed += k;
        alive = feed(c, p, k, (b & 0x40) == 0 || fed == total);
        if ((flags & F_DRAIN) != 0 && !drained && fed * 2 >= total) {
            drained = true;
            c->draining = true;
            h2_server_drain(c);
            alive = alive && pump(c);
        }
        if ((flags & F_TRIM) != 0)
            h2_server_trim(c);
    }
    /* The upstream side goes on a while after the client stopped sending. */
    for (int i = 0; alive && i < 16 && stubs != NULL; i++) {
        upstream_event();
        alive = pump(c);
    }
    CHECK(started <= opened);
    if (getenv("FUZZ_DUMP") != NULL)
        fprintf(stderr, "opened %u, started %u, goaway %d (error %d, last %u), alive %d\n", opened,
                started, goaway_seen, goaway_error, goaway_last_id, alive);
    h2h_conn_free(c);
    CHECK(stubs == NULL); /* every stream still with the stub was aborted */
    return 0;
}
