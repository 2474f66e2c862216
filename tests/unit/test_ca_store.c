/* test_ca_store.c: the CA store against a PKI generated at test time by the openssl CLI: index
 * parsing and its errors, lenient and broken PEM, tenants and their fallback to the previous
 * snapshot, partial-chain verification, CRLs, trust hashes, and a 10,000-tenant load. */
#include <openssl/is_boringssl.h>

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <openssl/evp.h>
#include <openssl/obj.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca_index.h"
#include "ca_pem.h"
#include "ca_store.h"

/* Root A issues Inter A, which issues leaf1 and leaf2 (revoked in inter.crl and in the stale
 * inter-stale.crl); Root B issues leafb; "fake" has Inter A's name but another key. Root A also
 * issues "NoSign CA" (keyUsage without cRLSign), which issues leafn and signs nosign.crl. Inter A
 * signs crl_<section>.crl for each crl_ section of pki.cnf: CRLs that are not complete evidence,
 * and two that are (a non-critical unknown extension, an IDP with only a name). */
static const char pki_script[] =
    "set -e\n"
    "cd \"$1\"\n"
    "export CA_DB=.\n"
    "cat > pki.cnf <<'CNF'\n"
    "[ req ]\n"
    "distinguished_name = dn\n"
    "[ dn ]\n"
    "[ v3_ca ]\n"
    "basicConstraints = critical,CA:TRUE\n"
    "keyUsage = critical,keyCertSign,cRLSign\n"
    "subjectKeyIdentifier = hash\n"
    "[ v3_nocrlsign ]\n"
    "basicConstraints = critical,CA:TRUE\n"
    "keyUsage = critical,keyCertSign\n"
    "[ crl_crit ]\n"
    "1.2.3.4.5 = critical,ASN1:NULL\n"
    "[ crl_noncrit ]\n"
    "1.2.3.4.5 = ASN1:NULL\n"
    "[ crl_delta ]\n"
    "2.5.29.27 = critical,ASN1:INTEGER:1\n"
    "[ crl_idp_user ]\n"
    "issuingDistributionPoint = critical,@idp_user\n"
    "[ idp_user ]\n"
    "onlyuser = TRUE\n"
    "[ crl_idp_ca ]\n"
    "issuingDistributionPoint = critical,@idp_ca\n"
    "[ idp_ca ]\n"
    "onlyCA = TRUE\n"
    "[ crl_idp_attr ]\n"
    "issuingDistributionPoint = critical,@idp_attr\n"
    "[ idp_attr ]\n"
    "onlyAA = TRUE\n"
    "[ crl_idp_reasons ]\n"
    "issuingDistributionPoint = critical,@idp_reasons\n"
    "[ idp_reasons ]\n"
    "onlysomereasons = keyCompromise\n"
    "[ crl_idp_indirect ]\n"
    "issuingDistributionPoint = critical,@idp_indirect\n"
    "[ idp_indirect ]\n"
    "indirectCRL = TRUE\n"
    "[ crl_idp_name ]\n"
    "issuingDistributionPoint = critical,@idp_name\n"
    "[ idp_name ]\n"
    "fullname = URI:http://crl.example/inter.crl\n"
    "[ v3_leaf ]\n"
    "basicConstraints = CA:FALSE\n"
    "keyUsage = critical,digitalSignature\n"
    "extendedKeyUsage = clientAuth\n"
    "[ ca ]\n"
    "default_ca = ca_any\n"
    "[ ca_any ]\n"
    "database = $ENV::CA_DB/index.txt\n"
    "crlnumber = $ENV::CA_DB/crlnumber\n"
    "new_certs_dir = $ENV::CA_DB\n"
    "default_md = sha256\n"
    "default_crl_days = 30\n"
    "policy = policy_any\n"
    "[ policy_any ]\n"
    "commonName = supplied\n"
    "CNF\n"
    "key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out \"$1.key\"; }\n"
    "root() { key \"$1\"; openssl req -config pki.cnf -x509 -new -key \"$1.key\" \\\n"
    "    -subj \"/CN=$2\" -days 3650 -extensions v3_ca -out \"$1.pem\"; }\n"
    "issue() {\n"
    "    key \"$1\"\n"
    "    openssl req -config pki.cnf -new -key \"$1.key\" -subj \"/CN=$2\" -out \"$1.csr\"\n"
    "    openssl x509 -req -in \"$1.csr\" -CA \"$3.pem\" -CAkey \"$3.key\" -set_serial \"$4\" \\\n"
    "        -days 365 -extfile pki.cnf -extensions \"$5\" -out \"$1.pem\"\n"
    "}\n"
    "crl() {\n"
    "    ca=$1 out=$2; shift 2\n"
    "    CA_DB=\"db_$ca\" openssl ca -config pki.cnf -gencrl -keyfile \"$ca.key\" \\\n"
    "        -cert \"$ca.pem\" -out \"$out\" \"$@\"\n"
    "}\n"
    "root root 'Root A'\n"
    "root root2 'Root B'\n"
    "issue inter 'Inter A' root 0x2001 v3_ca\n"
    "issue leaf1 'leaf one' inter 0x1001 v3_leaf\n"
    "issue leaf2 'leaf two' inter 0x1002 v3_leaf\n"
    "issue leafb 'leaf b' root2 0x3001 v3_leaf\n"
    "mkdir db_inter; : > db_inter/index.txt; echo 01 > db_inter/crlnumber\n"
    "CA_DB=db_inter openssl ca -config pki.cnf -keyfile inter.key -cert inter.pem \\\n"
    "    -revoke leaf2.pem\n"
    "crl inter inter.crl\n"
    "crl inter inter-stale.crl -crl_lastupdate 20200101000000Z "
    "-crl_nextupdate 20200201000000Z\n"
    "root fake 'Inter A'\n"
    "cp -r db_inter db_fake\n"
    "crl fake fake.crl\n"
    "for s in crit noncrit delta idp_user idp_ca idp_attr idp_reasons idp_indirect idp_name; do\n"
    "    crl inter crl_$s.crl -crlexts crl_$s\n"
    "done\n"
    "issue nosign 'NoSign CA' root 0x2002 v3_nocrlsign\n"
    "issue leafn 'leaf n' nosign 0x5001 v3_leaf\n"
    "mkdir db_nosign; : > db_nosign/index.txt; echo 01 > db_nosign/crlnumber\n"
    "CA_DB=db_nosign openssl ca -config pki.cnf -keyfile nosign.key -cert nosign.pem \\\n"
    "    -revoke leafn.pem\n"
    "crl nosign nosign.crl\n";

static char pki[64];

/* tsprintf is sprintf into a buffer the caller sized. */
__attribute__((format(printf, 2, 3))) static void tsprintf(char *dst, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsprintf(dst, fmt, ap);
    va_end(ap);
}

__attribute__((returns_nonnull)) static void *tmalloc(size_t n)
{
    void *p = malloc(n);
    if (p == NULL)
        abort();
    return p;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = tmalloc((size_t)n + 1);
    assert_non_null(s);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = '\0';
    fclose(f);
    return s;
}

/* pem returns the content of a PKI file, e.g. pem("root.pem"); callers free it. */
static char *pem(const char *name)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", pki, name);
    char *s = slurp(path);
    assert_non_null(s);
    return s;
}

static X509 *cert(const char *name)
{
    char *s = pem(name);
    BIO *bio = BIO_new_mem_buf(s, (long)strlen(s));
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    free(s);
    assert_non_null(x);
    return x;
}

static void mkdirs(const char *path)
{
    char tmp[1024];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(tmp, 0700);
            *p = '/';
        }
    }
    mkdir(tmp, 0700);
}

/* put writes |content| to |dir|/|rel|, creating directories. */
static void put(const char *dir, const char *rel, const char *content)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdirs(path);
    *slash = '/';
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(content, 1, strlen(content), f), strlen(content));
    fclose(f);
}

/* put_pki writes the concatenation of PKI files (NULL-terminated list) to |dir|/|rel|. */
static void put_pki(const char *dir, const char *rel, ...)
{
    size_t len = 0;
    char *all = calloc(1, 1);
    va_list ap;
    va_start(ap, rel);
    for (const char *name; (name = va_arg(ap, const char *)) != NULL;) {
        char *s = pem(name);
        all = realloc(all, len + strlen(s) + 1);
        memcpy(all + len, s, strlen(s) + 1);
        len += strlen(s);
        free(s);
    }
    va_end(ap);
    put(dir, rel, all);
    free(all);
}

static char *new_dir(void)
{
    char *d = strdup("/tmp/test_ca_store.XXXXXX");
    assert_non_null(mkdtemp(d));
    return d;
}

static void rm_dir(char *d)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
    assert_int_equal(system(cmd), 0);
    free(d);
}

static struct ca_store *load_ok(const char *dir, const struct ca_store *previous)
{
    struct ca_store *store = NULL;
    char err[512] = "";
    int rc = ca_store_load(&store, dir, previous, err, sizeof(err));
    if (rc != 0)
        fail_msg("load %s: %d %s", dir, rc, err);
    assert_non_null(store);
    return store;
}

