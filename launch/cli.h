// provides: the subcommands of the canary executable and the shared option parsing.
#ifndef CANARY_LAUNCH_CLI_H
#define CANARY_LAUNCH_CLI_H

#include "dist/dist.h"
#include "launch/config.h"

// Options common to commands that read a config.
struct cli_config_opts {
    const char *config_path; // --config, may be NULL (defaults only)
    const char *sets[256];   // --set values in order
    int nsets;
};

// Consumes "--config F" or "--set k=v" at argv[*i]; returns 1 if it did, 0 if argv[*i] is
// something else, -1 on a missing argument (message printed).
int cli_take_config_opt(struct cli_config_opts *o, int argc, char **argv, int *i);

// Rank 0 builds the config from defaults, the file and the --set list, validates it and
// broadcasts it; every rank returns 0 with the same config, or -1 after rank 0 printed why.
int cli_load_config(struct config *c, const struct cli_config_opts *o, struct dist_ctx *d,
                    int need_data);

int cmd_train(int argc, char **argv, struct dist_ctx *d);
int cmd_tokenize(int argc, char **argv, struct dist_ctx *d);
int cmd_bench(int argc, char **argv, struct dist_ctx *d);
int cmd_config(int argc, char **argv, struct dist_ctx *d);
int cmd_sweep(int argc, char **argv, struct dist_ctx *d);
int cmd_eval(int argc, char **argv, struct dist_ctx *d);

#endif
