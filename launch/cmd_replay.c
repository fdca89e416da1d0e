// `canary replay`: rerun a spike of a trained run bit for bit from its checkpoint, then try the
// counterfactual branches (launch/replay.h has the engine). Writes RUN/replay/step_S/.
// nftw (an earlier replay's directory tree, removed with --force) is XSI
#undef _POSIX_C_SOURCE
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <ftw.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launch/checkpoint.h"
#include "launch/cli.h"
#include "launch/replay.h"
#include "launch/rundir.h"
#include "util/error.h"

// Exit codes beyond train's: the replay ran but did not reproduce the run.
enum { REPLAY_EXIT_PARTED = 5 };

static void replay_usage(FILE *f)
{
    fprintf(
        f,
        "usage: [mpirun -np N] canary replay --run DIR --step S [--window K] [--force]\n"
        "                       [--skip-sigma k] [--update-clip-sigma k] [--set train.threads=T]\n"
        "\n"
        "Replays steps S-K .. S+K of the run in DIR (a 'canary train' run directory, or one\n"
        "run of a sweep; S+K at most the run's last step) from its newest checkpoint before\n"
        "step S-K (or from the initial weights, a function of train.seed alone, when every\n"
        "checkpoint is later), with every probe at cadence 1, and checks that each replayed\n"
        "step equals the run's metrics.tsv bit for bit. S may be the step a run stopped at\n"
        "on a non-finite loss (it has no row). Then, from the state just before S, one short\n"
        "run per counterfactual: drop the batch of S, an unseen batch, half the LR at S, the\n"
        "first moments reset, S skipped, and each update guard switched on. Prints which of\n"
        "them bring the loss at S+K to at most the mean + 1 sigma of the K steps before S,\n"
        "and the sequences of batch S with the highest loss.\n"
        "\n"
        "  --run DIR             the run directory (config.ini, metrics.tsv, ckpt/)\n"
        "  --step S              the step to replay, counted from 1 as in metrics.tsv\n"
        "  --window K            steps before and after S (default 20)\n"
        "  --force               replace an earlier replay of S (DIR/replay/step_S)\n"
        "  --skip-sigma k        the skip-step branch's threshold (default 6, as OLMo-core);\n"
        "                        a run that had the guard on replays with its own\n"
        "  --update-clip-sigma k the update-clipping branch's (default 3, as Levanter)\n"
        "  --set train.threads=T threads per rank (the only key that may differ)\n"
        "\n"
        "Run with the rank count the run was trained with (deterministic runs: any power of\n"
        "two). Writes DIR/replay/step_S/: log.txt, metrics.tsv and probes.h5 of the replay,\n"
        "ckpt/ (the state before S), batch.tsv, branches.tsv, summary.tsv, and\n"
        "branch_NAME/ per branch. 'canary-analyze spikes DIR' adds which tensor moved first.\n"
        "A run resumed with other settings replays with the config its steps ran with\n"
        "(DIR/config.ini.to_step_N); a window across such a resume is refused. At another\n"
        "train.threads than the run's the bits differ (OpenBLAS's threaded sgemm): where the\n"
        "replay parts from the run is reported, and not counted as a failure.\n"
        "Exit codes: 0 reproduced (or parted at another thread count), 5 the replay parted\n"
        "from the run (named: a hardware or nondeterminism fault), 1 bad input, 2 I/O failure.\n");
}

struct replay_args {
    struct cli_config_opts opts; // --set only (train.threads)
    const char *run_dir;
    long step, window;
    double skip_sigma, clip_sigma;          // the guard branches' k (0: the peers' default)
    int force;                              // replace an earlier replay of the step
    char config_path[CONFIG_PATH_MAX + 64]; // config.ini, or the one the steps ran with
};

