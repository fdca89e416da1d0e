// What `canary replay` starts from and checks against (replay.h): the run's metrics rows, the
// checkpoint to start from, the rank count, the pre-spike statistics, and the history a rerun's
// probes start with.
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "launch/checkpoint.h"
#include "launch/replay.h"
#include "probes/h5.h"
#include "probes/stats.h"
#include "util/error.h"

// The train rows of metrics.tsv, indexed by step: rows[0 .. *nrows) (row 0 unused). 0 or -1.
static int read_metrics(const char *run_dir, struct replay_row **rows, long *nrows, char *err,
                        size_t errlen)
{
    char path[CONFIG_PATH_MAX + 32], line[1024];
    snprintf(path, sizeof(path), "%s/metrics.tsv", run_dir);
    FILE *f = fopen(path, "r");
    if (!f) {
        snprintf(err, errlen, "replay: read '%s': %s (is '%s' a canary run directory?)", path,
                 strerror(errno), run_dir);
        return -1;
    }
    long cap = 1024, last = 0;
    struct replay_row *r = xcalloc((size_t)cap, sizeof(*r));
    while (fgets(line, sizeof(line), f)) {
        struct replay_row row = {0};
        long step = 0;
        if (sscanf(line, "train\t%ld\t%lf\t%lf\t%lf\t%lf\t%lf\t%lf", &step, &row.loss, &row.ce,
                   &row.z, &row.lr, &row.grad_norm, &row.clip) != 7 ||
            step < 1 || step > (1L << 40))
            continue;
        while (step >= cap) {
            r = realloc(r, (size_t)cap * 2 * sizeof(*r));
            if (!r)
                FATAL("out of memory reading %s", path);
            memset(r + cap, 0, (size_t)cap * sizeof(*r));
            cap *= 2;
        }
        row.present = 1;
        r[step] = row;
        last = step > last ? step : last;
    }
    fclose(f);
    *rows = r;
    *nrows = last + 1;
    return 0;
}

// Whether the run's max attention logit at its last probe step <= `step` was above the
// threshold (the state its threshold events had there). 0 when probes.h5 cannot tell.
static int run_above_threshold(const char *run_dir, long step, const struct config *cfg)
{
    char path[CONFIG_PATH_MAX + 32], why[512];
    struct h5file *f = NULL;
    int ps = -1, mx = -1, above = 0;
    snprintf(path, sizeof(path), "%s/probes.h5", run_dir);
    if (h5_open(&f, path, H5_READ, why, sizeof(why)) != 0)
        return 0;
    if (h5_series_open(f, "/probe_step", &ps, why, sizeof(why)) == 0 &&
        h5_series_open(f, "/attn/max_logit", &mx, why, sizeof(why)) == 0) {
        long row = -1, rows = h5_series_rows(f, ps);
        for (long i = 0; i < rows; i++) {
            double s = 0.0;
            if (h5_series_read_row(f, ps, i, &s, why, sizeof(why)) != 0 || s > (double)step)
                break;
            row = i;
        }
        int n = cfg->model.layers * cfg->model.heads;
        double *v = xcalloc((size_t)n, sizeof(double));
        if (row >= 0 && h5_series_read_row(f, mx, row, v, why, sizeof(why)) == 0)
            for (int i = 0; i < n; i++)
                above |= v[i] > cfg->probes.logit_threshold;
        free(v);
    }
    h5_close(f);
    return above;
}

// Mean and sample standard deviation of the run's finite losses over steps [lo, hi], lo >= 1
// (NaN and 0 without any).
static void pre_spike_stats(const struct replay_plan *p, long lo, long hi, double *mean, double *sd)
{
    double *x = xcalloc((size_t)(hi >= lo ? hi - lo + 1 : 1), sizeof(double));
    size_t n = 0;
    for (long k = lo; k <= hi; k++)
        if (p->rows[k].present && isfinite(p->rows[k].loss))
            x[n++] = p->rows[k].loss;
    struct stats_moments m;
    stats_moments_of_f64(&m, x, n);
    *mean = n ? m.mean : NAN;
    *sd = stats_moments_sample_std(&m);
    free(x);
}

