/* ca_pem.c: a line-oriented PEM scanner for CA bundles. It exists instead of PEM_read_bio so that
 * every problem can name its line, and so that exactly the lenient forms of CONTRACT section 4
 * load while anything that is not a complete block fails. */
#include <openssl/is_boringssl.h>

#include "ca_pem.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/base64.h>
#include <openssl/err.h>

#include "ca_crl.h"
#include "ca_mem.h"

#define BEGIN_MARK "-----BEGIN "
#define END_MARK "-----END "
#define DASHES "-----"

/* What a block decodes to. */
enum pem_type {
    PEM_CERT, /* CERTIFICATE: a trust anchor */
    PEM_CRL,  /* X509 CRL */
};

struct pem_scan {
    const char *name;
    char *err;
    size_t err_len;
    STACK_OF(X509) * certs;
    STACK_OF(X509_CRL) * crls;
    SHA256_CTX *hash;
    size_t num_blocks;
    bool in_block;
    enum pem_type type;
    size_t begin_line;
    char *b64;
    size_t b64_len;
    size_t b64_cap;
};

__attribute__((format(printf, 3, 4))) static int pem_fail(struct pem_scan *s, size_t line,
                                                          const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (s->err_len > 0)
        snprintf(s->err, s->err_len, "%s:%zu: %s", s->name, line, what);
    return -EINVAL;
}

/* pem_label copies a label for a message, replacing anything unprintable and cutting it short. */
static void pem_label(char *out, size_t out_len, const char *p, size_t n)
{
    size_t i = 0;
    for (; i < n && i + 1 < out_len; i++)
        out[i] = (p[i] >= 0x20 && p[i] < 0x7f && p[i] != '"') ? p[i] : '?';
    out[i] = '\0';
}

static bool pem_starts(const char *p, size_t n, const char *prefix)
{
    size_t k = strlen(prefix);
    return n >= k && memcmp(p, prefix, k) == 0;
}

static const char *pem_find(const char *p, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= n; i++)
        if (p[i] == needle[0] && memcmp(p + i, needle, k) == 0)
            return p + i;
    return NULL;
}

static bool pem_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

static bool pem_b64_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' ||
           c == '/' || c == '=';
}

/* pem_boundary parses "-----BEGIN LABEL-----" or "-----END LABEL-----" at the start of |p|:
 * returns false when the closing dashes are missing, else sets the label and the rest. */
static bool pem_boundary(const char *p, size_t n, const char *mark, const char **label,
                         size_t *label_len, const char **rest, size_t *rest_len)
{
    size_t k = strlen(mark);
    const char *close = pem_find(p + k, n - k, DASHES);
    if (close == NULL)
        return false;
    *label = p + k;
    *label_len = (size_t)(close - (p + k));
    *rest = close + strlen(DASHES);
    *rest_len = n - (size_t)(*rest - p);
    return true;
}

static int pem_finish(struct pem_scan *s)
{
    const char *what = s->type == PEM_CERT ? "CERTIFICATE" : "X509 CRL";
    size_t max = 0;
    if (s->b64_len == 0)
        return pem_fail(s, s->begin_line, "empty %s block", what);
    if (!EVP_DecodedLength(&max, s->b64_len) || s->b64_len % 4 != 0)
        return pem_fail(s, s->begin_line, "%s block: base64 length is not a multiple of 4", what);
    uint8_t *der = ca_mem_realloc(NULL, max);
    size_t der_len = 0;
    int rc = 0;
    if (!EVP_DecodeBase64(der, &der_len, max, (const uint8_t *)s->b64, s->b64_len)) {
        rc = pem_fail(s, s->begin_line, "%s block: invalid base64", what);
        goto out;
    }
    const uint8_t *p = der;
    if (s->type == PEM_CERT) {
        X509 *x = d2i_X509(NULL, &p, (long)der_len);
        if (x == NULL || p != der + der_len) {
            X509_free(x);
            rc = pem_fail(s, s->begin_line, "CERTIFICATE block is not a valid DER certificate");
            goto out;
        }
        if (!sk_X509_push(s->certs, x))
            abort();
    } else {
        X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)der_len);
        if (crl == NULL || p != der + der_len) {
            X509_CRL_free(crl);
            rc = pem_fail(s, s->begin_line, "X509 CRL block is not a valid DER CRL");
            goto out;
        }
        /* A CRL that is not complete evidence fails its bundle (SECURITY rule 27). */
        char why[192];
        if (ca_crl_check(crl, why, sizeof(why)) != 0) {
            X509_CRL_free(crl);
            rc = pem_fail(s, s->begin_line, "X509 CRL %s", why);
            goto out;
        }
        if (!sk_X509_CRL_push(s->crls, crl))
            abort();
    }
    if (s->hash != NULL) {
        uint8_t head[5] = {s->type == PEM_CERT ? 'C' : 'R', (uint8_t)(der_len >> 24),
                           (uint8_t)(der_len >> 16), (uint8_t)(der_len >> 8), (uint8_t)der_len};
        SHA256_Update(s->hash, head, sizeof(head));
        SHA256_Update(s->hash, der, der_len);
    }
    s->num_blocks++;
out:
    ERR_clear_error();
    free(der);
    return rc;
}

