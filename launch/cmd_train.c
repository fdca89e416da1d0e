// `canary train`: load and validate the config, load data, train, write the run directory.
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "launch/checkpoint.h"
#include "launch/cli.h"
#include "launch/rundir.h"
#include "launch/stop.h"
#include "launch/train.h"
#include "util/error.h"

static void train_usage(FILE *f)
{
    fprintf(f,
            "usage: [mpirun -np N] canary train --config FILE [--set section.key=value ...]\n"
            "                                   [--out runs/NAME]\n"
            "       [mpirun -np N] canary train --resume runs/NAME [--set section.key=value ...]\n"
            "\n"
            "Trains the model the config describes and writes runs/NAME/: config.ini (the\n"
            "resolved config), log.txt (everything printed), metrics.tsv (per-step loss\n"
            "parts, lr, gradient norm, throughput and the evaluations, at full precision),\n"
            "probes.h5 (the probes, readable while the run is live) and ckpt/ (checkpoints).\n"
            "\n"
            "  --config FILE          INI config (keys: docs/config.md); data.train must be set\n"
            "  --set section.key=v    override a key; repeatable, applied after the file\n"
            "  --out DIR              run directory (default runs/<config>-<date>-<time>);\n"
            "                         must not already hold a run\n"
            "  --resume DIR           continue the run in DIR from its newest checkpoint, with\n"
            "                         its config.ini and any --set (e.g. more train.steps); a\n"
            "                         changed value is named in the header, and the config the\n"
            "                         earlier steps ran with kept as config.ini.to_step_N\n"
            "\n"
            "Prints a progress line every train.log_every steps and the held-out loss at step\n"
            "0, every train.eval_every steps and at the end.\n"
            "SIGTERM, SIGINT, SIGUSR1 or SIGUSR2 (preemption, Ctrl-C) to any rank: all ranks stop\n"
            "at the next step boundary, write a checkpoint and flush the probes; continue with\n"
            "--resume. A second such signal kills at once.\n"
            "Exit codes: 0 success, 1 bad input, 2 I/O failure, 3 non-finite loss or gradient,\n"
            "4 stopped by a signal (checkpoint written).\n");
}

// Rank 0 loads the newest checkpoint that reads, going back past corrupt ones (each named);
// the others then load the one it chose. Returns 0, or -1 with err.
static int resume_load(struct run *run, struct dist_ctx *d, const char *dir, char *ckpt,
                       size_t ckptlen, char *err, size_t errlen)
{
    int found = 0, rc = -1;
    if (d->rank == 0) {
        long below = LONG_MAX, step = 0;
        while (ckpt_find_before(dir, below, ckpt, ckptlen, &step) == 0) {
            rc = ckpt_read(run, ckpt, err, errlen);
            if (rc == 0) {
                found = 1;
                break;
            }
            if (rc == -2) // another run's checkpoint: an older one would not fit either
                break;
            err_printf("%s; trying an older checkpoint", err);
            below = step;
        }
        if (!found && rc == -1)
            snprintf(err, errlen, "resume '%s': no checkpoint in %s/ckpt could be read", dir, dir);
    }
    dist_bcast_bytes(d, &found, sizeof(found));
    dist_bcast_bytes(d, ckpt, ckptlen);
    if (!found) {
        if (d->rank != 0)
            err[0] = '\0'; // rank 0 says why
        return -1;
    }
    if (d->rank != 0 && ckpt_read(run, ckpt, err, errlen) != 0)
        return -1;
    return 0;
}

struct train_args {
    struct cli_config_opts opts;
    const char *out_arg, *resume;
    char config_path[CONFIG_PATH_MAX + 16]; // --resume DIR: DIR/config.ini
};

