/* tenancy.h: which tenant a TLS SNI or an HTTP Host names, through the `tenancy.sni` pattern
 * (CONTRACT 6). Names are compared case-insensitively with one trailing dot removed; a Host
 * loses its port first. Pure functions: no TLS, no I/O. */
#ifndef CERTGATE_TENANCY_H
#define CERTGATE_TENANCY_H

#include <stdbool.h>
#include <stddef.h>

#define TENANCY_MAX_NAME 255
#define TENANCY_MAX_ID 63

/* tenancy_normalize writes |name| (|len| bytes) lowercased, without one trailing dot, to |out|
 * (TENANCY_MAX_NAME + 1 bytes). With |is_host|, a ":port" (or "[v6]:port") is removed first.
 * Returns false for a name that is empty, too long or holds bytes no host name has. */
bool tenancy_normalize(char *out, const char *name, size_t len, bool is_host);

/* tenancy_is_ip_literal tells whether a normalized name is an IPv4 or IPv6 literal. */
bool tenancy_is_ip_literal(const char *name);

/* tenancy_match extracts the tenant id that the normalized |name| gives |pattern| (which holds
 * one "{tenant}"; compared lowercased) into |out_id| (TENANCY_MAX_ID + 1 bytes). The id must
 * be a DNS label. Returns false when the name does not fit the pattern. */
bool tenancy_match(const char *pattern, const char *name, char *out_id);

#endif
