// `canary tokenize` and `canary config`: small tools around the trainer.
#include <stdio.h>
#include <string.h>

#include "data/tokens.h"
#include "launch/cli.h"
#include "util/error.h"

int cmd_tokenize(int argc, char **argv, struct dist_ctx *d)
{
    char err[1024];
    size_t count = 0;
    if (argc == 2 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        printf("usage: canary tokenize IN.txt OUT.bin\n"
               "\n"
               "Byte-level tokenisation (vocab 256: one token per byte) into llm.c's .bin layout\n"
               "(256 x int32 header, magic 20240520, version 1, then uint16 tokens). OUT.bin is\n"
               "written through a temporary file, so a failure leaves nothing behind.\n");
        return 0;
    }
    if (argc != 3) {
        err_printf("tokenize: expected IN.txt OUT.bin (see 'canary tokenize --help')");
        return 1;
    }
    if (d->rank != 0)
        return 0;
    if (tokens_from_text(argv[1], argv[2], &count, err, sizeof(err)) != 0) {
        err_printf("%s", err);
        return 1;
    }
    printf("wrote %zu tokens to %s\n", count, argv[2]);
    return 0;
}

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