static int parse_number(const char *opt, const char *text, double lo, double hi, double *out,
                        const struct dist_ctx *d)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || *end != '\0' || !(v >= lo && v <= hi)) {
        if (d->rank == 0)
            err_printf("replay: %s takes a number in [%g, %g], not '%s'", opt, lo, hi, text);
        return -1;
    }
    *out = v;
    return 0;
}

// Returns -1 to go on, else the exit code.
static int replay_parse(int argc, char **argv, struct dist_ctx *d, struct replay_args *a)
{
    double v = 0.0;
    a->window = 20;
    a->step = -1;
    for (int i = 1; i < argc; i++) {
        enum cli_opt t = cli_take_opt(&a->opts, argc, argv, &i, replay_usage, d);
        if (t == CLI_TAKEN && a->opts.config_path) {
            if (d->rank == 0)
                err_printf("replay: the config is the run's own (no --config)");
            return 1;
        }
        if (t == CLI_TAKEN)
            continue;
        if (t != CLI_NOT_MINE)
            return t == CLI_BAD;
        int more = i + 1 < argc, bad = 0;
        if (strcmp(argv[i], "--run") == 0 && more)
            a->run_dir = argv[++i];
        else if (strcmp(argv[i], "--step") == 0 && more)
            bad = parse_number("--step", argv[++i], 1, 1e15, &v, d) || (a->step = (long)v, 0);
        else if (strcmp(argv[i], "--window") == 0 && more)
            bad = parse_number("--window", argv[++i], 1, 100000, &v, d) || (a->window = (long)v, 0);
        else if (strcmp(argv[i], "--force") == 0)
            a->force = 1;
        else if (strcmp(argv[i], "--skip-sigma") == 0 && more)
            bad = parse_number("--skip-sigma", argv[++i], 0.01, 1e6, &a->skip_sigma, d);
        else if (strcmp(argv[i], "--update-clip-sigma") == 0 && more)
            bad = parse_number("--update-clip-sigma", argv[++i], 0.01, 1e6, &a->clip_sigma, d);
        else
            return cli_unexpected("replay", argv[i], replay_usage, d);
        if (bad)
            return 1;
    }
    // the run's own config, but for the thread count: any other key would change the bits
    for (int k = 0; k < a->opts.nsets; k++) {
        if (strncmp(a->opts.sets[k], "train.threads=", 14) != 0) {
            if (d->rank == 0)
                err_printf("replay: --set %s: only train.threads may differ from the run (any "
                           "other key changes what is replayed)",
                           a->opts.sets[k]);
            return 1;
        }
    }
    if (!a->run_dir || a->step < 1) {
        if (d->rank == 0) {
            err_printf("replay: --run DIR and --step S are required");
            replay_usage(stderr);
        }
        return 1;
    }
    if (strlen(a->run_dir) > RUNDIR_PATH_MAX - 64) {
        if (d->rank == 0)
            err_printf("replay: the run directory path is too long");
        return 1;
    }
    snprintf(a->config_path, sizeof(a->config_path), "%s/config.ini", a->run_dir);
    a->opts.config_path = a->config_path;
    return -1;
}

// The replay proper: from the start state through p->end, checked against the run; the state
// before S written to dir/ckpt (p->have_state), and batch S's sequences ranked. Returns 0, 1
// (stopped on a non-finite step, before or after S), or -1 (err; I/O).
static int main_replay(struct run *r, struct replay_plan *p, const char *dir,
                       struct replay_out *out, struct replay_trace *tr, long *parted, char *what,
                       size_t whatlen, char *err, size_t errlen)
{
    const struct config *c = &r->cfg;
    int rank0 = r->dist->rank == 0, rc;
    rc = replay_steps(r, p->S - 1, out, tr, p->rows, p->nrows, parted, what, whatlen, err, errlen);
    if (rc != 0)
        return rc;
    p->above_S = r->probes->above_threshold;
    // the state before S, on disk: the branches start from it (and so can a researcher)
    int ok = !rank0 || ckpt_write(r, dir, err, errlen) == 0;
    if (!dist_all_ok(r->dist, ok))
        return -1;
    p->have_state = 1;
    int B = c->train.batch_size, T = c->model.seq_len;
    double *loss = xcalloc((size_t)B, sizeof(double));
    int *tokens = xcalloc((size_t)B * (T + 1), sizeof(int));
    replay_batch_losses(r, loss, tokens);
    ok = !rank0 || replay_report_batch(dir, out->log, c, &r->train_file, p->S, loss, tokens, 5, err,
                                       errlen) == 0;
    free(loss);
    free(tokens);
    if (!dist_all_ok(r->dist, ok))
        return -1;
    return replay_steps(r, p->end, out, tr, p->rows, p->nrows, parted, what, whatlen, err, errlen);
}

