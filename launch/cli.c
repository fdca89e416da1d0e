// Option parsing shared by the commands, and config loading with rank-0 broadcast.
#include "launch/cli.h"

#include <stdio.h>
#include <string.h>

#include "util/error.h"

// Consumes "--config F" or "--set k=v" at argv[*i]; returns 1 if it did, 0 if argv[*i] is
// something else, -1 on a missing argument (message printed).
static int cli_take_config_opt(struct cli_config_opts *o, int argc, char **argv, int *i)
{
    const char *a = argv[*i];
    if (strcmp(a, "--config") == 0 || strcmp(a, "--set") == 0) {
        if (*i + 1 >= argc) {
            err_printf("%s needs an argument", a);
            return -1;
        }
        if (a[2] == 'c') {
            o->config_path = argv[++*i];
        } else {
            if (o->nsets == (int)(sizeof(o->sets) / sizeof(o->sets[0]))) {
                err_printf("too many --set options");
                return -1;
            }
            o->sets[o->nsets++] = argv[++*i];
        }
        return 1;
    }
    if (strncmp(a, "--config=", 9) == 0) {
        o->config_path = a + 9;
        return 1;
    }
    if (strncmp(a, "--set=", 6) == 0 && o->nsets < (int)(sizeof(o->sets) / sizeof(o->sets[0]))) {
        o->sets[o->nsets++] = a + 6;
        return 1;
    }
    return 0;
}

enum cli_opt cli_take_opt(struct cli_config_opts *o, int argc, char **argv, int *i,
                          cli_usage_fn usage, const struct dist_ctx *d)
{
    int took = cli_take_config_opt(o, argc, argv, i);
    if (took != 0)
        return took > 0 ? CLI_TAKEN : CLI_BAD;
    if (strcmp(argv[*i], "-h") == 0 || strcmp(argv[*i], "--help") == 0) {
        if (d->rank == 0)
            usage(stdout);
        return CLI_HELP;
    }
    return CLI_NOT_MINE;
}

int cli_unexpected(const char *cmd, const char *arg, cli_usage_fn usage, const struct dist_ctx *d)
{
    if (d->rank == 0) {
        err_printf("%s: unexpected argument '%s'", cmd, arg);
        usage(stderr);
    }
    return 1;
}

int cli_load_config(struct config *c, const struct cli_config_opts *o, struct dist_ctx *d,
                    int need_data)
{
    char err[1024];
    int ok = 1;
    if (d->rank == 0) {
        config_defaults(c);
        if (o->config_path && config_load_file(c, o->config_path, err, sizeof(err)) != 0)
            ok = 0;
        for (int i = 0; ok && i < o->nsets; i++)
            if (config_set(c, o->sets[i], err, sizeof(err)) != 0)
                ok = 0;
        if (ok && config_validate(c, d->size, need_data, err, sizeof(err)) != 0)
            ok = 0;
        if (!ok)
            err_printf("%s", err);
    }
    dist_bcast_bytes(d, &ok, sizeof(ok));
    if (!ok)
        return -1;
    dist_bcast_bytes(d, c, sizeof(*c));
    return 0;
}
