// provides: the subcommands of the canary executable and the shared option parsing.
#ifndef CANARY_LAUNCH_CLI_H
#define CANARY_LAUNCH_CLI_H

#include <stdio.h>

#include "dist/dist.h"
#include "launch/config.h"

// Options common to commands that read a config.
struct cli_config_opts {
    const char *config_path; // --config, may be NULL (defaults only)
    const char *sets[256];   // --set values in order
    int nsets;
};

// The options every config-reading command shares, at argv[*i]: --config, --set and -h/--help
// (usage on stdout, rank 0). What a command's argument loop does with the answer:
//   CLI_TAKEN: continue;  CLI_NOT_MINE: try the command's own options;
//   CLI_HELP: return 0;   CLI_BAD (message printed): return 1.
enum cli_opt { CLI_NOT_MINE, CLI_TAKEN, CLI_HELP, CLI_BAD };
typedef void (*cli_usage_fn)(FILE *f);
enum cli_opt cli_take_opt(struct cli_config_opts *o, int argc, char **argv, int *i,
                          cli_usage_fn usage, const struct dist_ctx *d);
// "CMD: unexpected argument 'ARG'" and the usage on stderr (rank 0); returns 1, the exit code.
int cli_unexpected(const char *cmd, const char *arg, cli_usage_fn usage, const struct dist_ctx *d);

// Rank 0 builds the config from defaults, the file and the --set list, validates it and
// broadcasts it; every rank returns 0 with the same config, or -1 after rank 0 printed why.
int cli_load_config(struct config *c, const struct cli_config_opts *o, struct dist_ctx *d,
                    int need_data);

int cmd_train(int argc, char **argv, struct dist_ctx *d);
int cmd_tokenize(int argc, char **argv, struct dist_ctx *d);
int cmd_decode(int argc, char **argv, struct dist_ctx *d);
int cmd_bench(int argc, char **argv, struct dist_ctx *d);
int cmd_config(int argc, char **argv, struct dist_ctx *d);
int cmd_sweep(int argc, char **argv, struct dist_ctx *d);
int cmd_eval(int argc, char **argv, struct dist_ctx *d);
int cmd_replay(int argc, char **argv, struct dist_ctx *d);

#endif