static int load_err(const char *dir, char *err, size_t err_len)
{
    struct ca_store *store = NULL;
    int rc = ca_store_load(&store, dir, NULL, err, err_len);
    assert_null(store);
    return rc;
}

static const struct ca_tenant *tenant(const struct ca_store *store, const char *id)
{
    return ca_store_tenant(store, id, strlen(id));
}

/* verify builds a chain for |leaf| (plus |inter| as untrusted when non-NULL) against |trust|;
 * returns the verified chain or NULL. */
static STACK_OF(X509) * verify(X509_STORE *trust, X509 *leaf, X509 *inter)
{
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    if (inter != NULL)
        sk_X509_push(untrusted, inter);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    assert_true(X509_STORE_CTX_init(ctx, trust, leaf, untrusted));
    STACK_OF(X509) *chain = NULL;
    if (X509_verify_cert(ctx) == 1)
        chain = X509_STORE_CTX_get1_chain(ctx);
    X509_STORE_CTX_free(ctx);
    sk_X509_free(untrusted);
    return chain;
}

static bool verifies(X509_STORE *trust, const char *leaf_name, const char *inter_name)
{
    X509 *leaf = cert(leaf_name);
    X509 *inter = inter_name != NULL ? cert(inter_name) : NULL;
    STACK_OF(X509) *chain = verify(trust, leaf, inter);
    bool ok = chain != NULL;
    sk_X509_pop_free(chain, X509_free);
    X509_free(leaf);
    X509_free(inter);
    return ok;
}

/* has_error reports whether an error of tenant |id| contains |needle|. */
static bool has_error(const struct ca_store *store, const char *id, const char *needle)
{
    for (size_t i = 0; i < ca_store_num_errors(store); i++) {
        const char *tid = NULL;
        const char *msg = ca_store_error(store, i, &tid);
        if (strcmp(tid, id) == 0 && strstr(msg, needle) != NULL)
            return true;
    }
    return false;
}

static void test_empty_index(void **state)
{
    static const char *const forms[] = {"",          "# nothing yet\n",           "---\n",
                                        "common:\n", "common: []\ntenants: {}\n", "tenants:\n"};
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        char *d = new_dir();
        put(d, "index.yml", forms[i]);
        struct ca_store *store = load_ok(d, NULL);
        assert_int_equal(ca_store_num_tenants(store), 0);
        assert_int_equal(ca_store_num_errors(store), 0);
        assert_null(tenant(store, "x"));
        X509_STORE *trust = ca_store_trust(store, NULL);
        assert_non_null(trust);
        assert_false(verifies(trust, "leaf1.pem", "inter.pem"));
        ca_store_unref(store);
        rm_dir(d);
    }
}

static void test_index_errors(void **state)
{
    static const struct {
        const char *yaml;
        const char *want;
    } cases[] = {
        {"common: [a.pem]\nextra: 1\n", "index.yml:2:1: unknown key \"extra\""},
        {"common: [a.pem\n", "index.yml:2:1:"},
        {"common: &x [a.pem]\ntenants:\n  t: *x\n", "index.yml:3:6: aliases"},
        {"common:\n- ../x.pem\n", "index.yml:2:3: common: file name must be a relative"},
        {"common:\n- /etc/ssl/x.pem\n", "index.yml:2:3:"},
        {"common: a.pem\n", "index.yml:1:9: common must be a list"},
        {"- a\n", "index.yml:1:1: index.yml must be a mapping"},
        {"common: []\n---\ncommon: []\n", "index.yml:2:1: index.yml must hold a single"},
        {"common: []\ncommon: []\n", "index.yml:2:1: duplicate key"},
        {"tenants: [a]\n", "index.yml:1:10: tenants must be a mapping"},
        {"common:\n- [a]\n", "index.yml:2:3: common: expected a file name"},
        {"\tcommon: []\n", "index.yml:1:1:"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *d = new_dir();
        char err[512] = "";
        put(d, "index.yml", cases[i].yaml);
        assert_int_equal(load_err(d, err, sizeof(err)), -EINVAL);
        if (strstr(err, cases[i].want) == NULL)
            fail_msg("case %zu: got \"%s\", want \"%s\"", i, err, cases[i].want);
        assert_non_null(strstr(err, d));
        rm_dir(d);
    }
}

static void test_missing_index_and_common(void **state)
{
    char *d = new_dir();
    char err[512] = "";
    assert_int_equal(load_err(d, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "index.yml"));

    put(d, "index.yml", "common:\n- root.pem\n");
    assert_int_equal(load_err(d, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "common/root.pem"));

    put(d, "common/root.pem", "-----BEGIN CERTIFICATE-----\nAAAA\n");
    assert_int_equal(load_err(d, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "common/root.pem:1: CERTIFICATE block has no END line"));
    rm_dir(d);
}

static void test_common_only(void **state)
{
    char *d = new_dir();
    put(d, "index.yml", "common:\n- root.pem\n");
    put_pki(d, "common/root.pem", "root.pem", NULL);
    struct ca_store *store = load_ok(d, NULL);
    assert_int_equal(ca_store_num_tenants(store), 0);
    assert_true(verifies(ca_store_trust(store, NULL), "leaf1.pem", "inter.pem"));
    assert_false(verifies(ca_store_trust(store, NULL), "leaf1.pem", NULL));
    assert_false(verifies(ca_store_trust(store, NULL), "leafb.pem", NULL));
    ca_store_unref(store);
    rm_dir(d);
}

static void test_tenants(void **state)
{
    char *d = new_dir();
    put(d, "index.yml",
        "common:\n- root.pem\ntenants:\n  a:\n  - inter.pem\n  b:\n  - sub/dir/b.pem\n"
        "  c: []\n  d:\n");
    put_pki(d, "common/root.pem", "root.pem", NULL);
    put_pki(d, "tenants/a/inter.pem", "inter.pem", NULL);
    put_pki(d, "tenants/b/sub/dir/b.pem", "root2.pem", NULL);
    struct ca_store *store = load_ok(d, NULL);
    assert_int_equal(ca_store_num_tenants(store), 4);
    assert_int_equal(ca_store_num_errors(store), 0);
    const struct ca_tenant *a = tenant(store, "a"), *b = tenant(store, "b");
    assert_non_null(a);
    assert_non_null(b);
    assert_string_equal(ca_store_tenant_id(a), "a");
    assert_string_equal(ca_store_tenant_id(b), "b");
    assert_non_null(tenant(store, "c"));
    assert_non_null(tenant(store, "d"));
    assert_null(tenant(store, "e"));
    assert_true(verifies(ca_store_trust(store, b), "leafb.pem", NULL));
    assert_false(verifies(ca_store_trust(store, a), "leafb.pem", NULL));
    assert_false(verifies(ca_store_trust(store, NULL), "leafb.pem", NULL));
    /* common is part of every trust set */
    assert_true(verifies(ca_store_trust(store, b), "leaf1.pem", "inter.pem"));
    assert_true(verifies(ca_store_trust(store, tenant(store, "c")), "leaf1.pem", "inter.pem"));

    ca_store_ref(store);
    ca_store_unref(store);
    assert_non_null(tenant(store, "a"));
    ca_store_unref(store);
    ca_store_unref(NULL);
    rm_dir(d);
}

static void test_bad_tenant_id(void **state)
{
    char *d = new_dir();
    put(d, "index.yml",
        "tenants:\n  Bad_ID:\n  - x.pem\n  ok:\n  - x.pem\n  -x:\n  - x.pem\n"
        "  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: [x.pem]\n"
        "  a-b-1: [x.pem]\n  bad: {x: y}\n  ok2: [[x]]\n");
    put_pki(d, "tenants/ok/x.pem", "root.pem", NULL);
    put_pki(d, "tenants/a-b-1/x.pem", "root.pem", NULL);
    struct ca_store *store = load_ok(d, NULL);
    assert_int_equal(ca_store_num_tenants(store), 2);
    assert_non_null(tenant(store, "ok"));
    assert_non_null(tenant(store, "a-b-1"));
    assert_null(tenant(store, "Bad_ID"));
    assert_int_equal(ca_store_num_errors(store), 5);
    assert_true(has_error(store, "Bad_ID", "index.yml:2:3: invalid tenant id"));
    assert_true(has_error(store, "-x", "index.yml:6:3: invalid tenant id"));
    assert_true(has_error(store, "bad", "index.yml:10:8: tenant bad must be a list"));
    assert_true(has_error(store, "ok2", "index.yml:11:9: tenant ok2: expected a file name"));
    assert_null(ca_store_error(store, 5, NULL));
    ca_store_unref(store);
    rm_dir(d);
}

static void test_missing_file_and_duplicate(void **state)
{
    char *d = new_dir();
    put(d, "index.yml",
        "tenants:\n  a: [a.pem, missing.pem]\n  b: [b.pem]\n  b: [a.pem]\n  e: [empty.pem]\n"
        "  f: [sub]\n");
    mkdirs(d);
    put(d, "tenants/f/sub/x", "");
    put_pki(d, "tenants/a/a.pem", "root.pem", NULL);
    put_pki(d, "tenants/b/b.pem", "root2.pem", NULL);
    put(d, "tenants/e/empty.pem", "\n\n# just text\n");
    struct ca_store *store = load_ok(d, NULL);
    assert_int_equal(ca_store_num_tenants(store), 1);
    assert_null(tenant(store, "a"));
    assert_non_null(tenant(store, "b"));
    assert_true(verifies(ca_store_trust(store, tenant(store, "b")), "leafb.pem", NULL));
    assert_true(has_error(store, "a", "tenants/a/missing.pem: No such file or directory"));
    assert_true(has_error(store, "b", "index.yml:4:3: duplicate tenant id"));
    assert_true(has_error(store, "e", "tenants/e/empty.pem: no CERTIFICATE or X509 CRL block"));
    assert_true(has_error(store, "f", "tenants/f/sub: a directory, not a regular file"));
    ca_store_unref(store);
    rm_dir(d);
}

/* A FIFO, a socket or a device listed in index.yml is an error of its tenant, at once: opening a
 * FIFO for a blocking read would hang the thread that reloads (SECURITY rule 29). The alarm
 * turns a hang into a failure. */
static void test_special_files(void **state)
{
    char *d = new_dir();
    char path[1024];
    put(d, "index.yml",
        "common: [common.pem]\n"
        "tenants:\n  a: [a.pem]\n  p: [ok.pem, fifo.pem]\n  s: [sock.pem]\n  z: [zero.pem]\n");
    put_pki(d, "common/common.pem", "root2.pem", NULL);
    put_pki(d, "tenants/a/a.pem", "root.pem", NULL);
    put_pki(d, "tenants/p/ok.pem", "root.pem", NULL);
    snprintf(path, sizeof(path), "%s/tenants/p/fifo.pem", d);
    assert_int_equal(mkfifo(path, 0600), 0);
    snprintf(path, sizeof(path), "%s/tenants/s", d);
    mkdirs(path);
    snprintf(path, sizeof(path), "%s/tenants/s/sock.pem", d);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof(sa.sun_path));
    memcpy(sa.sun_path, path, strlen(path) + 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    snprintf(path, sizeof(path), "%s/tenants/z", d);
    mkdirs(path);
    snprintf(path, sizeof(path), "%s/tenants/z/zero.pem", d);
    assert_int_equal(symlink("/dev/zero", path), 0);

    alarm(20);
    struct ca_store *store = load_ok(d, NULL);
    alarm(0);
    assert_int_equal(ca_store_num_tenants(store), 1);
    assert_non_null(tenant(store, "a"));
    assert_true(has_error(store, "p", "tenants/p/fifo.pem: a FIFO, not a regular file"));
    assert_true(has_error(store, "s", "tenants/s/sock.pem: a socket, not a regular file"));
    assert_true(
        has_error(store, "z", "tenants/z/zero.pem: a character device, not a regular file"));

    /* common itself as a FIFO fails the whole load, also at once */
    snprintf(path, sizeof(path), "%s/common/common.pem", d);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(mkfifo(path, 0600), 0);
    char err[512] = "";
    alarm(20);
    assert_int_equal(load_err(d, err, sizeof(err)), -EISDIR);
    alarm(0);
    assert_non_null(strstr(err, "common/common.pem: a FIFO, not a regular file"));

    /* and so does a FIFO as a credential file read through the same function */
    uint8_t *data = NULL;
    size_t len = 0;
    assert_int_equal(ca_store_read_file(path, &data, &len, err, sizeof(err)), -EISDIR);
    assert_null(data);
    close(fd);
    ca_store_unref(store);
    rm_dir(d);
}

static int parse(const char *text, size_t *num_certs, size_t *num_crls, char *err, size_t err_len)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    int rc =
        ca_pem_parse(certs, crls, NULL, "b.pem", (const uint8_t *)text, strlen(text), err, err_len);
    *num_certs = sk_X509_num(certs);
    *num_crls = sk_X509_CRL_num(crls);
    sk_X509_pop_free(certs, X509_free);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    return rc;
}

