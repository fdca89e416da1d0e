// The scratch file the file-reading harnesses hand to the readers under test.
#include "tests/fuzz/fuzz.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *fuzz_file(const char *tag, const uint8_t *data, size_t size)
{
    static char path[512]; // one per process: harnesses are single-threaded
    if (!path[0]) {
        const char *dir = getenv("TMPDIR");
        snprintf(path, sizeof(path), "%s/canary-fuzz-%s-%ld", dir && *dir ? dir : "/tmp", tag,
                 (long)getpid());
    }
    FILE *f = fopen(path, "wb");
    if (!f || (size > 0 && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        fprintf(stderr, "fuzz: cannot write the scratch file '%s'\n", path);
        abort();
    }
    return path;
}