// The command line; --resume DIR stands for --config DIR/config.ini --out DIR. Returns -1 to go
// on, else the exit code.
static int train_parse(int argc, char **argv, struct dist_ctx *d, struct train_args *a)
{
    for (int i = 1; i < argc; i++) {
        enum cli_opt t = cli_take_opt(&a->opts, argc, argv, &i, train_usage, d);
        if (t == CLI_TAKEN)
            continue;
        if (t != CLI_NOT_MINE)
            return t == CLI_HELP ? TRAIN_EXIT_OK : TRAIN_EXIT_INPUT;
        if ((strcmp(argv[i], "--out") == 0 || strcmp(argv[i], "--resume") == 0) && i + 1 == argc) {
            if (d->rank == 0)
                err_printf("train: %s needs an argument", argv[i]);
            return TRAIN_EXIT_INPUT;
        }
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            a->out_arg = argv[++i];
            continue;
        }
        if (strcmp(argv[i], "--resume") == 0 && i + 1 < argc) {
            a->resume = argv[++i];
            continue;
        }
        return cli_unexpected("train", argv[i], train_usage, d);
    }
    if (a->resume) {
        // The run's own resolved config, then --set (e.g. more train.steps).
        if (a->opts.config_path || a->out_arg || strlen(a->resume) > RUNDIR_PATH_MAX) {
            if (d->rank == 0)
                err_printf("train: --resume DIR takes no --config or --out (DIR has both)");
            return TRAIN_EXIT_INPUT;
        }
        snprintf(a->config_path, sizeof(a->config_path), "%s/config.ini", a->resume);
        a->opts.config_path = a->config_path;
        a->out_arg = a->resume;
    }
    if (!a->opts.config_path) {
        if (d->rank == 0) {
            err_printf("train: --config FILE is required");
            train_usage(stderr);
        }
        return TRAIN_EXIT_INPUT;
    }
    return -1;
}

// The run directory: --out, else a name from the config file and rank 0's clock. Refuses an
// occupied directory before anything is loaded (bad input, nothing written); a resume needs a
// checkpoint in it instead (its path into ckpt, on every rank). 0, or -1 on every rank.
static int train_out_dir(const struct train_args *a, struct dist_ctx *d, char *out, size_t outlen,
                         char *ckpt, size_t ckptlen)
{
    char err[1024];
    if (a->out_arg) {
        if (strlen(a->out_arg) > RUNDIR_PATH_MAX) {
            err_printf("train: the run directory path is longer than %d characters",
                       RUNDIR_PATH_MAX);
            return -1;
        }
        snprintf(out, outlen, "%s", a->out_arg);
    } else {
        rundir_default_name(out, outlen, a->opts.config_path);
        dist_bcast_bytes(d, out, outlen); // rank 0's clock names the run
    }
    int ok = 1;
    if (d->rank == 0 && !a->resume)
        ok = rundir_check_free(out, err, sizeof(err)) == 0;
    if (d->rank == 0 && a->resume && ckpt_find_latest(a->resume, ckpt, ckptlen) != 0) {
        snprintf(err, sizeof(err), "resume '%s': no checkpoint in %s/ckpt", a->resume, a->resume);
        ok = 0;
    }
    if (!ok)
        err_printf("%s", err);
    if (!dist_all_ok(d, ok))
        return -1;
    if (a->resume)
        dist_bcast_bytes(d, ckpt, ckptlen);
    return 0;
}

// The run, from its checkpoint when resuming. 0, or -1 on every rank (nothing left allocated).
static int train_start(struct run *run, const struct config *cfg, const struct train_args *a,
                       struct dist_ctx *d, char *ckpt, size_t ckptlen)
{
    char err[1024] = "";
    int ok = run_init(run, cfg, d, 0, err, sizeof(err)) == 0;
    if (ok && a->resume && resume_load(run, d, a->resume, ckpt, ckptlen, err, sizeof(err)) != 0) {
        run_free(run);
        ok = 0;
    }
    if (!ok && err[0])
        err_printf("%s", err);
    if (!dist_all_ok(d, ok)) {
        if (ok)
            run_free(run);
        return -1;
    }
    if (a->resume && run->step >= cfg->train.steps) {
        if (d->rank == 0)
            err_printf("resume '%s': the checkpoint is at step %ld of train.steps = %d; nothing "
                       "to do (raise it with --set train.steps=N)",
                       a->resume, run->step, cfg->train.steps);
        run_free(run);
        return -1;
    }
    return 0;
}

int cmd_train(int argc, char **argv, struct dist_ctx *d)
{
    struct train_args a;
    struct config cfg;
    struct run run;
    char out[CONFIG_PATH_MAX], ckpt[CONFIG_PATH_MAX + 64];
    memset(&a, 0, sizeof(a));
    int rc = train_parse(argc, argv, d, &a);
    if (rc >= 0)
        return rc;
    if (cli_load_config(&cfg, &a.opts, d, 1) != 0 ||
        train_out_dir(&a, d, out, sizeof(out), ckpt, sizeof(ckpt)) != 0 ||
        train_start(&run, &cfg, &a, d, ckpt, sizeof(ckpt)) != 0)
        return TRAIN_EXIT_INPUT;
    stop_install(); // from here a SIGTERM or Ctrl-C ends the run with a checkpoint
    rc = train_run(&run, out);
    run_free(&run);
    return rc;
}
