// `canary sweep`: every point of a [sweep] grid trained once, by groups of ranks, in one mpirun.
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "launch/cli.h"
#include "launch/rundir.h"
#include "launch/stop.h"
#include "launch/sweep.h"
#include "launch/train.h"
#include "util/error.h"

static void sweep_usage(FILE *f)
{
    fprintf(f,
            "usage: mpirun -np N canary sweep --config STUDY.ini [--set section.key=value ...]\n"
            "                                  [--out runs/NAME]\n"
            "\n"
            "Trains every point of the grid in the config's [sweep] section, each once:\n"
            "\n"
            "  [sweep]\n"
            "  optim.lr = 3e-4, 1e-3, 3e-3     ; any config key, comma-separated values\n"
            "  model.qk_norm = true, false     ; the grid is the product of the lists\n"
            "  ranks_per_run = 1               ; ranks that train one run together\n"
            "\n"
            "The N ranks form N / ranks_per_run groups; runs are handed to groups by a balanced\n"
            "static plan (largest estimated cost first, to the least loaded group). Each run\n"
            "writes runs/NAME/<id>/ (config.ini, log.txt, metrics.tsv, probes.h5, ckpt/);\n"
            "--set applies to every run (a swept key is refused there); runs/NAME/index.tsv gets\n"
            "a row per run as it finishes (id, swept values, status ok/diverged/failed, steps,\n"
            "l0, final eval loss); diverged means the loss became non-finite or the final eval\n"
            "loss is above l0, the loss at initialisation. A diverged or failed run never stops\n"
            "the sweep. Exit code 0 when every run finished (ok or diverged), 2 when some\n"
            "failed, 1 on bad input.\n");
}