// Fills a guard branch's window with the values of the steps before S (the newest
// optim.guard_window): the run's own losses and gradient norms for skip-step, the replayed
// update norms for update clipping. A window shorter than optim.guard_min lowers it to what
// is there (at least 8). Returns the values used, or 0 (note says why) when too few.
static int fill_guard(struct run *b, int which, const struct replay_plan *p,
                      const struct replay_trace *tr, char *note, size_t notelen)
{
    int W = b->cfg.optim.guard_window, n = 0;
    double *x = xcalloc((size_t)W, sizeof(double)), *g = xcalloc((size_t)W, sizeof(double));
    for (long k = p->S - W; k < p->S; k++) {
        if (which == RB_GUARD_SKIP && k >= 1 && p->rows[k].present && isfinite(p->rows[k].loss) &&
            isfinite(p->rows[k].grad_norm)) {
            x[n] = p->rows[k].loss;
            g[n++] = p->rows[k].grad_norm;
        }
        long i = k - tr->first;
        if (which == RB_GUARD_CLIP && i >= 0 && i < tr->n && isfinite(tr->update_norm[i]))
            x[n++] = tr->update_norm[i];
    }
    if (n < 8) {
        snprintf(note, notelen, "not armed: %d step(s) before S to fill its window, needs 8", n);
        n = 0;
    } else {
        if (which == RB_GUARD_SKIP) {
            guard_window_set(&b->guard_loss, x, n);
            guard_window_set(&b->guard_gnorm, g, n);
        } else {
            guard_window_set(&b->guard_unorm, x, n);
        }
        if (n < b->cfg.optim.guard_min)
            b->cfg.optim.guard_min = n;
        snprintf(note, notelen, "%g sigma over the %d steps before S",
                 which == RB_GUARD_SKIP ? b->cfg.optim.skip_sigma : b->cfg.optim.update_clip_sigma,
                 n);
    }
    free(x);
    free(g);
    return n;
}

