// `canary config`: the resolved config, or the key reference.
#include <stdio.h>
#include <string.h>

#include "launch/cli.h"
#include "util/error.h"

static void config_usage(FILE *f)
{
    fprintf(f, "usage: canary config [--config FILE] [--set section.key=value ...]\n"
               "       canary config --markdown\n"
               "\n"
               "Prints the resolved config (defaults, then FILE, then --set, validated) as\n"
               "INI, or the reference of every key as markdown (docs/config.md).\n");
}

int cmd_config(int argc, char **argv, struct dist_ctx *d)
{
    struct cli_config_opts opts;
    struct config cfg;
    int markdown = 0;
    memset(&opts, 0, sizeof(opts));
    for (int i = 1; i < argc; i++) {
        enum cli_opt t = cli_take_opt(&opts, argc, argv, &i, config_usage, d);
        if (t == CLI_TAKEN)
            continue;
        if (t != CLI_NOT_MINE)
            return t == CLI_BAD;
        if (strcmp(argv[i], "--markdown") == 0) {
            markdown = 1;
            continue;
        }
        return cli_unexpected("config", argv[i], config_usage, d);
    }
    if (markdown) {
        if (d->rank == 0)
            config_write_markdown(stdout);
        return 0;
    }
    if (cli_load_config(&cfg, &opts, d, 0) != 0)
        return 1;
    if (d->rank == 0)
        config_write(&cfg, stdout);
    return 0;
}