static int dir_is_empty(const char *path)
{
    DIR *dir = opendir(path);
    struct dirent *e = NULL;
    int empty = 1;
    if (!dir)
        return 0; // a file, or unreadable: not a usable empty directory
    while ((e = readdir(dir)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
            empty = 0;
    closedir(dir);
    return empty;
}

// Rank 0: the study config, the grid, the output directory and its index. Returns 0 or -1
// (message printed).
static int sweep_prepare(const struct cli_config_opts *opts, const char *out, int world,
                         struct config *base, struct sweep_plan *plan)
{
    char err[1400], path[CONFIG_PATH_MAX + 32];
    struct stat st;
    config_defaults(base);
    if (config_load_file(base, opts->config_path, err, sizeof(err)) != 0)
        goto fail;
    for (int i = 0; i < opts->nsets; i++)
        if (config_set(base, opts->sets[i], err, sizeof(err)) != 0)
            goto fail;
    for (int k = 0; k < base->sweep.nkeys; k++) { // the grid would override it without a word
        const char *origin = config_origin(base, base->sweep.key[k]);
        if (origin && !strcmp(origin, "--set")) {
            snprintf(
                err, sizeof(err), "--set %s: %s is swept in %s line %d (change its values there)",
                base->sweep.key[k], base->sweep.key[k], opts->config_path, base->sweep.line[k]);
            goto fail;
        }
    }
    if (world % base->sweep.ranks_per_run != 0) {
        snprintf(err, sizeof(err),
                 "sweep.ranks_per_run = %d does not divide the %d ranks of this job (use a "
                 "multiple of it in mpirun -np)",
                 base->sweep.ranks_per_run, world);
        goto fail;
    }
    if (sweep_expand(base, plan, err, sizeof(err)) != 0)
        goto fail;
    // Every distinct data file must load before any run starts.
    for (int i = 0; i < plan->n; i++) {
        const struct config *c = &plan->pts[i].cfg;
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = strcmp(plan->pts[j].cfg.data.train, c->data.train) == 0 &&
                   strcmp(plan->pts[j].cfg.data.val, c->data.val) == 0 &&
                   plan->pts[j].cfg.model.vocab == c->model.vocab;
        struct token_file tf;
        if (!seen) {
            if (tokens_open(&tf, c->data.train, c->model.vocab, err, sizeof(err)) != 0)
                goto fail;
            tokens_close(&tf);
            if (c->data.val[0]) {
                if (tokens_open(&tf, c->data.val, c->model.vocab, err, sizeof(err)) != 0)
                    goto fail;
                tokens_close(&tf);
            }
        }
    }
    if (stat(out, &st) == 0 && !dir_is_empty(out)) {
        snprintf(err, sizeof(err),
                 "sweep output '%s' already exists and is not empty; give a new --out (sweeps "
                 "do not resume)",
                 out);
        goto fail;
    }
    if (rundir_create(out, err, sizeof(err)) != 0)
        goto fail;
    snprintf(path, sizeof(path), "%s/index.tsv", out);
    if (sweep_index_create(path, base, err, sizeof(err)) != 0)
        goto fail;
    return 0;
fail:
    err_printf("%s", err);
    return -1;
}

// The command line and the output directory (the same on every rank). Returns -1 to go on,
// else the exit code.
static int sweep_parse(int argc, char **argv, struct dist_ctx *d, struct cli_config_opts *opts,
                       char *out, size_t outlen)
{
    const char *out_arg = NULL;
    for (int i = 1; i < argc; i++) {
        enum cli_opt t = cli_take_opt(opts, argc, argv, &i, sweep_usage, d);
        if (t == CLI_TAKEN)
            continue;
        if (t != CLI_NOT_MINE)
            return t == CLI_BAD;
        if (strcmp(argv[i], "--out") == 0 && i + 1 < argc) {
            out_arg = argv[++i];
            continue;
        }
        return cli_unexpected("sweep", argv[i], sweep_usage, d);
    }
    if (!opts->config_path) {
        if (d->rank == 0)
            err_printf("sweep: --config STUDY.ini is required");
        return 1;
    }
    if (out_arg && strlen(out_arg) > RUNDIR_PATH_MAX - SWEEP_ID_MAX) {
        if (d->rank == 0)
            err_printf("sweep: the output path is longer than %d characters",
                       RUNDIR_PATH_MAX - SWEEP_ID_MAX);
        return 1;
    }
    if (out_arg)
        snprintf(out, outlen, "%s", out_arg);
    else
        rundir_default_name(out, outlen, opts->config_path);
    dist_bcast_bytes(d, out, outlen);
    return -1;
}

// Rank 0 reads the study and expands its grid; every rank receives the base config and the
// points. 0, or -1 (the error was printed) on every rank.
static int sweep_share_plan(const struct cli_config_opts *opts, const char *out, struct dist_ctx *d,
                            struct config *base, struct sweep_plan *plan)
{
    int ok = 1, n = 0;
    if (d->rank == 0)
        ok = sweep_prepare(opts, out, d->size, base, plan) == 0;
    dist_bcast_bytes(d, &ok, sizeof(ok));
    if (!ok)
        return -1;
    dist_bcast_bytes(d, base, sizeof(*base));
    n = plan->n;
    dist_bcast_bytes(d, &n, sizeof(n));
    if (d->rank != 0) {
        plan->pts = xcalloc((size_t)n, sizeof(*plan->pts));
        plan->n = n;
    }
    dist_bcast_bytes(d, plan->pts, (size_t)n * sizeof(*plan->pts));
    return 0;
}

// One point on its rank group: train it, append its index row (group rank 0), and return its
// status: ok, diverged (stopped on a non-finite loss, or ended worse than at initialisation:
// Wortsman et al. count both as l0 in the LR sensitivity), stopped or failed.
static const char *sweep_run_point(const struct sweep_point *pt, const struct config *base,
                                   struct dist_ctx *group, const char *out, const char *index)
{
    struct run run;
    char dir[CONFIG_PATH_MAX + SWEEP_ID_MAX + 2], err[1024];
    const char *status = "failed";
    snprintf(dir, sizeof(dir), "%s/%s", out, pt->id);
    int init_ok = run_init(&run, &pt->cfg, group, 0, err, sizeof(err)) == 0;
    if (!init_ok)
        err_printf("sweep run %s: %s", pt->id, err);
    if (!dist_all_ok(group, init_ok)) {
        if (init_ok)
            run_free(&run);
        if (group->rank == 0)
            sweep_index_append(index, base, pt, status, 0, NAN, NAN);
        return status;
    }
    run.tag = pt->id;
    run.quiet = 1;
    int trc = train_run(&run, dir);
    if (trc == TRAIN_EXIT_NONFINITE || (trc == TRAIN_EXIT_OK && !(run.final_eval <= run.l0)))
        status = "diverged";
    else if (trc == TRAIN_EXIT_OK)
        status = "ok";
    else if (trc == TRAIN_EXIT_STOPPED)
        status = "stopped";
    if (group->rank == 0 &&
        sweep_index_append(index, base, pt, status, run.step, run.l0, run.final_eval) != 0)
        err_printf("sweep: cannot append to '%s'", index);
    run_free(&run);
    return status;
}

int cmd_sweep(int argc, char **argv, struct dist_ctx *d)
{
    struct cli_config_opts opts;
    struct sweep_plan plan;
    struct dist_ctx group;
    char out[CONFIG_PATH_MAX], index[CONFIG_PATH_MAX + 32], err[1024];
    memset(&opts, 0, sizeof(opts));
    memset(&plan, 0, sizeof(plan));
    int rc = sweep_parse(argc, argv, d, &opts, out, sizeof(out));
    if (rc >= 0)
        return rc;
    struct config *base = xcalloc(1, sizeof(*base));
    if (sweep_share_plan(&opts, out, d, base, &plan) != 0) {
        free(base);
        return 1;
    }
    int rpr = base->sweep.ranks_per_run;
    sweep_assign(&plan, d->size / rpr); // the same plan on every rank
    if (dist_split(d, d->rank / rpr, &group) != 0)
        FATAL("MPI_Comm_split failed");
    snprintf(index, sizeof(index), "%s/index.tsv", out);
    if (d->rank == 0)
        printf("canary sweep: %d runs, %d group(s) of %d rank(s); index %s\n", plan.n, plan.ngroups,
               rpr, index);
    fflush(stdout);

    int failed = 0, stopped = 0;
    stop_install();
    for (int i = 0; i < plan.n; i++) {
        const struct sweep_point *pt = &plan.pts[i];
        if (pt->group != d->rank / rpr)
            continue;
        const char *status = sweep_run_point(pt, base, &group, out, index);
        failed += strcmp(status, "failed") == 0;
        if (group.rank == 0) {
            printf("[%s] %s\n", pt->id, status);
            fflush(stdout);
        }
        if (strcmp(status, "stopped") == 0) { // preempted: this group starts no further run
            stopped = 1;
            break;
        }
    }
    dist_free(&group);
    double any_failed = dist_max_f64(d, failed), any_stopped = dist_max_f64(d, stopped);
    dist_barrier(d);
    if (d->rank == 0) {
        if (sweep_index_finish(index, err, sizeof(err)) != 0)
            err_printf("%s", err);
        if (any_stopped > 0)
            printf("sweep stopped by a signal: runs not started are missing from %s\n", index);
        else
            printf("sweep done: %d runs; index %s\n", plan.n, index);
    }
    rc = any_failed > 0 ? 2 : any_stopped > 0 ? TRAIN_EXIT_STOPPED : 0;
    sweep_plan_free(&plan);
    free(base);
    return rc;
}