/* replace returns |s| with the first |from| replaced by |to| (all when |all|). */
static char *replace(const char *s, const char *from, const char *to, bool all)
{
    size_t n = strlen(s) * 2 + strlen(to) * 64 + 1, len = 0;
    char *out = tmalloc(n);
    const char *p = s;
    for (const char *hit; (hit = strstr(p, from)) != NULL;) {
        assert_true(len + (size_t)(hit - p) + strlen(to) < n);
        memcpy(out + len, p, (size_t)(hit - p));
        len += (size_t)(hit - p);
        memcpy(out + len, to, strlen(to));
        len += strlen(to);
        p = hit + strlen(from);
        if (!all)
            break;
    }
    assert_true(len + strlen(p) < n);
    strcpy(out + len, p);
    return out;
}

static size_t lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

static void test_lenient_pem(void **state)
{
    char *root = pem("root.pem"), *crl = pem("inter.crl"), *inter = pem("inter.pem");
    size_t nc, nr;
    char err[512] = "";
    char *both = tmalloc(strlen(root) + strlen(crl) + strlen(inter) + 64);

    tsprintf(both, "%s%s", root, crl);
    char *crlf = replace(both, "\n", "\r\n", true);
    assert_int_equal(parse(crlf, &nc, &nr, err, sizeof(err)), 0);
    assert_int_equal(nc, 1);
    assert_int_equal(nr, 1);

    tsprintf(both, "\n\n%s\n  \n\t\n%s\n\n", root, crl);
    assert_int_equal(parse(both, &nc, &nr, err, sizeof(err)), 0);
    assert_int_equal(nc + nr, 2);

    /* END and the next BEGIN on one line, also with CRLF and a space between */
    tsprintf(both, "%s%s%s", root, inter, crl);
    char *joined = replace(both, "-----\n-----BEGIN", "----------BEGIN", true);
    assert_int_equal(parse(joined, &nc, &nr, err, sizeof(err)), 0);
    assert_int_equal(nc, 2);
    assert_int_equal(nr, 1);
    char *joined2 = replace(crlf, "-----\r\n-----BEGIN", "----- -----BEGIN", true);
    assert_int_equal(parse(joined2, &nc, &nr, err, sizeof(err)), 0);
    assert_int_equal(nc + nr, 2);

    /* explanatory text as openssl pkcs12 and x509 -text write it; no final newline */
    tsprintf(both, "Bag Attributes\n    friendlyName: root\nsubject=CN = Root A\n%s", root);
    both[strlen(both) - 1] = '\0';
    assert_int_equal(parse(both, &nc, &nr, err, sizeof(err)), 0);
    assert_int_equal(nc, 1);

    free(joined);
    free(joined2);
    free(crlf);
    free(both);
    free(root);
    free(crl);
    free(inter);
}

static void expect_pem_error(const char *text, const char *want)
{
    size_t nc, nr;
    char err[512] = "";
    assert_int_equal(parse(text, &nc, &nr, err, sizeof(err)), -EINVAL);
    if (strstr(err, want) == NULL)
        fail_msg("got \"%s\", want \"%s\"", err, want);
}

