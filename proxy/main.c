/* main.c: the command line (run, check, version), signals, start and stop. */
#include <stdio.h>
#include <string.h>

#include "base.h"

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "version") == 0) {
        printf("certgate %s\n", CERTGATE_VERSION);
        return 0;
    }
    fprintf(stderr, "usage: certgate run|check|version [-c FILE]\n");
    return 2;
}
