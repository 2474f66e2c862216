/* tls_anchor.h: why a CA-store certificate cannot issue client certificates, for the refusal
 * reasons of tls_verify.c and the warnings of `certgate check`. Read-only use of ca-store/. */
#ifndef CERTGATE_TLS_ANCHOR_H
#define CERTGATE_TLS_ANCHOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/x509.h>

/* tls_anchor_problem tells whether |x| cannot issue certificates (no basicConstraints,
 * CA:FALSE, a keyUsage without keyCertSign, a critical extension BoringSSL does not support, an
 * extension that does not parse, and with |with_key| a key type it cannot use) and writes why
 * to |out| ("its keyUsage lacks keyCertSign"). Such a certificate can still be an anchor for
 * itself only. */
bool tls_anchor_problem(X509 *x, bool with_key, char *out, size_t len);

/* tls_anchor_dns_name_ok tells whether the |n| bytes at |s| are a DNS name in preferred name
 * syntax: LDH labels of 1-63 bytes that neither start nor end with '-', 253 bytes at most, no
 * trailing dot, no wildcard. A name constraint (|constraint|) may start with one '.'. */
bool tls_anchor_dns_name_ok(const uint8_t *s, size_t n, bool constraint);

/* tls_anchor_check_store reads |dir|/index.yml and every bundle it lists, and prints one
 * "warning: FILE:LINE: ..." line to |out| for each CERTIFICATE block (LINE: its BEGIN line)
 * that tls_anchor_problem flags. Files that do not load are skipped (the store reports them).
 * Returns the number of warnings. */
size_t tls_anchor_check_store(const char *dir, FILE *out);

#endif