int replay_plan_make(struct replay_plan *p, const char *run_dir, long step, long window,
                     const struct config *cfg, int size, char *err, size_t errlen)
{
    char ranks_from[CONFIG_PATH_MAX + 64];
    long at = 0;
    if (read_metrics(run_dir, &p->rows, &p->nrows, err, errlen) != 0)
        return -1;
    long last = p->nrows - 1;
    p->S = step;
    p->K = window;
    // step last + 1 may be the one the run stopped at (a non-finite loss writes no row)
    if (p->S > last + 1 || (p->S <= last && !p->rows[p->S].present) || p->S > cfg->train.steps) {
        char stopped[64] = "";
        if (last < cfg->train.steps)
            snprintf(stopped, sizeof(stopped), " and the step it stopped at, %ld", last + 1);
        snprintf(err, errlen,
                 "replay: step %ld is outside the run: %s/metrics.tsv has steps 1 .. %ld%s", p->S,
                 run_dir, last, stopped);
        return -1;
    }
    if (ckpt_find_before(run_dir, LONG_MAX, ranks_from, sizeof(ranks_from), &at) != 0) {
        snprintf(err, errlen,
                 "replay: run '%s' has no checkpoint in %s/ckpt: a replay needs one to know the "
                 "run's state and rank count (train.checkpoint_every, or a run that stopped before "
                 "its first)",
                 run_dir, run_dir);
        return -1;
    }
    // the ranks that trained the window: those of the first checkpoint after it (a resume at
    // another rank count starts a new segment at a checkpoint), else of the newest
    ckpt_find_from(run_dir, p->S, ranks_from, sizeof(ranks_from), &at);
    if (ckpt_read_world_size(ranks_from, &p->ranks, err, errlen) != 0)
        return -1;
    // strictly before S − K, so the replay has a row for every step of the pre-spike window
    p->start = 0;
    p->ckpt[0] = '\0';
    if (ckpt_find_before(run_dir, p->S - p->K, p->ckpt, sizeof(p->ckpt), &p->start) != 0)
        p->start = 0, p->ckpt[0] = '\0';
    p->end = p->S + p->K < last ? p->S + p->K : last;
    p->end = p->end < p->S ? p->S : p->end;
    p->above_start = run_above_threshold(run_dir, p->start, cfg);
    p->pre_first = p->S - p->K < 1 ? 1 : p->S - p->K;
    pre_spike_stats(p, p->pre_first, p->S - 1, &p->pre_mean, &p->pre_sd);
    if (cfg->train.deterministic ? (size & (size - 1)) != 0 : size != p->ranks) {
        snprintf(err, errlen,
                 "replay: run '%s' was trained on %d rank(s); replay it on %s (this is %d)",
                 run_dir, p->ranks,
                 cfg->train.deterministic ? "a power of two (deterministic mode)"
                                          : "as many: the reduction order decides the bits",
                 size);
        return -1;
    }
    return 0;
}

void replay_seed_probes(struct run *r, const struct replay_plan *p, long next, int above)
{
    int W = r->cfg.probes.spike_window, n = 0;
    double *loss = xcalloc((size_t)W, sizeof(double)), *gn = xcalloc((size_t)W, sizeof(double));
    for (long k = next - W; k < next; k++) {
        if (k >= 1 && k < p->nrows && p->rows[k].present) {
            loss[n] = p->rows[k].loss;
            gn[n++] = p->rows[k].grad_norm;
        }
    }
    run_probes_seed(r, loss, gn, n, above);
    free(loss);
    free(gn);
}

void replay_plan_bcast(struct dist_ctx *d, struct replay_plan *p)
{
    struct replay_row *rows = p->rows;
    dist_bcast_bytes(d, p, sizeof(*p));
    if (d->rank != 0)
        rows = xcalloc((size_t)p->nrows, sizeof(*rows));
    dist_bcast_bytes(d, rows, (size_t)p->nrows * sizeof(*rows));
    p->rows = rows;
}

void replay_plan_free(struct replay_plan *p)
{
    free(p->rows);
    p->rows = NULL;
}
