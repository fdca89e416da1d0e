// Fuzzes the config reader: the first byte picks the INI reader (config_load_string) or the
// `--set section.key=value` reader (one assignment per line); the result is then validated and
// written back out, as `canary train` does. Any input must end in 0 or -1 with a message.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/config.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct config c;
    char err[1024];
    if (size < 1)
        return 0;
    char *text = malloc(size); // the rest of the input, NUL-terminated
    memcpy(text, data + 1, size - 1);
    text[size - 1] = '\0';
    config_defaults(&c);
    int rc = 0;
    err[0] = '\0';
    if (data[0] & 1) {
        rc = config_load_string(&c, text, "fuzz.ini", err, sizeof(err));
    } else {
        for (char *line = strtok(text, "\n"); line && rc == 0; line = strtok(NULL, "\n"))
            rc = config_set_from(&c, line, "--set", err, sizeof(err));
    }
    if (rc != 0 && err[0] == '\0')
        abort(); // every refusal says why
    if (rc == 0) {
        err[0] = '\0';
        rc = config_validate(&c, 1 + (data[0] >> 1) % 4, 0, err, sizeof(err));
        if (rc != 0 && err[0] == '\0')
            abort();
        FILE *devnull = fopen("/dev/null", "w");
        if (devnull) {
            config_write(&c, devnull);
            fclose(devnull);
        }
    }
    free(text);
    return 0;
}