static void test_malformed_pem(void **state)
{
    char *root = pem("root.pem"), *crl = pem("inter.crl");
    size_t root_lines = lines(root);
    char *buf = tmalloc(strlen(root) * 3 + strlen(crl) + 256);
    char want[128];

    /* unterminated: the root without its END line */
    strcpy(buf, root);
    *strstr(buf, "-----END") = '\0';
    expect_pem_error(buf, "b.pem:1: CERTIFICATE block has no END line");
    tsprintf(buf + strlen(buf), "%s", crl);
    snprintf(want, sizeof(want),
             "b.pem:1: CERTIFICATE block has no END line (next BEGIN at "
             "line %zu)",
             root_lines);
    expect_pem_error(buf, want);

    /* the second block broken: errors name its lines */
    tsprintf(buf, "%s%s", root, root);
    buf[strlen(root) + 40] = '*';
    snprintf(want, sizeof(want), "b.pem:%zu: invalid character", root_lines + 2);
    expect_pem_error(buf, want);

    tsprintf(buf, "%s-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQh\n-----END CERTIFICATE-----\n",
             root);
    snprintf(want, sizeof(want), "b.pem:%zu: CERTIFICATE block is not a valid DER", root_lines + 1);
    expect_pem_error(buf, want);
    expect_pem_error("-----BEGIN X509 CRL-----\naGVsbG8gd29ybGQh\n-----END X509 CRL-----\n",
                     "b.pem:1: X509 CRL block is not a valid DER CRL");
    expect_pem_error("-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybG\n-----END CERTIFICATE-----\n",
                     "b.pem:1: CERTIFICATE block: base64 length");
    expect_pem_error("-----BEGIN CERTIFICATE-----\na=GV\n-----END CERTIFICATE-----\n",
                     "b.pem:1: CERTIFICATE block: invalid base64");
    expect_pem_error("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
                     "b.pem:1: empty CERTIFICATE block");
    expect_pem_error("x\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END X509 CRL-----\n",
                     "b.pem:4: END X509 CRL does not match BEGIN CERTIFICATE at line 2");
    expect_pem_error("\n-----END CERTIFICATE-----\n", "b.pem:2: END line without a BEGIN");
    expect_pem_error("-----BEGIN CERTIFICATE\nAAAA\n", "b.pem:1: malformed BEGIN line");
    expect_pem_error("----BEGIN CERTIFICATE-----\n", "b.pem:1: malformed PEM boundary");
    expect_pem_error("-----BEGIN CERTIFICATE----- x\n", "b.pem:1: text after the BEGIN");
    expect_pem_error("", "b.pem: no CERTIFICATE or X509 CRL block");
    expect_pem_error("hello\n", "b.pem: no CERTIFICATE or X509 CRL block");

    tsprintf(buf, "%s", root);
    char *trail =
        replace(buf, "-----END CERTIFICATE-----", "-----END CERTIFICATE----- junk", false);
    snprintf(want, sizeof(want), "b.pem:%zu: text after the END line", root_lines);
    expect_pem_error(trail, want);
    free(trail);

    /* NUL inside the bundle */
    char nul[] = "-----BEGIN CERTIFICATE-----\nAA\0A\n-----END CERTIFICATE-----\n";
    size_t nc, nr;
    char err[256];
    STACK_OF(X509) *certs = sk_X509_new_null();
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    assert_int_equal(ca_pem_parse(certs, crls, NULL, "n.pem", (const uint8_t *)nul, sizeof(nul) - 1,
                                  err, sizeof(err)),
                     -EINVAL);
    assert_non_null(strstr(err, "n.pem:2: NUL byte"));
    sk_X509_pop_free(certs, X509_free);
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
    (void)nc;
    (void)nr;

    /* through the store: a tenant error naming the file and line */
    char *d = new_dir();
    tsprintf(buf, "%s%s", root, root);
    buf[strlen(root) + 40] = '*';
    put(d, "index.yml", "tenants:\n  t: [bad.pem]\n  u: [u.pem]\n");
    put(d, "tenants/t/bad.pem", buf);
    put_pki(d, "tenants/u/u.pem", "root.pem", NULL);
    struct ca_store *store = load_ok(d, NULL);
    snprintf(want, sizeof(want), "tenants/t/bad.pem:%zu: invalid character", root_lines + 2);
    assert_true(has_error(store, "t", want));
    assert_null(tenant(store, "t"));
    assert_non_null(tenant(store, "u"));
    ca_store_unref(store);
    rm_dir(d);

    free(buf);
    free(root);
    free(crl);
}

static void test_unknown_block_type(void **state)
{
    char *root = pem("root.pem"), *key = pem("root.key");
    char *buf = tmalloc(strlen(root) + strlen(key) + 1);
    char want[128];
    tsprintf(buf, "%s%s", root, key);
    snprintf(want, sizeof(want), "b.pem:%zu: unsupported block type \"PRIVATE KEY\"",
             lines(root) + 1);
    expect_pem_error(buf, want);
    expect_pem_error("-----BEGIN TRUSTED CERTIFICATE-----\nAAAA\n-----END TRUSTED "
                     "CERTIFICATE-----\n",
                     "b.pem:1: unsupported block type \"TRUSTED CERTIFICATE\"");
    /* the key material never reaches the message */
    size_t nc, nr;
    char err[512];
    parse(buf, &nc, &nr, err, sizeof(err));
    assert_null(strstr(err, "MI"));
    free(buf);
    free(root);
    free(key);
}

static void test_path_escape(void **state)
{
    char *d = new_dir();
    put(d, "index.yml",
        "tenants:\n  a: [../b/b.pem]\n  b: [b.pem]\n  c: [/etc/passwd]\n  e: [x/../../b/b.pem]\n"
        "  f: [./f.pem]\n  g: ['..']\n  h: [\"a\\0b\"]\n");
    put_pki(d, "tenants/b/b.pem", "root2.pem", NULL);
    put_pki(d, "tenants/f/f.pem", "root2.pem", NULL);
    struct ca_store *store = load_ok(d, NULL);
    assert_int_equal(ca_store_num_tenants(store), 2);
    assert_non_null(tenant(store, "b"));
    assert_non_null(tenant(store, "f"));
    assert_true(has_error(store, "a", "index.yml:2:7: tenant a: file name must be a relative"));
    assert_true(has_error(store, "c", "index.yml:4:7:"));
    assert_true(has_error(store, "e", "index.yml:5:7:"));
    assert_true(has_error(store, "g", "index.yml:7:7:"));
    assert_true(has_error(store, "h", "index.yml:8:7:"));
    ca_store_unref(store);

    assert_true(ca_index_valid_path("a/b..c/..d", 10));
    assert_true(ca_index_valid_path("...", 3));
    assert_false(ca_index_valid_path("a/..", 4));
    assert_false(ca_index_valid_path("../a", 4));
    assert_false(ca_index_valid_path("", 0));
    assert_true(ca_index_valid_tenant_id("a", 1));
    assert_true(ca_index_valid_tenant_id("0-0", 3));
    assert_false(ca_index_valid_tenant_id("a-", 2));
    assert_false(ca_index_valid_tenant_id("A", 1));
    assert_false(ca_index_valid_tenant_id("a.b", 3));
    assert_false(ca_index_valid_tenant_id("", 0));
    rm_dir(d);
}

static void test_previous_fallback(void **state)
{
    char *d = new_dir();
    uint8_t ha1[32], hb1[32], ha2[32], hb2[32];
    put(d, "index.yml", "common: [root.pem]\ntenants:\n  a: [a.pem]\n  b: [b.pem]\n  s: [s.pem]\n");
    put_pki(d, "common/root.pem", "root.pem", NULL);
    put_pki(d, "tenants/a/a.pem", "root2.pem", NULL);
    put_pki(d, "tenants/b/b.pem", "root2.pem", NULL);
    put_pki(d, "tenants/s/s.pem", "inter.pem", NULL);
    struct ca_store *v1 = load_ok(d, NULL);
    ca_store_trust_hash(v1, tenant(v1, "a"), ha1);
    ca_store_trust_hash(v1, tenant(v1, "b"), hb1);
    X509_STORE *a_trust1 = ca_store_trust(v1, tenant(v1, "a"));
    X509_STORE *s_trust1 = ca_store_trust(v1, tenant(v1, "s"));

    /* b breaks, a changes, c is new and broken */
    put(d, "index.yml",
        "common: [root.pem]\ntenants:\n  a: [a.pem]\n  b: [b.pem]\n  c: [c.pem]\n"
        "  d: [../x]\n  s: [s.pem]\n");
    put_pki(d, "tenants/a/a.pem", "inter.pem", NULL);
    put(d, "tenants/b/b.pem", "-----BEGIN CERTIFICATE-----\n");
    struct ca_store *v2 = load_ok(d, v1);
    /* an unchanged tenant shares its trust store with the previous snapshot */
    assert_ptr_equal(ca_store_trust(v2, tenant(v2, "s")), s_trust1);
    assert_ptr_not_equal(ca_store_trust(v2, tenant(v2, "a")), a_trust1);
    ca_store_unref(v1); /* v2 must not depend on v1 staying alive */
    assert_int_equal(ca_store_num_tenants(v2), 3);
    assert_int_equal(ca_store_num_errors(v2), 3);
    assert_true(has_error(v2, "b", "tenants/b/b.pem:1: CERTIFICATE block has no END line"));
    assert_true(has_error(v2, "c", "tenants/c/c.pem"));
    assert_null(tenant(v2, "c"));
    const struct ca_tenant *a = tenant(v2, "a"), *b = tenant(v2, "b");
    assert_non_null(b);
    assert_true(verifies(ca_store_trust(v2, b), "leafb.pem", NULL));
    assert_false(verifies(ca_store_trust(v2, a), "leafb.pem", NULL));
    assert_true(verifies(ca_store_trust(v2, a), "leaf1.pem", NULL));
    ca_store_trust_hash(v2, a, ha2);
    ca_store_trust_hash(v2, b, hb2);
    assert_memory_not_equal(ha1, ha2, 32);
    assert_memory_equal(hb1, hb2, 32);

    /* a third load chains the fallback; the describe output says where b comes from */
    struct ca_store *v3 = load_ok(d, v2);
    ca_store_unref(v2);
    assert_true(verifies(ca_store_trust(v3, tenant(v3, "b")), "leafb.pem", NULL));
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    ca_store_describe(v3, f);
    fclose(f);
    assert_non_null(strstr(text, "tenant b: 1 certificate, 0 CRLs (kept from the previous load)"));
    free(text);
    ca_store_unref(v3);

    /* an index.yml that does not parse fails the whole load */
    put(d, "index.yml", "common: [\n");
    char err[256];
    assert_int_equal(load_err(d, err, sizeof(err)), -EINVAL);
    rm_dir(d);
}

/* Which tenant ids test_load_changes reports changed: a comma-separated list. */
static bool changed_in(void *ctx, const char *id)
{
    const char *list = ctx;
    size_t n = strlen(id);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && memcmp(p, id, n) == 0)
            return true;
        p += len + (end ? 1 : 0);
    }
    return false;
}

