/* fuzz_ca_index.c: libFuzzer target for the CA store's index.yml parser (ca_index_parse). A
 * refusal says "NAME:LINE:COL: what"; an accepted index lists only paths that stay inside their
 * directory and tenants whose id is a DNS label (or that carry their own error and no files),
 * and parsing the same bytes again gives the same index. Without -DFUZZING, replay.c replays a
 * corpus. */
#include <ctype.h>
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "ca_index.h"
#include "fuzz_check.h"

#define NAME "index.yml"

static void check_located(const char *msg, bool with_col)
{
    CHECK(strncmp(msg, NAME ":", strlen(NAME ":")) == 0);
    const char *p = msg + strlen(NAME ":");
    for (int field = 0; field < (with_col ? 2 : 1); field++) {
        CHECK(isdigit((unsigned char)*p) && *p != '0');
        while (isdigit((unsigned char)*p))
            p++;
        CHECK(*p == ':');
        p++;
    }
    CHECK(*p == ' ' && p[1] != '\0');
}

static void check_file(const struct ca_index_file *f)
{
    CHECK(f->path != NULL && ca_index_valid_path(f->path, strlen(f->path)));
    CHECK(f->line >= 1 && f->col >= 1);
}

static bool same_files(const struct ca_index_file *a, const struct ca_index_file *b, size_t num)
{
    for (size_t i = 0; i < num; i++)
        if (strcmp(a[i].path, b[i].path) != 0 || a[i].line != b[i].line || a[i].col != b[i].col)
            return false;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    struct ca_index idx = {0}, again = {0};
    char err[512] = "", err2[512] = "";
    int rc = ca_index_parse(&idx, NAME, data, size, err, sizeof(err));
    int rc2 = ca_index_parse(&again, NAME, data, size, err2, sizeof(err2));
    CHECK(rc == rc2);
    if (rc != 0) {
        CHECK(rc == -EINVAL);
        CHECK(strcmp(err, err2) == 0);
        check_located(err, true);
        goto out;
    }
    CHECK(idx.num_common == again.num_common && idx.num_tenants == again.num_tenants);
    for (size_t i = 0; i < idx.num_common; i++)
        check_file(&idx.common[i]);
    CHECK(same_files(idx.common, again.common, idx.num_common));
    for (size_t i = 0; i < idx.num_tenants; i++) {
        const struct ca_index_tenant *t = &idx.tenants[i], *u = &again.tenants[i];
        CHECK(t->id != NULL && strcmp(t->id, u->id) == 0);
        CHECK((t->error == NULL) == (u->error == NULL));
        CHECK(t->line >= 1 && t->col >= 1);
        if (t->error != NULL) {
            CHECK(strcmp(t->error, u->error) == 0);
            CHECK(t->num_files == 0);
            check_located(t->error, true);
            continue;
        }
        CHECK(ca_index_valid_tenant_id(t->id, strlen(t->id)));
        CHECK(t->num_files == u->num_files);
        for (size_t j = 0; j < t->num_files; j++)
            check_file(&t->files[j]);
        CHECK(same_files(t->files, u->files, t->num_files));
    }
out:
    ca_index_cleanup(&idx);
    ca_index_cleanup(&again);
    CHECK(idx.num_common == 0 && idx.num_tenants == 0 && idx.common == NULL && idx.tenants == NULL);
    return 0;
}