// One counterfactual from the state before S (dir/ckpt) through p->end, into dir/branch_NAME.
// Returns 0 (res filled), or -1 (err; I/O or the state unreadable).
static int run_branch(const struct config *cfg, struct dist_ctx *d, const struct replay_args *a,
                      const struct replay_plan *p, const char *dir, const struct replay_trace *tr,
                      int id, struct replay_branch_result *res, char *err, size_t errlen)
{
    static const enum branch_kind kinds[RB_COUNT] = {BRANCH_DROP, BRANCH_UNSEEN, BRANCH_HALF_LR,
                                                     BRANCH_RESET_M, BRANCH_SKIP};
    struct config bc = *cfg;
    char bdir[CONFIG_PATH_MAX], state[CONFIG_PATH_MAX + 64];
    res->name = replay_branch_names[id];
    res->what = replay_branch_what[id];
    if (id == RB_GUARD_SKIP && cfg->optim.skip_sigma > 0.0) {
        snprintf(res->note, sizeof(res->note), "the run had it on: the replay is this branch");
        return 0;
    }
    if (id == RB_GUARD_CLIP && cfg->optim.update_clip_sigma > 0.0) {
        snprintf(res->note, sizeof(res->note), "the run had it on: the replay is this branch");
        return 0;
    }
    if (id == RB_GUARD_SKIP)
        bc.optim.skip_sigma = a->skip_sigma > 0.0 ? a->skip_sigma : 6.0;
    if (id == RB_GUARD_CLIP)
        bc.optim.update_clip_sigma = a->clip_sigma > 0.0 ? a->clip_sigma : 3.0;
    snprintf(state, sizeof(state), "%s/ckpt/step_%08ld.h5", dir, p->S - 1);
    snprintf(bdir, sizeof(bdir), "%s/branch_%s", dir, res->name);
    struct run b;
    if (run_init(&b, &bc, d, 0, err, errlen) != 0)
        return -1;
    b.tag = res->name; // its events say which branch they are from
    if (!dist_all_ok(d, ckpt_read(&b, state, err, errlen) == 0)) {
        run_free(&b);
        return -1;
    }
    // every rank decides alike: the plan and the trace are the same on all
    if (id < RB_GUARD_SKIP)
        b.branch = (struct run_branch){kinds[id], p->S - 1};
    else if (!fill_guard(&b, id, p, tr, res->note, sizeof(res->note))) {
        run_free(&b);
        return 0;
    }
    struct replay_out out = {NULL, NULL};
    int ok = d->rank != 0 || replay_open_dir(bdir, &b.cfg, &out, 0, err, errlen) == 0;
    ok = ok && run_probes_open(&b, bdir, err, errlen) == 0;
    if (ok)
        replay_seed_probes(&b, p, p->S, p->above_S);
    int rc = -1;
    if (dist_all_ok(d, ok)) {
        struct replay_trace bt;
        replay_trace_init(&bt, p->S, p->end);
        long parted = 0;
        char what[8];
        rc = replay_steps(&b, p->end, &out, &bt, NULL, 0, &parted, what, sizeof(what), err, errlen);
        if (rc >= 0) {
            res->ran = 1;
            replay_branch_summarise(res, &bt, p->pre_mean, p->pre_sd);
            if (rc == 1)
                snprintf(res->note, sizeof(res->note), "diverged: non-finite at step %ld",
                         b.step + 1);
            rc = 0;
        }
        replay_trace_free(&bt);
        if (run_probes_flush(&b, err, errlen) != 0)
            rc = -1;
    }
    run_probes_close(&b);
    if (replay_close_out(&out) != 0 && rc == 0) {
        snprintf(err, errlen, "replay: writing %s failed", bdir);
        rc = -1;
    }
    run_free(&b);
    return dist_all_ok(d, rc == 0) ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

// Rank 0: dir must not hold an earlier replay, unless force (then it is removed). 0 or -1.
static int clear_replay_dir(const char *dir, int force, char *err, size_t errlen)
{
    if (access(dir, F_OK) != 0)
        return 0;
    if (!force) {
        snprintf(err, errlen,
                 "replay: %s already holds a replay of this step (--force replaces it)", dir);
        return -1;
    }
    if (nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        snprintf(err, errlen, "replay: remove the earlier replay %s: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

// The replay's run: built, from its start state, writing into dir (rank 0: out), its probes
// seeded with the run's history. 0, or -1 on every rank with nothing left open.
static int open_replay(struct run *r, const struct config *cfg, struct dist_ctx *d,
                       const struct replay_plan *p, const char *dir, struct replay_out *out)
{
    char err[1024] = "";
    int ok = run_init(r, cfg, d, 0, err, sizeof(err)) == 0, have_run = ok;
    r->tag = "replay";
    ok = ok && (!p->ckpt[0] || ckpt_read(r, p->ckpt, err, sizeof(err)) == 0);
    ok = ok && (d->rank != 0 || replay_open_dir(dir, cfg, out, 1, err, sizeof(err)) == 0);
    ok = ok && run_probes_open(r, dir, err, sizeof(err)) == 0;
    if (ok)
        replay_seed_probes(r, p, p->start + 1, p->above_start);
    if (!ok && err[0])
        err_printf("%s", err);
    if (dist_all_ok(d, ok))
        return 0;
    if (have_run) {
        run_probes_close(r);
        run_free(r);
    }
    replay_close_out(out);
    return -1;
}

// The branches from the state before S (when the replay got there), each into res[1 + id];
// res[0] is the replay itself (rc 1: it stopped on a non-finite step). Returns 0, or -1 (I/O,
// printed).
static int run_branches(const struct config *cfg, struct dist_ctx *d, const struct replay_args *a,
                        const struct replay_plan *p, const char *dir, const struct replay_trace *tr,
                        int rc, struct replay_branch_result *res)
{
    char err[1024] = "";
    res[0].name = "as_run";
    res[0].what = "the replay itself";
    res[0].ran = 1;
    struct replay_trace at = *tr; // the steps S .. end of the replay
    at.first = p->S;
    at.n = p->end - p->S + 1;
    at.loss = tr->loss + (p->S - tr->first);
    at.grad_norm = tr->grad_norm + (p->S - tr->first);
    replay_branch_summarise(&res[0], &at, p->pre_mean, p->pre_sd);
    if (rc == 1)
        snprintf(res[0].note, sizeof(res[0].note), "stopped: non-finite");
    // a replay that stopped on a non-finite step after S still has the state before S
    for (int id = 0; id < RB_COUNT && p->have_state; id++) {
        if (run_branch(cfg, d, a, p, dir, tr, id, &res[id + 1], err, sizeof(err)) != 0) {
            if (err[0])
                err_printf("%s", err);
            return -1;
        }
    }
    return 0;
}

// Rank 0: the branch table and summary.tsv. 0, or -1 (printed).
static int write_tables(const char *dir, const char *run_dir, const struct replay_plan *p,
                        int ranks, long parted, const char *what,
                        const struct replay_branch_result *res, int nres, FILE *log)
{
    char err[1024];
    if (replay_report_branches(dir, log, p->S, p->end, p->pre_mean, p->pre_sd, res, nres, err,
                               sizeof(err)) != 0) {
        err_printf("%s", err);
        return -1;
    }
    FILE *f = replay_fopen(dir, "summary.tsv", err, sizeof(err));
    if (f)
        fprintf(f,
                "key\tvalue\nrun\t%s\nstep\t%ld\nwindow\t%ld\nstart_step\t%ld\nstart_from\t%s\n"
                "end_step\t%ld\nranks\t%d\nreproduced\t%d\nparted_at\t%ld\nparted_what\t%s\n"
                "pre_first\t%ld\npre_last\t%ld\npre_mean\t%.17g\npre_sd\t%.17g\n",
                run_dir, p->S, p->K, p->start, p->ckpt[0] ? p->ckpt : "init", p->end, ranks,
                parted == 0, parted, what, p->pre_first, p->S - 1, p->pre_mean, p->pre_sd);
    if (!f || replay_fclose(f, dir, "summary.tsv", err, sizeof(err)) != 0) {
        err_printf("%s", err);
        return -1;
    }
    return 0;
}

int cmd_replay(int argc, char **argv, struct dist_ctx *d)
{
    struct replay_args a;
    struct replay_plan p;
    struct config cfg;
    char err[1024] = "", dir[CONFIG_PATH_MAX], what[256] = "";
    int rank0 = d->rank == 0;
    memset(&a, 0, sizeof(a));
    memset(&p, 0, sizeof(p));
    int rc = replay_parse(argc, argv, d, &a);
    if (rc >= 0)
        return rc;
    int ok = replay_load(&a.opts, a.config_path, sizeof(a.config_path), a.run_dir, a.step, a.window,
                         d, &cfg, &p, err, sizeof(err));
    if (ok < 0)
        return TRAIN_EXIT_INPUT;
    snprintf(dir, sizeof(dir), "%s/replay/step_%ld", a.run_dir, a.step);
    ok = ok && (!rank0 || clear_replay_dir(dir, a.force, err, sizeof(err)) == 0);
    if (!ok)
        err_printf("%s", err);
    if (!dist_all_ok(d, ok)) {
        replay_plan_free(&p);
        return TRAIN_EXIT_INPUT;
    }
    replay_plan_bcast(d, &p);

    // the replay
    struct run r;
    struct replay_out out = {NULL, NULL};
    if (open_replay(&r, &cfg, d, &p, dir, &out) != 0) { // the input checked out: a file failed
        replay_plan_free(&p);
        return TRAIN_EXIT_IO;
    }
    replay_say(out.log, rank0, "canary replay: %s step %ld, window %ld -> %s", a.run_dir, p.S, p.K,
               dir);
    replay_say(out.log, rank0, "start: %s (step %ld); steps %ld .. %ld on %d rank(s)",
               p.ckpt[0] ? p.ckpt : "the initial weights (every checkpoint is later)", p.start,
               p.start + 1, p.end, d->size);
    struct replay_trace tr;
    replay_trace_init(&tr, p.start + 1, p.end);
    long parted = 0;
    int expected_part = 0; // parted at another thread count than the run's
    rc = main_replay(&r, &p, dir, &out, &tr, &parted, what, sizeof(what), err, sizeof(err));
    if (run_probes_flush(&r, err, sizeof(err)) != 0)
        rc = -1;
    run_probes_close(&r);
    run_free(&r);
    if (rc == -1)
        err_printf("%s", err);
    int io = !dist_all_ok(d, rc != -1);
    if (!io && parted && cfg.train.threads != p.run_threads) { // expected: not a fault
        replay_say(out.log, rank0,
                   "the replay parts from the run at step %ld (%s), as expected: it runs %d "
                   "threads per rank where the run ran %d, and OpenBLAS's threaded sgemm sums in "
                   "another order (replay with --set train.threads=%d to check bit for bit)",
                   parted, what, cfg.train.threads, p.run_threads, p.run_threads);
        expected_part = 1;
    } else if (!io && parted)
        replay_say(out.log, rank0,
                   "NOT REPRODUCED: the replay parts from the run at step %ld (%s): a hardware "
                   "fault, or nondeterminism in this build or machine",
                   parted, what);
    else if (!io)
        replay_say(out.log, rank0,
                   "reproduced: the %ld replayed steps equal the run's metrics.tsv bit for bit "
                   "(loss, ce, z, lr, grad_norm, clip_factor)",
                   p.end - p.start);
    if (!io)
        replay_say(out.log, rank0, "pre-spike window: steps %ld .. %ld, loss mean %.4f sigma %.4f",
                   p.pre_first, p.S - 1, p.pre_mean, p.pre_sd);

    // the counterfactuals and the tables
    struct replay_branch_result res[RB_COUNT + 1];
    memset(res, 0, sizeof(res));
    io = io || run_branches(&cfg, d, &a, &p, dir, &tr, rc, res) != 0;
    if (rank0 && !io)
        io = write_tables(dir, a.run_dir, &p, d->size, parted, what, res,
                          p.have_state ? RB_COUNT + 1 : 1, out.log) != 0;
    if (!io)
        replay_say(out.log, rank0,
                   "outputs in %s/ (canary-analyze spikes %s: which tensor moved first)", dir,
                   a.run_dir);
    io |= replay_close_out(&out) != 0;
    replay_trace_free(&tr);
    replay_plan_free(&p);
    if (!dist_all_ok(d, !io))
        return TRAIN_EXIT_IO;
    return parted && !expected_part ? REPLAY_EXIT_PARTED : TRAIN_EXIT_OK;
}