static struct ca_store *load_changes(const char *dir, const struct ca_store *previous, bool common,
                                     const char *changed)
{
    struct ca_store_changes c = {.common = common, .tenant_changed = changed_in,
                                 .ctx = (void *)changed};
    struct ca_store *store = NULL;
    char err[512] = "";
    int rc = ca_store_load_changes(&store, dir, previous, &c, err, sizeof(err));
    if (rc != 0)
        fail_msg("load %s: %s", dir, err);
    return store;
}

static void test_load_changes(void **state)
{
    char *d = new_dir();
    put(d, "index.yml", "common: [root.pem]\ntenants:\n  a: [a.pem]\n  b: [b.pem]\n  s: [s.pem]\n");
    put_pki(d, "common/root.pem", "root.pem", NULL);
    put_pki(d, "tenants/a/a.pem", "root2.pem", NULL);
    put_pki(d, "tenants/b/b.pem", "root2.pem", NULL);
    put_pki(d, "tenants/s/s.pem", "inter.pem", NULL);
    struct ca_store *v1 = load_ok(d, NULL);
    assert_int_equal(ca_store_num_read(v1), 4);
    X509_STORE *s_trust1 = ca_store_trust(v1, tenant(v1, "s"));
    uint8_t hs1[32], hs2[32];
    ca_store_trust_hash(v1, tenant(v1, "s"), hs1);

    /* a and b change on disk, only a is reported: b keeps its bundle without being read */
    put_pki(d, "tenants/a/a.pem", "inter.pem", NULL);
    put(d, "tenants/b/b.pem", "-----BEGIN CERTIFICATE-----\n");
    struct ca_store *v2 = load_changes(d, v1, false, "a");
    assert_int_equal(ca_store_num_read(v2), 1);
    assert_int_equal(ca_store_num_errors(v2), 0);
    assert_true(verifies(ca_store_trust(v2, tenant(v2, "a")), "leaf1.pem", NULL));
    assert_true(verifies(ca_store_trust(v2, tenant(v2, "b")), "leafb.pem", NULL));
    assert_ptr_equal(ca_store_trust(v2, tenant(v2, "s")), s_trust1);
    ca_store_trust_hash(v2, tenant(v2, "s"), hs2);
    assert_memory_equal(hs1, hs2, 32);
    ca_store_unref(v1);

    /* b reported: it fails and keeps its last good bundle */
    struct ca_store *v3 = load_changes(d, v2, false, "b");
    assert_int_equal(ca_store_num_read(v3), 1);
    assert_true(has_error(v3, "b", "tenants/b/b.pem:1: CERTIFICATE block has no END line"));
    assert_true(verifies(ca_store_trust(v3, tenant(v3, "b")), "leafb.pem", NULL));
    ca_store_unref(v2);

    /* a tenant kept from an older snapshot is always read again, even when not reported */
    struct ca_store *v4 = load_changes(d, v3, false, "");
    assert_int_equal(ca_store_num_read(v4), 1);
    assert_true(has_error(v4, "b", "tenants/b/b.pem"));
    ca_store_unref(v3);

    /* a changed list in index.yml is read although not reported; a new tenant is read */
    put(d, "tenants/b/b.pem", "");
    put_pki(d, "tenants/b/b.pem", "root2.pem", NULL);
    put_pki(d, "tenants/s/s2.pem", "root2.pem", NULL);
    put_pki(d, "tenants/c/c.pem", "root2.pem", NULL);
    put(d, "index.yml",
        "common: [root.pem]\ntenants:\n  a: [a.pem]\n  b: [b.pem]\n  s: [s.pem, s2.pem]\n"
        "  c: [c.pem]\n");
    struct ca_store *v5 = load_changes(d, v4, false, "");
    assert_int_equal(ca_store_num_read(v5), 3); /* b (kept before), s (new list), c (new) */
    assert_int_equal(ca_store_num_errors(v5), 0);
    assert_true(verifies(ca_store_trust(v5, tenant(v5, "s")), "leafb.pem", NULL));
    assert_true(verifies(ca_store_trust(v5, tenant(v5, "c")), "leafb.pem", NULL));
    ca_store_unref(v4);

    /* common is read only when reported */
    put_pki(d, "common/root.pem", "root2.pem", NULL);
    struct ca_store *v6 = load_changes(d, v5, false, "");
    assert_int_equal(ca_store_num_read(v6), 0);
    assert_true(verifies(ca_store_trust(v6, NULL), "leaf1.pem", "inter.pem"));
    struct ca_store *v7 = load_changes(d, v6, true, "");
    assert_int_equal(ca_store_num_read(v7), 1);
    assert_false(verifies(ca_store_trust(v7, NULL), "leaf1.pem", "inter.pem"));
    assert_true(verifies(ca_store_trust(v7, NULL), "leafb.pem", NULL));
    ca_store_unref(v5);
    ca_store_unref(v6);

    /* the hint of ca_store_hint_next_load is used once; no hint reads everything */
    struct ca_store_changes c = {.common = false, .tenant_changed = changed_in, .ctx = ""};
    ca_store_hint_next_load(&c);
    struct ca_store *v8 = load_ok(d, v7);
    assert_int_equal(ca_store_num_read(v8), 0);
    struct ca_store *v9 = load_ok(d, v8);
    assert_int_equal(ca_store_num_read(v9), 5);
    ca_store_hint_next_load(&c);
    ca_store_hint_next_load(NULL);
    struct ca_store *v10 = load_ok(d, v9);
    assert_int_equal(ca_store_num_read(v10), 5);
    /* no previous snapshot: the hint cannot apply */
    struct ca_store *v11 = load_changes(d, NULL, false, "");
    assert_int_equal(ca_store_num_read(v11), 5);
    ca_store_unref(v7);
    ca_store_unref(v8);
    ca_store_unref(v9);
    ca_store_unref(v10);
    ca_store_unref(v11);

    /* an index.yml that no longer parses still fails the whole load, hint or not */
    put(d, "index.yml", "common: [\n");
    struct ca_store *none = NULL;
    char err[256];
    assert_int_equal(ca_store_load_changes(&none, d, NULL, &c, err, sizeof(err)), -EINVAL);
    assert_null(none);
    rm_dir(d);
}

static void test_lookup_many(void **state)
{
    enum { N = 1000 };
    char *d = new_dir();
    size_t cap = N * 40 + 64, len = 0;
    char *index = tmalloc(cap);
    char *root2 = pem("root2.pem");
    len += (size_t)snprintf(index + len, cap - len, "tenants:\n");
    for (int i = 0; i < N; i++) {
        char rel[64];
        len += (size_t)snprintf(index + len, cap - len, "  t%d: [x.pem]\n", i);
        snprintf(rel, sizeof(rel), "tenants/t%d/x.pem", i);
        put(d, rel, root2);
    }
    put(d, "index.yml", index);
    struct ca_store *store = load_ok(d, NULL);
    assert_int_equal(ca_store_num_tenants(store), N);
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof(id), "t%d", i);
        const struct ca_tenant *t = tenant(store, id);
        assert_non_null(t);
        assert_string_equal(ca_store_tenant_id(t), id);
        snprintf(id, sizeof(id), "t%dx", i);
        assert_null(tenant(store, id));
        /* |len| bounds the comparison: "t12x" with len 3 is "t12" */
        const struct ca_tenant *p = ca_store_tenant(store, id, strlen(id) - 1);
        assert_ptr_equal(p, t);
    }
    assert_null(ca_store_tenant(store, "t1", 0));
    assert_null(tenant(store, "T1"));
    ca_store_unref(store);
    free(root2);
    free(index);
    rm_dir(d);
}

static void test_partial_chain(void **state)
{
    char *d = new_dir();
    put(d, "index.yml", "common: [root.pem]\ntenants:\n  t: [inter.pem]\n  u: [root2.pem]\n");
    put_pki(d, "common/root.pem", "root.pem", NULL);
    put_pki(d, "tenants/t/inter.pem", "inter.pem", NULL);
    put_pki(d, "tenants/u/root2.pem", "root2.pem", NULL);
    struct ca_store *store = load_ok(d, NULL);
    const struct ca_tenant *t = tenant(store, "t"), *u = tenant(store, "u");
    /* the tenant's intermediate is an anchor by itself */
    assert_true(verifies(ca_store_trust(store, t), "leaf1.pem", NULL));
    /* common alone needs the intermediate from the client */
    assert_false(verifies(ca_store_trust(store, NULL), "leaf1.pem", NULL));
    assert_true(verifies(ca_store_trust(store, NULL), "leaf1.pem", "inter.pem"));
    assert_false(verifies(ca_store_trust(store, u), "leaf1.pem", NULL));
    assert_true(verifies(ca_store_trust(store, u), "leafb.pem", NULL));
    ca_store_unref(store);

    /* without the root anywhere the chain ends at the tenant's intermediate */
    put(d, "index.yml", "tenants:\n  t: [inter.pem]\n");
    store = load_ok(d, NULL);
    X509 *leaf = cert("leaf1.pem");
    STACK_OF(X509) *chain = verify(ca_store_trust(store, tenant(store, "t")), leaf, NULL);
    assert_non_null(chain);
    assert_int_equal(sk_X509_num(chain), 2);
    sk_X509_pop_free(chain, X509_free);
    assert_null(verify(ca_store_trust(store, NULL), leaf, NULL));
    X509_free(leaf);
    ca_store_unref(store);
    rm_dir(d);
}

