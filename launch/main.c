// canary: command-line entry point. Dispatches to the subcommands in launch/cmd_*.c.
#include <stdio.h>
#include <string.h>

#include "dist/dist.h"
#include "launch/cli.h"
#include "model/blas_core.h"
#include "util/fpenv.h"

#ifndef CANARY_GIT_SHA
#define CANARY_GIT_SHA "unknown"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "canary — a trainer for small-scale proxy studies of training instabilities\n"
            "\n"
            "usage: [mpirun -np N] canary COMMAND [options]\n"
            "\n"
            "commands:\n"
            "  train     train a model from a config file\n"
            "  sweep     train every point of a [sweep] grid, by groups of ranks, in one mpirun\n"
            "  eval      the loss of a checkpoint on held-out data or a token file\n"
            "  replay    rerun a spike of a run bit for bit and try counterfactuals on it\n"
            "  tokenize  turn a text file into a token file (byte-level, or BPE with --vocab N)\n"
            "  decode    turn a token file (or token ids) back into text\n"
            "  bench     time training steps on random tokens (tokens/s, %% of sgemm peak, "
            "memory)\n"
            "  config    print the resolved config, or the key reference (--markdown)\n"
            "\n"
            "options:\n"
            "  -h, --help     this help; 'canary COMMAND --help' for a command's options\n"
            "  --version      print the version\n"
            "\n"
            "Configuration keys: docs/config.md. Exit codes: 0 success, 1 bad input, 2 I/O\n"
            "failure during a run, 3 the loss or gradient became non-finite, 4 stopped by a\n"
            "signal (SIGTERM, SIGINT, SIGUSR1/2) after writing a checkpoint, 5 (replay) the\n"
            "replay did not reproduce the run.\n");
}

int main(int argc, char **argv)
{
    struct dist_ctx dist;
    int rc = 1;
    if (argc < 2) {
        usage(stderr);
        return 1;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("canary %s\n", CANARY_GIT_SHA);
        return 0;
    }
    // Before MPI and any BLAS call: the subnormal flush (threads made later inherit it), then the
    // BLAS core (this may execute the program again with OPENBLAS_CORETYPE set).
    fpenv_flush_subnormals();
    blas_core_select(argv);
    if (dist_init(&dist, &argc, &argv) != 0) {
        fprintf(stderr, "canary: MPI initialisation failed\n");
        return 1;
    }
    if (strcmp(argv[1], "train") == 0)
        rc = cmd_train(argc - 1, argv + 1, &dist);
    else if (strcmp(argv[1], "tokenize") == 0)
        rc = cmd_tokenize(argc - 1, argv + 1, &dist);
    else if (strcmp(argv[1], "decode") == 0)
        rc = cmd_decode(argc - 1, argv + 1, &dist);
    else if (strcmp(argv[1], "eval") == 0)
        rc = cmd_eval(argc - 1, argv + 1, &dist);
    else if (strcmp(argv[1], "sweep") == 0)
        rc = cmd_sweep(argc - 1, argv + 1, &dist);
    else if (strcmp(argv[1], "replay") == 0)
        rc = cmd_replay(argc - 1, argv + 1, &dist);
    else if (strcmp(argv[1], "bench") == 0)
        rc = cmd_bench(argc - 1, argv + 1, &dist);
    else if (strcmp(argv[1], "config") == 0)
        rc = cmd_config(argc - 1, argv + 1, &dist);
    else {
        if (dist.rank == 0) {
            fprintf(stderr, "canary: unknown command '%s'\n\n", argv[1]);
            usage(stderr);
        }
        rc = 1;
    }
    dist_free(&dist);
    return rc;
}
