/* replay.c: the main() of every fuzz target when they are built without libFuzzer
 * (make unit, make asan): it feeds every file named on the command line, or found directly in a
 * named directory, to LLVMFuzzerTestOneInput once. Each input is an allocation of exactly its
 * size, so that the ASan build sees a read past its end. The last line says how many ran. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define REPLAY_MAX_INPUT (4u << 20) /* far above any -max_len the fuzzers run with */

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || st.st_size < 0 || st.st_size > (off_t)REPLAY_MAX_INPUT) {
        fprintf(stderr, "%s: not a regular file of at most %u bytes\n", path, REPLAY_MAX_INPUT);
        fclose(f);
        return -1;
    }
    size_t size = (size_t)st.st_size;
    uint8_t *data = malloc(size ? size : 1);
    if (data == NULL || fread(data, 1, size, f) != size) {
        fprintf(stderr, "%s: cannot read\n", path);
        free(data);
        fclose(f);
        return -1;
    }
    fclose(f);
    LLVMFuzzerTestOneInput(data, size);
    free(data);
    return 0;
}

int main(int argc, char **argv)
{
    size_t num = 0;
    int failed = 0;
    for (int a = 1; a < argc; a++) {
        struct stat st;
        if (stat(argv[a], &st) != 0) {
            perror(argv[a]);
            failed = 1;
            continue;
        }
        if (!S_ISDIR(st.st_mode)) {
            failed |= replay_file(argv[a]) != 0;
            num++;
            continue;
        }
        DIR *dir = opendir(argv[a]);
        if (dir == NULL) {
            perror(argv[a]);
            failed = 1;
            continue;
        }
        struct dirent *de;
        while ((de = readdir(dir)) != NULL) {
            char path[4096];
            snprintf(path, sizeof(path), "%s/%s", argv[a], de->d_name);
            if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
                continue;
            failed |= replay_file(path) != 0;
            num++;
        }
        closedir(dir);
    }
    if (num == 0) {
        fprintf(stderr, "%s: no input replayed\n", argv[0]);
        failed = 1;
    }
    printf("%s: replayed %zu inputs\n", argc > 0 ? argv[0] : "replay", num);
    return failed;
}