/* check_crl verifies |leaf| (with |inter| when non-NULL) against |t|'s trust set and runs the
 * CRL check on the verified chain. */
static int check_crl(struct ca_store *store, const struct ca_tenant *t, const char *leaf_name,
                     const char *inter_name, size_t *index, bool *stale)
{
    X509 *leaf = cert(leaf_name);
    X509 *inter = inter_name != NULL ? cert(inter_name) : NULL;
    STACK_OF(X509) *chain = verify(ca_store_trust(store, t), leaf, inter);
    assert_non_null(chain);
    int rc = ca_store_check_crl(store, t, chain, index, stale);
    sk_X509_pop_free(chain, X509_free);
    X509_free(leaf);
    X509_free(inter);
    return rc;
}

static void test_crl_revoked(void **state)
{
    char *d = new_dir();
    size_t index = 99;
    bool stale = true;
    put(d, "index.yml",
        "common: [root.pem]\ntenants:\n  t: [inter.pem]\n  c: [crl.pem]\n  n: []\n"
        "  f: [inter.pem, fake.crl]\n");
    put_pki(d, "common/root.pem", "root.pem", NULL);
    put_pki(d, "tenants/t/inter.pem", "inter.pem", "inter.crl", NULL);
    put_pki(d, "tenants/c/crl.pem", "inter.crl", NULL);
    put_pki(d, "tenants/f/inter.pem", "inter.pem", NULL);
    put_pki(d, "tenants/f/fake.crl", "fake.crl", NULL);
    struct ca_store *store = load_ok(d, NULL);
    const struct ca_tenant *t = tenant(store, "t");

    /* signed by a CA of the trust set (the tenant's intermediate) */
    assert_int_equal(check_crl(store, t, "leaf2.pem", NULL, &index, &stale), -EACCES);
    assert_int_equal(index, 0);
    stale = true;
    assert_int_equal(check_crl(store, t, "leaf1.pem", NULL, &index, &stale), 0);
    assert_false(stale);
    /* the CRL's issuer is not in the trust set but is the chain's verified intermediate */
    const struct ca_tenant *c = tenant(store, "c");
    assert_int_equal(check_crl(store, c, "leaf2.pem", "inter.pem", &index, NULL), -EACCES);
    assert_int_equal(index, 0);
    assert_int_equal(check_crl(store, c, "leaf1.pem", "inter.pem", &index, NULL), 0);
    /* other trust sets do not see tenant c's CRL */
    assert_int_equal(check_crl(store, tenant(store, "n"), "leaf2.pem", "inter.pem", &index, NULL),
                     0);
    assert_int_equal(check_crl(store, NULL, "leaf2.pem", "inter.pem", &index, NULL), 0);
    /* a CRL with the right name and the wrong key is ignored */
    assert_int_equal(check_crl(store, tenant(store, "f"), "leaf2.pem", NULL, &index, NULL), 0);
    ca_store_unref(store);

    /* the CRL in common, issued by a tenant's intermediate, applies to that tenant's chains;
     * a revoked intermediate is reported at its index */
    put(d, "index.yml", "common: [root.pem]\ntenants:\n  t: [inter.pem]\n");
    put_pki(d, "common/root.pem", "root.pem", "inter.crl", NULL);
    put_pki(d, "tenants/t/inter.pem", "inter.pem", NULL);
    store = load_ok(d, NULL);
    assert_int_equal(check_crl(store, tenant(store, "t"), "leaf2.pem", NULL, &index, NULL),
                     -EACCES);
    assert_int_equal(index, 0);
    ca_store_unref(store);
    rm_dir(d);
}

struct race {
    struct ca_store *store;
    int ok;
};

static void *race_main(void *arg)
{
    struct race *r = arg;
    X509 *leaf = cert("leaf2.pem");
    for (int i = 0; i < 50; i++) {
        char id[8];
        snprintf(id, sizeof(id), "t%d", i % 10);
        const struct ca_tenant *t = tenant(r->store, id);
        STACK_OF(X509) *chain = verify(ca_store_trust(r->store, t), leaf, NULL);
        size_t index = 9;
        if (chain != NULL && ca_store_check_crl(r->store, t, chain, &index, NULL) == -EACCES &&
            index == 0)
            r->ok++;
        sk_X509_pop_free(chain, X509_free);
    }
    X509_free(leaf);
    return NULL;
}

/* Threads race to build the same trust stores and CRL memos on first use. */
static void test_concurrent_first_use(void **state)
{
    char *d = new_dir();
    put(d, "index.yml",
        "tenants: {t0: [x.pem], t1: [x.pem], t2: [x.pem], t3: [x.pem], "
        "t4: [x.pem], t5: [x.pem], t6: [x.pem], t7: [x.pem], t8: [x.pem], "
        "t9: [x.pem]}\n");
    for (int i = 0; i < 10; i++) {
        char rel[64];
        snprintf(rel, sizeof(rel), "tenants/t%d/x.pem", i);
        put_pki(d, rel, "inter.pem", "inter.crl", NULL);
    }
    struct ca_store *store = load_ok(d, NULL);
    struct race races[4];
    pthread_t threads[4];
    for (int i = 0; i < 4; i++) {
        races[i] = (struct race){.store = store};
        assert_int_equal(pthread_create(&threads[i], NULL, race_main, &races[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(threads[i], NULL), 0);
        assert_int_equal(races[i].ok, 50);
    }
    ca_store_unref(store);
    rm_dir(d);
}

/* entry_crl makes, with BoringSSL, a CRL of Inter A revoking leaf2 whose entry carries an unknown
 * critical extension or (|cert_issuer|) a certificateIssuer: the openssl CLI cannot. PEM; free. */
static char *entry_crl(bool cert_issuer)
{
    X509 *issuer = cert("inter.pem");
    char *key_pem = pem("inter.key");
    BIO *bio = BIO_new_mem_buf(key_pem, (long)strlen(key_pem));
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    assert_non_null(key);
    BIO_free(bio);
    X509_CRL *crl = X509_CRL_new();
    assert_true(X509_CRL_set_version(crl, X509_CRL_VERSION_2));
    assert_true(X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer)));
    ASN1_TIME *now = ASN1_TIME_set(NULL, time(NULL));
    ASN1_TIME *next = ASN1_TIME_set(NULL, time(NULL) + 86400);
    assert_true(X509_CRL_set1_lastUpdate(crl, now) && X509_CRL_set1_nextUpdate(crl, next));
    X509_REVOKED *rev = X509_REVOKED_new();
    ASN1_INTEGER *serial = ASN1_INTEGER_new();
    assert_true(ASN1_INTEGER_set(serial, 0x1002));
    assert_true(X509_REVOKED_set_serialNumber(rev, serial));
    assert_true(X509_REVOKED_set_revocationDate(rev, now));
    if (cert_issuer) {
        GENERAL_NAMES *names = GENERAL_NAMES_new();
        GENERAL_NAME *name = GENERAL_NAME_new();
        ASN1_IA5STRING *s = ASN1_IA5STRING_new();
        assert_true(ASN1_STRING_set(s, "other.example", -1));
        GENERAL_NAME_set0_value(name, GEN_DNS, s);
        assert_true(sk_GENERAL_NAME_push(names, name));
        assert_true(X509_REVOKED_add1_ext_i2d(rev, NID_certificate_issuer, names, 1, 0));
        GENERAL_NAMES_free(names);
    } else {
        ASN1_OBJECT *obj = OBJ_txt2obj("1.2.3.4.6", 1);
        ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
        assert_true(ASN1_OCTET_STRING_set(os, (const uint8_t *)"\x05\x00", 2));
        X509_EXTENSION *ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 1, os);
        assert_non_null(ext);
        assert_true(X509_REVOKED_add_ext(rev, ext, -1));
        X509_EXTENSION_free(ext);
        ASN1_OCTET_STRING_free(os);
        ASN1_OBJECT_free(obj);
    }
    assert_true(X509_CRL_add0_revoked(crl, rev));
    assert_true(X509_CRL_sign(crl, key, EVP_sha256()));
    BIO *out = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_X509_CRL(out, crl));
    const uint8_t *data = NULL;
    size_t len = 0;
    assert_true(BIO_mem_contents(out, &data, &len));
    char *text = strndup((const char *)data, len);
    BIO_free(out);
    ASN1_INTEGER_free(serial);
    ASN1_TIME_free(now);
    ASN1_TIME_free(next);
    X509_CRL_free(crl);
    EVP_PKEY_free(key);
    X509_free(issuer);
    free(key_pem);
    return text;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* A CRL that is not complete evidence fails its bundle with FILE:LINE: the tenant is left out
 * (or keeps its previous bundle), common fails the load; never "not revoked" (SECURITY rule 27). */
