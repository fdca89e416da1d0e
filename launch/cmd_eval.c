// `canary eval`: the loss of a checkpoint on held-out batches or on the start of a token file.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launch/checkpoint.h"
#include "launch/cli.h"
#include "launch/config_keys.h"
#include "launch/train.h"
#include "util/error.h"

static void eval_usage(FILE *f)
{
    fprintf(f, "usage: [mpirun -np N] canary eval --checkpoint FILE [--data FILE] [--batches N]\n"
               "                                  [--set section.key=value ...]\n"
               "\n"
               "Prints the loss (ce + z, and each part) of a checkpoint at full precision:\n"
               "  without --data, on the run's fixed held-out batches (train.eval_batches of\n"
               "  train.batch_size sequences, as during training);\n"
               "  with --data FILE, on the first N x train.batch_size sequences of FILE in order\n"
               "  (sequence k is tokens k*T .. k*T+T), N = --batches (default 1).\n"
               "The model and batch settings come from the checkpoint's config; --set may change\n"
               "train.threads, train.eval_batches, train.precision, train.bf16_attention or\n"
               "train.matmul_backend, no other key.\n");
}

struct eval_args {
    struct cli_config_opts opts;
    const char *ckpt, *data;
    long batches; // 0: the checkpoint's train.eval_batches (1 with --data)
};

// The command line. Returns -1 to go on, else the exit code.
static int eval_parse(int argc, char **argv, struct dist_ctx *d, struct eval_args *a)
{
    for (int i = 1; i < argc; i++) {
        enum cli_opt t = cli_take_opt(&a->opts, argc, argv, &i, eval_usage, d);
        if (t == CLI_TAKEN && a->opts.config_path) {
            err_printf("eval: the config comes from the checkpoint (no --config)");
            return 1;
        }
        if (t == CLI_TAKEN)
            continue;
        if (t != CLI_NOT_MINE)
            return t == CLI_BAD;
        if (strcmp(argv[i], "--checkpoint") == 0 && i + 1 < argc) {
            a->ckpt = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "--data") == 0 && i + 1 < argc) {
            a->data = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "--batches") == 0 && i + 1 < argc) {
            char *end = NULL;
            a->batches = strtol(argv[++i], &end, 10);
            if (*end != '\0' || a->batches < 1 || a->batches > 1000000) {
                err_printf("eval: --batches takes an integer in [1, 1000000]");
                return 1;
            }
            continue;
        }
        return cli_unexpected("eval", argv[i], eval_usage, d);
    }
    if (!a->ckpt) {
        if (d->rank == 0) {
            err_printf("eval: --checkpoint FILE is required");
            eval_usage(stderr);
        }
        return 1;
    }
    return -1;
}

// Rank 0 reads the checkpoint's config, applies --set, --data and --batches, validates it;
// every rank receives it. 0, or -1 on every rank.
static int eval_config(const struct eval_args *a, struct dist_ctx *d, struct config *cfg)
{
    char err[1400];
    int ok = 1;
    if (d->rank == 0) {
        ok = ckpt_read_config(a->ckpt, cfg, err, sizeof(err)) == 0;
        for (int i = 0; ok && i < a->opts.nsets; i++)
            ok = config_set(cfg, a->opts.sets[i], err, sizeof(err)) == 0;
        // any other key would change what is evaluated: the loss would not be the checkpoint's
        static const char *const may[] = {"train.threads", "train.eval_batches", "train.precision",
                                          "train.bf16_attention", "train.matmul_backend"};
        for (int k = 0; ok && k < config_key_count; k++) {
            if (strcmp(cfg->origin[k], "--set") != 0) // origin[] follows the key table
                continue;
            char key[128];
            snprintf(key, sizeof(key), "%s.%s", config_keys[k].section, config_keys[k].key);
            int allowed = 0;
            for (size_t j = 0; j < sizeof(may) / sizeof(may[0]); j++)
                allowed |= !strcmp(key, may[j]);
            if (!allowed) {
                snprintf(err, sizeof(err),
                         "eval: --set %s: only train.threads, train.eval_batches, "
                         "train.precision, train.bf16_attention and train.matmul_backend may "
                         "differ from the checkpoint's config",
                         key);
                ok = 0;
            }
        }
        if (ok && a->data) {
            // The whole file is the held-out split: evaluation sequence k starts at k*T.
            snprintf(cfg->data.train, sizeof(cfg->data.train), "%s", a->data);
            snprintf(cfg->data.val, sizeof(cfg->data.val), "%s", a->data);
            cfg->train.eval_batches = (int)(a->batches ? a->batches : 1);
        } else if (ok && a->batches) {
            cfg->train.eval_batches = (int)a->batches;
        }
        cfg->probes.enabled = 0;
        if (ok)
            ok = config_validate(cfg, d->size, 1, err, sizeof(err)) == 0;
        if (!ok)
            err_printf("%s", err);
    }
    dist_bcast_bytes(d, &ok, sizeof(ok));
    if (!ok)
        return -1;
    dist_bcast_bytes(d, cfg, sizeof(*cfg));
    return 0;
}

// The run with the checkpoint's weights, and enough held-out data for the batches asked for.
// 0, or -1 on every rank (nothing left allocated).
static int eval_start(struct run *run, const struct config *cfg, const struct eval_args *a,
                      struct dist_ctx *d)
{
    char err[1400];
    int ok = run_init(run, cfg, d, 0, err, sizeof(err)) == 0;
    if (ok && ckpt_read(run, a->ckpt, err, sizeof(err)) != 0) {
        run_free(run);
        ok = 0;
    }
    if (!ok)
        err_printf("%s", err);
    if (!dist_all_ok(d, ok)) {
        if (ok)
            run_free(run);
        return -1;
    }
    if (a->data &&
        (size_t)run->eval_chunks * run->micro_batch > sampler_eval_sequences(&run->sampler)) {
        if (d->rank == 0)
            err_printf("eval: '%s' holds %zu sequences of %d tokens, fewer than the %ld x %d "
                       "asked for",
                       a->data, sampler_eval_sequences(&run->sampler), cfg->model.seq_len,
                       (long)cfg->train.eval_batches, cfg->train.batch_size);
        run_free(run);
        return -1;
    }
    return 0;
}

int cmd_eval(int argc, char **argv, struct dist_ctx *d)
{
    struct eval_args a;
    struct config cfg;
    struct run run;
    memset(&a, 0, sizeof(a));
    int rc = eval_parse(argc, argv, d, &a);
    if (rc >= 0)
        return rc;
    if (eval_config(&a, d, &cfg) != 0 || eval_start(&run, &cfg, &a, d) != 0)
        return 1;
    struct loss_parts lp;
    train_eval(&run, &lp);
    if (d->rank == 0)
        printf("checkpoint %s (step %ld): loss %.17g ce %.17g z %.17g on %d sequences of %d "
               "tokens\n",
               a.ckpt, run.step, lp.total, lp.ce, lp.z,
               cfg.train.eval_batches * cfg.train.batch_size, cfg.model.seq_len);
    run_free(&run);
    return isfinite(lp.total) ? 0 : 3;
}