static int pem_begin(struct pem_scan *s, const char *p, size_t n, size_t line)
{
    const char *label, *rest;
    size_t label_len, rest_len;
    char shown[48];
    if (!pem_boundary(p, n, BEGIN_MARK, &label, &label_len, &rest, &rest_len))
        return pem_fail(s, line, "malformed BEGIN line");
    pem_label(shown, sizeof(shown), label, label_len);
    if (label_len == strlen("CERTIFICATE") && memcmp(label, "CERTIFICATE", label_len) == 0)
        s->type = PEM_CERT;
    else if (label_len == strlen("X509 CRL") && memcmp(label, "X509 CRL", label_len) == 0)
        s->type = PEM_CRL;
    else
        return pem_fail(s, line, "unsupported block type \"%s\" (only CERTIFICATE and X509 CRL)",
                        shown);
    for (size_t i = 0; i < rest_len; i++)
        if (!pem_space(rest[i]))
            return pem_fail(s, line, "text after the BEGIN line of a %s block", shown);
    s->in_block = true;
    s->begin_line = line;
    s->b64_len = 0;
    return 0;
}

/* pem_line handles one line without its line end; leading and trailing blanks are trimmed. */
static int pem_line(struct pem_scan *s, const char *p, size_t n, size_t line)
{
    while (n > 0 && pem_space(p[n - 1]))
        n--;
    while (n > 0 && pem_space(p[0])) {
        p++;
        n--;
    }
    if (memchr(p, '\0', n) != NULL)
        return pem_fail(s, line, "NUL byte");
    for (;;) {
        if (n == 0)
            return 0;
        if (!s->in_block) {
            if (pem_starts(p, n, BEGIN_MARK))
                return pem_begin(s, p, n, line);
            if (pem_starts(p, n, END_MARK))
                return pem_fail(s, line, "END line without a BEGIN line");
            if (pem_find(p, n, DASHES) != NULL)
                return pem_fail(s, line, "malformed PEM boundary line");
            return 0; /* explanatory text between blocks, as OpenSSL and Go accept it */
        }
        const char *what = s->type == PEM_CERT ? "CERTIFICATE" : "X509 CRL";
        if (pem_starts(p, n, BEGIN_MARK))
            return pem_fail(s, s->begin_line, "%s block has no END line (next BEGIN at line %zu)",
                            what, line);
        if (!pem_starts(p, n, END_MARK)) {
            for (size_t i = 0; i < n; i++)
                if (!pem_b64_char(p[i]))
                    return pem_fail(s, line, "invalid character in %s block", what);
            if (s->b64_len + n > s->b64_cap) {
                s->b64_cap = (s->b64_len + n) * 2;
                s->b64 = ca_mem_realloc(s->b64, s->b64_cap);
            }
            memcpy(s->b64 + s->b64_len, p, n);
            s->b64_len += n;
            return 0;
        }
        const char *label, *rest;
        size_t label_len, rest_len;
        if (!pem_boundary(p, n, END_MARK, &label, &label_len, &rest, &rest_len))
            return pem_fail(s, line, "malformed END line");
        if (label_len != strlen(what) || memcmp(label, what, label_len) != 0) {
            char shown[48];
            pem_label(shown, sizeof(shown), label, label_len);
            return pem_fail(s, line, "END %s does not match BEGIN %s at line %zu", shown, what,
                            s->begin_line);
        }
        s->in_block = false;
        int rc = pem_finish(s);
        if (rc != 0)
            return rc;
        /* The END line may carry the next BEGIN (bundles concatenated without a newline). */
        p = rest;
        n = rest_len;
        while (n > 0 && pem_space(p[0])) {
            p++;
            n--;
        }
        if (n > 0 && !pem_starts(p, n, BEGIN_MARK))
            return pem_fail(s, line, "text after the END line of a %s block", what);
    }
}

size_t ca_pem_crl_line(const uint8_t *data, size_t len, size_t n)
{
    static const char mark[] = "-----BEGIN X509 CRL-----";
    size_t line = 1;
    for (size_t i = 0; i < len; i++) {
        if (data[i] == '\n') {
            line++;
        } else if (data[i] == '-' && len - i >= sizeof(mark) - 1 &&
                   memcmp(data + i, mark, sizeof(mark) - 1) == 0) {
            if (n-- == 0)
                return line;
            i += sizeof(mark) - 2;
        }
    }
    return 0;
}

int ca_pem_parse(STACK_OF(X509) * certs, STACK_OF(X509_CRL) * crls, SHA256_CTX *hash,
                 const char *name, const uint8_t *data, size_t len, char *err, size_t err_len)
{
    struct pem_scan s = {
        .name = name, .err = err, .err_len = err_len, .certs = certs, .crls = crls, .hash = hash};
    const char *p = (const char *)data;
    size_t line = 0;
    int rc = 0;
    while (len > 0) {
        const char *nl = memchr(p, '\n', len);
        size_t n = nl != NULL ? (size_t)(nl - p) : len;
        line++;
        rc = pem_line(&s, p, n, line);
        if (rc != 0)
            goto out;
        if (nl == NULL)
            break;
        p += n + 1;
        len -= n + 1;
    }
    if (s.in_block) {
        rc = pem_fail(&s, s.begin_line, "%s block has no END line",
                      s.type == PEM_CERT ? "CERTIFICATE" : "X509 CRL");
        goto out;
    }
    if (s.num_blocks == 0) {
        rc = -EINVAL;
        if (err_len > 0)
            snprintf(err, err_len, "%s: no CERTIFICATE or X509 CRL block", name);
    }
out:
    free(s.b64);
    return rc;
}