static void test_crl_not_evidence(void **state)
{
#define IDP_NARROWS "X509 CRL has an Issuing Distribution Point that narrows its scope "
    static const struct {
        const char *crl; /* a PKI file, or NULL for entry_crl(false), "" for entry_crl(true) */
        const char *what;
    } bad[] = {
        {"crl_crit.crl", "X509 CRL has an unknown critical extension 1.2.3.4.5"},
        {"crl_delta.crl", "X509 CRL is a delta CRL (deltaCRLIndicator)"},
        {"crl_idp_user.crl", IDP_NARROWS "(onlyContainsUserCerts)"},
        {"crl_idp_ca.crl", IDP_NARROWS "(onlyContainsCACerts)"},
        {"crl_idp_attr.crl", IDP_NARROWS "(onlyContainsAttributeCerts)"},
        {"crl_idp_reasons.crl", IDP_NARROWS "(onlySomeReasons)"},
        {"crl_idp_indirect.crl", IDP_NARROWS "(indirectCRL)"},
        {NULL, "X509 CRL has an unknown critical entry extension 1.2.3.4.6"},
        {"", "X509 CRL has an entry for another issuer (certificateIssuer)"},
    };
    char *inter = pem("inter.pem");
    size_t line = count_lines(inter) + 1;
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *d = new_dir();
        char *crl = bad[i].crl == NULL ? entry_crl(false)
                    : bad[i].crl[0] == '\0' ? entry_crl(true)
                                            : pem(bad[i].crl);
        char *bundle = tmalloc(strlen(inter) + strlen(crl) + 1);
        tsprintf(bundle, "%s%s", inter, crl);
        char want[256];
        tsprintf(want, "tenants/t/b.pem:%zu: %s", line, bad[i].what);

        /* a new tenant: left out, with the error */
        put(d, "index.yml", "common: [root.pem]\ntenants:\n  t: [b.pem]\n");
        put_pki(d, "common/root.pem", "root.pem", NULL);
        put(d, "tenants/t/b.pem", bundle);
        struct ca_store *store = load_ok(d, NULL);
        if (!has_error(store, "t", want))
            fail_msg("%s: no error \"%s\" (%s)", bad[i].crl ? bad[i].crl : "entry", want,
                     ca_store_num_errors(store) ? ca_store_error(store, 0, NULL) : "none");
        assert_null(tenant(store, "t"));
        ca_store_unref(store);

        /* a tenant with a good bundle keeps it: its CRL still revokes leaf2 */
        put_pki(d, "tenants/t/b.pem", "inter.pem", "inter.crl", NULL);
        struct ca_store *good = load_ok(d, NULL);
        put(d, "tenants/t/b.pem", bundle);
        store = load_ok(d, good);
        assert_true(has_error(store, "t", want));
        size_t index = 9;
        assert_int_equal(check_crl(store, tenant(store, "t"), "leaf2.pem", NULL, &index, NULL),
                         -EACCES);
        ca_store_unref(store);
        ca_store_unref(good);

        /* in common: the whole load fails, naming the file and line */
        put(d, "index.yml", "common: [root.pem, b.pem]\n");
        put(d, "common/b.pem", bundle);
        char err[512] = "";
        assert_int_equal(load_err(d, err, sizeof(err)), -EINVAL);
        tsprintf(want, "common/b.pem:%zu: %s", line, bad[i].what);
        if (strstr(err, want) == NULL)
            fail_msg("common: %s, want %s", err, want);
        free(bundle);
        free(crl);
        rm_dir(d);
    }
    free(inter);
}

/* Complete CRLs with what certgate may ignore still load and revoke. */
static void test_crl_evidence_accepted(void **state)
{
    static const char *const good[] = {"crl_noncrit.crl", "crl_idp_name.crl"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char *d = new_dir();
        put(d, "index.yml", "common: [root.pem]\ntenants:\n  t: [b.pem]\n");
        put_pki(d, "common/root.pem", "root.pem", NULL);
        put_pki(d, "tenants/t/b.pem", "inter.pem", good[i], NULL);
        struct ca_store *store = load_ok(d, NULL);
        assert_int_equal(ca_store_num_errors(store), 0);
        size_t index = 9;
        const struct ca_tenant *t = tenant(store, "t");
        assert_int_equal(check_crl(store, t, "leaf2.pem", NULL, &index, NULL), -EACCES);
        assert_int_equal(index, 0);
        assert_int_equal(check_crl(store, t, "leaf1.pem", NULL, &index, NULL), 0);
        ca_store_unref(store);
        rm_dir(d);
    }
}

/* A CRL signed by a CA whose keyUsage lacks cRLSign: a load error when that CA is in the trust
 * set of the bundle (its own or common), a refusal (-EPROTO) when only the chain holds it. */
static void test_crl_signer_without_crlsign(void **state)
{
    char *d = new_dir();
    char *nosign = pem("nosign.pem");
    size_t line = count_lines(nosign) + 1;
    char want[256];
    put(d, "index.yml", "common: [root.pem]\ntenants:\n  t: [b.pem]\n  u: [n.crl]\n");
    put_pki(d, "common/root.pem", "root.pem", NULL);
    put_pki(d, "tenants/t/b.pem", "nosign.pem", "nosign.crl", NULL);
    put_pki(d, "tenants/u/n.crl", "nosign.crl", NULL);
    struct ca_store *store = load_ok(d, NULL);
    tsprintf(want, "tenants/t/b.pem:%zu: X509 CRL is signed by \"CN=NoSign CA\", whose keyUsage "
                   "lacks cRLSign", line);
    assert_true(has_error(store, "t", want));
    assert_null(tenant(store, "t"));
    /* u: the CRL's signer comes only with the chain */
    const struct ca_tenant *u = tenant(store, "u");
    assert_non_null(u);
    size_t index = 9;
    assert_int_equal(check_crl(store, u, "leafn.pem", "nosign.pem", &index, NULL), -EPROTO);
    assert_int_equal(index, 0);
    ca_store_unref(store);

    /* the signer in common fails the tenant whose bundle holds the CRL */
    put(d, "index.yml", "common: [root.pem, nosign.pem]\ntenants:\n  u: [n.crl]\n");
    put_pki(d, "common/nosign.pem", "nosign.pem", NULL);
    store = load_ok(d, NULL);
    assert_true(has_error(store, "u", "tenants/u/n.crl:1: X509 CRL is signed by \"CN=NoSign CA\""));
    ca_store_unref(store);
    free(nosign);
    rm_dir(d);
}

static void test_crl_stale(void **state)
{
    char *d = new_dir();
    size_t index = 99;
    bool stale = false;
    put(d, "index.yml", "common: [root.pem]\ntenants:\n  t: [inter.pem]\n");
    put_pki(d, "common/root.pem", "root.pem", NULL);
    put_pki(d, "tenants/t/inter.pem", "inter.pem", "inter-stale.crl", NULL);
    struct ca_store *store = load_ok(d, NULL);
    const struct ca_tenant *t = tenant(store, "t");
    /* a stale CRL still applies, and says so */
    assert_int_equal(check_crl(store, t, "leaf2.pem", NULL, &index, &stale), -EACCES);
    assert_true(stale);
    stale = false;
    assert_int_equal(check_crl(store, t, "leaf1.pem", NULL, &index, &stale), 0);
    assert_true(stale);
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    ca_store_describe(store, f);
    fclose(f);
    assert_non_null(strstr(text, "CRL CN=Inter A (nextUpdate Feb  1 00:00:00 2020 GMT, STALE)"));
    free(text);
    ca_store_unref(store);
    rm_dir(d);
}

static void test_trust_hash(void **state)
{
    char *d = new_dir();
    uint8_t c1[32], a1[32], b1[32], e1[32], c2[32], a2[32], b2[32], a3[32], e3[32];
    put(d, "index.yml", "common: [root.pem]\ntenants:\n  a: [x.pem]\n  b: [y.pem]\n  e: []\n");
    put_pki(d, "common/root.pem", "root.pem", NULL);
    put_pki(d, "tenants/a/x.pem", "root2.pem", NULL);
    put_pki(d, "tenants/b/y.pem", "inter.pem", NULL);
    struct ca_store *s1 = load_ok(d, NULL);
    ca_store_trust_hash(s1, NULL, c1);
    ca_store_trust_hash(s1, tenant(s1, "a"), a1);
    ca_store_trust_hash(s1, tenant(s1, "b"), b1);
    ca_store_trust_hash(s1, tenant(s1, "e"), e1);
    assert_memory_not_equal(a1, b1, 32);
    assert_memory_not_equal(a1, c1, 32);
    assert_memory_not_equal(e1, c1, 32); /* same content, other tenant */

    /* the same files give the same hashes */
    struct ca_store *s2 = load_ok(d, NULL);
    ca_store_trust_hash(s2, NULL, c2);
    ca_store_trust_hash(s2, tenant(s2, "a"), a2);
    ca_store_trust_hash(s2, tenant(s2, "b"), b2);
    assert_memory_equal(c1, c2, 32);
    assert_memory_equal(a1, a2, 32);
    assert_memory_equal(b1, b2, 32);
    ca_store_unref(s2);

    /* a CRL added to a changes a only; a change in common changes everyone */
    put_pki(d, "tenants/a/x.pem", "root2.pem", "inter.crl", NULL);
    s2 = load_ok(d, NULL);
    ca_store_trust_hash(s2, tenant(s2, "a"), a2);
    ca_store_trust_hash(s2, tenant(s2, "b"), b2);
    assert_memory_not_equal(a1, a2, 32);
    assert_memory_equal(b1, b2, 32);
    ca_store_unref(s2);
    put_pki(d, "common/root.pem", "root.pem", "inter.crl", NULL);
    s2 = load_ok(d, NULL);
    ca_store_trust_hash(s2, tenant(s2, "a"), a3);
    ca_store_trust_hash(s2, tenant(s2, "e"), e3);
    ca_store_trust_hash(s2, NULL, c2);
    assert_memory_not_equal(a2, a3, 32);
    assert_memory_not_equal(e1, e3, 32);
    assert_memory_not_equal(c1, c2, 32);
    ca_store_unref(s2);
    ca_store_unref(s1);
    rm_dir(d);
}

static void test_describe(void **state)
{
    char *d = new_dir();
    put(d, "index.yml", "common: [root.pem]\ntenants:\n  a: [x.pem]\n  B: [x.pem]\n");
    put_pki(d, "common/root.pem", "root.pem", "inter.crl", NULL);
    put_pki(d, "tenants/a/x.pem", "root2.pem", "inter.pem", NULL);
    struct ca_store *store = load_ok(d, NULL);
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    ca_store_describe(store, f);
    fclose(f);
    assert_non_null(strstr(text, ": 1 tenant, 1 load error\n"));
    assert_non_null(strstr(text, "common: 1 certificate, 1 CRL\n  CA CN=Root A (notAfter "));
    assert_non_null(strstr(text, "  CRL CN=Inter A (nextUpdate "));
    assert_non_null(strstr(text, "issuer not in the trust set"));
    assert_non_null(strstr(text, "tenant a: 2 certificates, 0 CRLs\n  CA CN=Root B (notAfter "));
    assert_non_null(strstr(text, "  CA CN=Inter A (notAfter "));
    assert_non_null(strstr(text, "error: tenant B: "));
    assert_non_null(strstr(text, "invalid tenant id \"B\""));
    free(text);
    ca_store_unref(store);
    rm_dir(d);
}

/* Every prefix of a bundle and of an index either parses or fails cleanly (run under ASan). */
static void test_truncated_everywhere(void **state)
{
    char *root = pem("root.pem"), *crl = pem("inter.crl");
    char *all = tmalloc(strlen(root) + strlen(crl) + 1);
    tsprintf(all, "%s%s", root, crl);
    size_t n = strlen(all), ok = 0;
    for (size_t i = 0; i <= n; i++) {
        STACK_OF(X509) *certs = sk_X509_new_null();
        STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
        char err[256] = "";
        char *copy = tmalloc(i + 1);
        memcpy(copy, all, i);
        int rc =
            ca_pem_parse(certs, crls, NULL, "t.pem", (const uint8_t *)copy, i, err, sizeof(err));
        if (rc == 0)
            ok++;
        else
            assert_non_null(strstr(err, "t.pem"));
        sk_X509_pop_free(certs, X509_free);
        sk_X509_CRL_pop_free(crls, X509_CRL_free);
        free(copy);
    }
    /* complete when cut after either END line, with or without its newline, and at the end */
    assert_true(ok >= 4);

    static const char yaml[] =
        "# store\ncommon:\n- root.pem\ntenants:\n  a:\n  - 'x.pem'\n  b: [\"y.pem\", z.pem]\n"
        "  c: {}\n  D: []\n";
    for (size_t i = 0; i <= sizeof(yaml) - 1; i++) {
        struct ca_index index = {0};
        char err[256] = "";
        char *copy = tmalloc(i + 1);
        memcpy(copy, yaml, i);
        int rc = ca_index_parse(&index, "i.yml", (const uint8_t *)copy, i, err, sizeof(err));
        if (rc != 0)
            assert_non_null(strstr(err, "i.yml:"));
        ca_index_cleanup(&index);
        free(copy);
    }
    struct ca_index index = {0};
    char err[256] = "";
    assert_int_equal(
        ca_index_parse(&index, "i.yml", (const uint8_t *)yaml, sizeof(yaml) - 1, err, sizeof(err)),
        0);
    assert_int_equal(index.num_common, 1);
    assert_int_equal(index.num_tenants, 4);
    assert_int_equal(index.tenants[1].num_files, 2);
    assert_string_equal(index.tenants[1].files[1].path, "z.pem");
    assert_int_equal(index.tenants[1].files[1].line, 7);
    assert_int_equal(index.tenants[1].files[1].col, 16);
    assert_non_null(index.tenants[2].error);
    assert_non_null(index.tenants[3].error);
    ca_index_cleanup(&index);
    free(all);
    free(root);
    free(crl);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = strtol(line + 6, NULL, 10);
    if (f != NULL)
        fclose(f);
    return kib;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Many tenants with two CAs each: 2,000 by default to keep `make test` short;
 * CA_STORE_BENCH_TENANTS=10000 gives the figures of the 10,000-tenant goal. */
static void test_bench_many_tenants(void **state)
{
    const char *env = getenv("CA_STORE_BENCH_TENANTS");
    long n = env != NULL ? strtol(env, NULL, 10) : 2000;
    char *d = new_dir();
    char *bundle = tmalloc(8192);
    char *root = pem("root.pem"), *root2 = pem("root2.pem");
    tsprintf(bundle, "%s%s", root, root2);
    size_t cap = (size_t)n * 48 + 64, len = 0;
    char *index = tmalloc(cap);
    len += (size_t)snprintf(index + len, cap - len, "common: [root.pem]\ntenants:\n");
    put(d, "common/root.pem", root);
    for (long i = 0; i < n; i++) {
        char rel[64];
        len += (size_t)snprintf(index + len, cap - len, "  tenant-%ld: [ca.pem]\n", i);
        snprintf(rel, sizeof(rel), "tenants/tenant-%ld/ca.pem", i);
        put(d, rel, bundle);
    }
    put(d, "index.yml", index);

    long rss0 = rss_kib();
    double t0 = now_s();
    struct ca_store *store = load_ok(d, NULL);
    double t1 = now_s();
    long rss1 = rss_kib();
    struct ca_store *again = load_ok(d, store);
    double t2 = now_s();
    assert_int_equal(ca_store_num_tenants(store), (size_t)n);
    double l0 = now_s();
    for (long i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof(id), "tenant-%ld", i);
        assert_non_null(tenant(again, id));
    }
    double l1 = now_s();
    if (n > 0) {
        char id[32];
        snprintf(id, sizeof(id), "tenant-%ld", n / 2);
        assert_true(verifies(ca_store_trust(store, tenant(store, id)), "leafb.pem", NULL));
    }
    printf("bench: %ld tenants x 2 CAs: load %.3f s, reload %.3f s, RSS +%ld KiB "
           "(%.1f KiB/tenant), lookup %.0f ns\n",
           n, t1 - t0, t2 - t1, rss1 - rss0, n > 0 ? (double)(rss1 - rss0) / (double)n : 0.0,
           n > 0 ? (l1 - l0) * 1e9 / (double)n : 0.0);
    assert_true(t1 - t0 < 10.0); /* generous: sanitizer builds are several times slower */
    ca_store_unref(store);
    ca_store_unref(again);
    free(index);
    free(bundle);
    free(root);
    free(root2);
    rm_dir(d);
}

static int setup(void **state)
{
    char script[128], cmd[512];
    snprintf(pki, sizeof(pki), "/tmp/test_ca_store_pki.XXXXXX");
    if (mkdtemp(pki) == NULL)
        return -1;
    snprintf(script, sizeof(script), "%s/pki.sh", pki);
    FILE *f = fopen(script, "w");
    if (f == NULL)
        return -1;
    fputs(pki_script, f);
    fclose(f);
    snprintf(cmd, sizeof(cmd), "sh '%s' '%s' >'%s/pki.log' 2>&1", script, pki, pki);
    if (system(cmd) != 0) {
        fprintf(stderr, "PKI generation failed, see %s/pki.log\n", pki);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", pki);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_index),
        cmocka_unit_test(test_index_errors),
        cmocka_unit_test(test_missing_index_and_common),
        cmocka_unit_test(test_common_only),
        cmocka_unit_test(test_tenants),
        cmocka_unit_test(test_bad_tenant_id),
        cmocka_unit_test(test_missing_file_and_duplicate),
        cmocka_unit_test(test_special_files),
        cmocka_unit_test(test_crl_not_evidence),
        cmocka_unit_test(test_crl_evidence_accepted),
        cmocka_unit_test(test_crl_signer_without_crlsign),
        cmocka_unit_test(test_lenient_pem),
        cmocka_unit_test(test_malformed_pem),
        cmocka_unit_test(test_unknown_block_type),
        cmocka_unit_test(test_path_escape),
        cmocka_unit_test(test_previous_fallback),
        cmocka_unit_test(test_load_changes),
        cmocka_unit_test(test_lookup_many),
        cmocka_unit_test(test_partial_chain),
        cmocka_unit_test(test_crl_revoked),
        cmocka_unit_test(test_concurrent_first_use),
        cmocka_unit_test(test_crl_stale),
        cmocka_unit_test(test_trust_hash),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_bench_many_tenants),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
