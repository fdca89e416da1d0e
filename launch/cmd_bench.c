// `canary bench`: times training steps of a config on random tokens and prints
// machine-readable key=value lines (bench/run compares them with the PyTorch reference).
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "launch/checkpoint.h"
#include "launch/cli.h"
#include "launch/train.h"
#include "model/blas_core.h"
#include "model/matmul.h"
#include "model/matmul_dnnl.h"
#include "util/error.h"
#include "util/fpenv.h"
#include "util/timer.h"

static double peak_rss_mib(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; // ru_maxrss is in KiB on Linux
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static double best_of(const double *v, int n)
{
    double b = v[0];
    for (int i = 1; i < n; i++)
        b = v[i] < b ? v[i] : b;
    return b;
}

static void bench_usage(FILE *f)
{
    fprintf(f, "usage: canary bench [--config FILE] [--set section.key=value ...]\n"
               "                    [--steps N (10)] [--warmup N (3)] [--probes] [--probe-cost]\n"
               "       canary bench --allreduce MIB [--steps N]\n"
               "\n"
               "Times N training steps (forward, loss, backward, clip, AdamW) of the config's\n"
               "model on random tokens after the warmup steps, and prints a '# BLAS: ...' line,\n"
               "then one line of key=value pairs: median tokens/s and step time, model\n"
               "GFLOP/s, the single-thread sgemm rate measured in this run and the fraction of\n"
               "it (times train.threads) reached, accounted bytes and peak RSS. bench/run\n"
               "compares it with the PyTorch reference. --probes also writes the probes\n"
               "(probes.every, probes.flush_every) to a temporary probes.h5, as a run would,\n"
               "then writes one checkpoint and adds a last line 'checkpoint_ms=...\n"
               "checkpoint_mib=...' (its time and size).\n"
               "\n"
               "--probe-cost (implies --probes) measures what the probes cost within one\n"
               "process, so that the host's drift between runs cannot hide a few percent: the\n"
               "timed steps cycle through three kinds (no probes; the every-step series only; a\n"
               "full probe step) and the fastest step of each kind gives the cost of the\n"
               "every-step series, of a full probe step, and of both at the cadence\n"
               "probes.every, in a line 'probe_off_ms=... probe_cost_pct=...' before the\n"
               "checkpoint line.\n"
               "\n"
               "--allreduce MIB times the transport alone instead: one blocking MPI_Allreduce\n"
               "(sum of doubles) of MIB MiB over every rank, after a barrier, 3 warmup and\n"
               "--steps timed; the line gives the median time and MIB / time. (Training reduces\n"
               "floats in buckets that overlap backward.) No config is read.\n");
}

struct bench_args {
    int steps, warmup;
    int probes;           // --probes or --probe-cost: write probes.h5 as a run would
    int probe_cost;       // --probe-cost: cycle the steps through three probe kinds
    double allreduce_mib; // --allreduce: time an allreduce of this size instead of steps
};

// The command line. Returns -1 to go on, else the exit code (0 after --help).
static int bench_parse(int argc, char **argv, struct dist_ctx *d, struct cli_config_opts *opts,
                       struct bench_args *a)
{
    for (int i = 1; i < argc; i++) {
        enum cli_opt t = cli_take_opt(opts, argc, argv, &i, bench_usage, d);
        if (t == CLI_TAKEN)
            continue;
        if (t != CLI_NOT_MINE)
            return t == CLI_BAD;
        if ((strcmp(argv[i], "--steps") == 0 || strcmp(argv[i], "--warmup") == 0) && i + 1 < argc) {
            char *end = NULL;
            long v = strtol(argv[i + 1], &end, 10);
            if (end == argv[i + 1] || *end != '\0' || v < (argv[i][2] == 's' ? 1 : 0) ||
                v > 1000000) {
                err_printf("bench: bad %s '%s'", argv[i], argv[i + 1]);
                return 1;
            }
            *(argv[i][2] == 's' ? &a->steps : &a->warmup) = (int)v;
            i++;
            continue;
        }
        if (strcmp(argv[i], "--allreduce") == 0 && i + 1 < argc) {
            char *end = NULL;
            a->allreduce_mib = strtod(argv[++i], &end);
            if (*end != '\0' || !(a->allreduce_mib >= 0.001 && a->allreduce_mib <= 4096.0)) {
                err_printf("bench: --allreduce takes MiB in [0.001, 4096], not '%s'", argv[i]);
                return 1;
            }
            continue;
        }
        if (strcmp(argv[i], "--probes") == 0 || strcmp(argv[i], "--probe-cost") == 0) {
            a->probes = 1;
            a->probe_cost |= strcmp(argv[i], "--probe-cost") == 0;
            continue;
        }
        return cli_unexpected("bench", argv[i], bench_usage, d);
    }
    return -1;
}

// probes.h5 in a temporary directory (rank 0 writes; every rank collects). 0, or -1 after
// cleaning up on every rank.
static int bench_open_probes(struct run *run, struct dist_ctx *d, char *probe_dir)
{
    char err[1024];
    int ok = 1;
    if (d->rank == 0 && !mkdtemp(probe_dir)) {
        snprintf(err, sizeof(err), "make a temporary directory: %s", strerror(errno));
        ok = 0;
    }
    ok = ok && run_probes_open(run, probe_dir, err, sizeof(err)) == 0;
    if (!ok)
        err_printf("bench: probes in '%s': %s", probe_dir, err);
    if (dist_all_ok(d, ok)) // every rank stops, none waits in a collective
        return 0;
    run_probes_close(run);
    if (d->rank == 0)
        rmdir(probe_dir);
    return -1;
}

// Per timed step, the slowest rank's times (it sets the pace of a data-parallel step).
struct bench_times {
    int n;
    double *step, *wait, *optim, *grads;
    int kind_n[3];     // --probe-cost: steps without probes, every-step series, full
    double *kind_t[3]; // their times
};

static void bench_times_init(struct bench_times *bt, int n)
{
    memset(bt, 0, sizeof(*bt));
    bt->n = n;
    bt->step = xcalloc((size_t)n, sizeof(double));
    bt->wait = xcalloc((size_t)n, sizeof(double));
    bt->optim = xcalloc((size_t)n, sizeof(double));
    bt->grads = xcalloc((size_t)n, sizeof(double));
    for (int k = 0; k < 3; k++)
        bt->kind_t[k] = xcalloc((size_t)n, sizeof(double));
}

static void bench_times_free(struct bench_times *bt)
{
    for (int k = 0; k < 3; k++)
        free(bt->kind_t[k]);
    free(bt->step);
    free(bt->wait);
    free(bt->optim);
    free(bt->grads);
}

// warmup + steps training steps; the timed ones go to bt.
static void bench_run_steps(struct run *run, struct dist_ctx *d, const struct bench_args *a,
                            struct bench_times *bt)
{
    char err[1024];
    int opened = run->probes->collect, writer = run->probes->active;
    for (int s = 0; s < a->warmup + a->steps; s++) {
        struct step_result res;
        int kind = s % 3;
        double t0 = timer_now();
        if (a->probe_cost) {
            run->probes->collect = opened && kind > 0;
            run->probes->active = writer && kind > 0;
            run->probe_step = opened && kind == 2;
        } else {
            run->probe_step =
                run->probes->collect && probe_set_due(&run->probes->set, run->step + 1);
        }
        train_step(run, &res);
        if (run->probes->active && run_probes_step(run, &res, 0.0, err, sizeof(err)) != 0)
            err_printf("bench: %s", err);
        double dt = timer_now() - t0;
        if (s < a->warmup)
            continue;
        int i = s - a->warmup;
        bt->step[i] = dist_max_f64(d, dt);
        bt->wait[i] = dist_max_f64(d, run->reducer.wait_seconds);
        bt->optim[i] = dist_max_f64(d, res.seconds_optim);
        bt->grads[i] = dist_max_f64(d, res.seconds_grads);
        bt->kind_t[kind][bt->kind_n[kind]++] = bt->step[i];
    }
    run->probes->collect = opened;
    run->probes->active = writer;
}

// The key=value line bench/compare.py reads (rank 0).
static void bench_print(const struct run *run, const struct bench_times *bt, double sgemm_1t,
                        double mm_1t, double rss_base)
{
    const struct config *cfg = &run->cfg;
    // the mean counts the probe steps at their cadence (a median would mostly see the others)
    double mean = 0.0;
    for (int s = 0; s < bt->n; s++)
        mean += bt->step[s] / bt->n;
    double med = median(bt->step, bt->n), wait_med = median(bt->wait, bt->n);
    double opt_med = median(bt->optim, bt->n), grads_med = median(bt->grads, bt->n);
    double tokens = (double)cfg->train.batch_size * cfg->model.seq_len;
    double gflops = run->step_flops / med * 1e-9;
    size_t n = run->model.table.total;
    double accounted = (double)n * sizeof(float) * 5.0 // params, grads, update, m, v
                       + (double)run->model.acts.floats * sizeof(float) +
                       (double)run->model.table.n * sizeof(double) +
                       2.0 * (double)run->local_batch * cfg->model.seq_len * sizeof(int) +
                       model_precision_bytes(&cfg->model, run->micro_batch, cfg->train.precision,
                                             cfg->train.bf16_attention, run->backend.onednn);
    double attn_acts = (double)model_attention_act_floats(&run->model) * sizeof(float);
    double rss = peak_rss_mib();
    char blas[512];
    blas_core_describe(blas, sizeof(blas));
    printf("# BLAS: %s | subnormals %s\n"
           "canary_tokens_per_s=%.1f step_ms_median=%.3f step_ms_mean=%.3f model_gflops=%.2f "
           "sgemm_1t_gflops=%.2f pct_of_peak=%.1f threads=%d params=%zu accounted_mib=%.1f "
           "peak_rss_mib=%.1f baseline_rss_mib=%.1f rss_over_accounted=%.3f ranks=%d "
           "reduce_wait_ms=%.3f optim_ms=%.3f grads_ms=%.3f acts_mib=%.1f "
           "attn_acts_mib=%.1f core=%s precision=%s backend=%s matmul_1t_gflops=%.2f "
           "pct_of_matmul_peak=%.1f\n",
           blas, fpenv_flushing() ? "flushed to zero" : "computed in full", tokens / med, med * 1e3,
           mean * 1e3, gflops, sgemm_1t, 100.0 * gflops / (sgemm_1t * cfg->train.threads),
           cfg->train.threads, n, accounted / 1048576.0, rss, rss_base,
           (rss - rss_base) / (accounted / 1048576.0), run->dist->size, wait_med * 1e3,
           opt_med * 1e3, grads_med * 1e3,
           (double)run->model.acts.floats * sizeof(float) / 1048576.0, attn_acts / 1048576.0,
           blas_core_name(), cfg->train.precision ? "bf16" : "fp32",
           run->backend.onednn    ? "onednn"
           : cfg->train.precision ? "emulation"
                                  : "openblas",
           mm_1t, 100.0 * gflops / (mm_1t * cfg->train.threads));
}

// --probe-cost's line: the fastest step of each kind (the host's noise only ever adds time).
static void bench_print_probe_cost(const struct bench_times *bt, int every)
{
    if (bt->kind_n[0] == 0 || bt->kind_n[1] == 0 || bt->kind_n[2] == 0)
        return;
    double off = best_of(bt->kind_t[0], bt->kind_n[0]),
           light = best_of(bt->kind_t[1], bt->kind_n[1]);
    double full = best_of(bt->kind_t[2], bt->kind_n[2]);
    double every_step = (light - off) / off, extra = (full - light) / off;
    printf("probe_off_ms=%.3f probe_every_step_ms=%.3f probe_full_ms=%.3f "
           "probe_every_step_pct=%.2f probe_full_step_pct=%.2f probe_cost_pct=%.2f "
           "probes_every=%d steps_per_kind=%d\n",
           off * 1e3, light * 1e3, full * 1e3, 100.0 * every_step, 100.0 * (full - off) / off,
           100.0 * (every_step + extra / every), every, bt->kind_n[0]);
}

// With probes: a checkpoint's time and size (rank 0 writes), then the temporary files go.
static void bench_checkpoint_and_clean(struct run *run, const char *probe_dir)
{
    char path[96], err[1024];
    struct stat st;
    double t0 = timer_now();
    if (ckpt_write(run, probe_dir, err, sizeof(err)) != 0)
        err_printf("bench: %s", err);
    double ckpt_s = timer_now() - t0;
    snprintf(path, sizeof(path), "%s/ckpt/step_%08ld.h5", probe_dir, run->step);
    printf("checkpoint_ms=%.1f checkpoint_mib=%.2f\n", ckpt_s * 1e3,
           stat(path, &st) == 0 ? (double)st.st_size / 1048576.0 : 0.0);
    unlink(path);
    snprintf(path, sizeof(path), "%s/ckpt", probe_dir);
    rmdir(path);
    run_probes_close(run);
    snprintf(path, sizeof(path), "%s/probes.h5", probe_dir);
    unlink(path);
    rmdir(probe_dir);
}

// --allreduce: the median time of a sum over every rank of `mib` MiB (doubles), each after a
// barrier, measured on rank 0; the transport alone, without a model's compute around it.
static void bench_allreduce(struct dist_ctx *d, double mib, int steps)
{
    size_t n = (size_t)(mib * 1048576.0 / sizeof(double));
    double *buf = xcalloc(n ? n : 1, sizeof(double)), *t = xcalloc((size_t)steps, sizeof(double));
    for (size_t i = 0; i < n; i++)
        buf[i] = 1e-3 * (double)(i % 1000);
    for (int k = -3; k < steps; k++) {
        dist_barrier(d);
        double t0 = timer_now();
        dist_allreduce_sum_f64(d, buf, n);
        if (k >= 0)
            t[k] = timer_now() - t0;
    }
    double med = median(t, steps);
    if (d->rank == 0)
        printf("allreduce_mib=%.3f allreduce_ms_median=%.3f allreduce_gib_per_s=%.3f ranks=%d\n",
               mib, med * 1e3, mib / 1024.0 / med, d->size);
    free(buf);
    free(t);
}

int cmd_bench(int argc, char **argv, struct dist_ctx *d)
{
    struct cli_config_opts opts;
    struct bench_args a = {.steps = 10, .warmup = 3};
    struct config cfg;
    struct run run;
    char err[1024];
    memset(&opts, 0, sizeof(opts));
    int rc = bench_parse(argc, argv, d, &opts, &a);
    if (rc >= 0)
        return rc;
    if (a.allreduce_mib > 0.0) {
        bench_allreduce(d, a.allreduce_mib, a.steps);
        return 0;
    }
    if (cli_load_config(&cfg, &opts, d, 0) != 0)
        return 1;
    if (a.probes && !cfg.probes.enabled) {
        err_printf("bench: --probes and --probe-cost need probes.enabled = true");
        return 1;
    }
    double rss_base = peak_rss_mib();
    double sgemm_1t = matmul_peak_gflops(1024, 5);
    if (run_init(&run, &cfg, d, 1, err, sizeof(err)) != 0) {
        err_printf("%s", err);
        return 1;
    }
    char probe_dir[] = "/tmp/canary-bench-XXXXXX";
    if (a.probes && bench_open_probes(&run, d, probe_dir) != 0) {
        run_free(&run);
        return 1;
    }
    struct bench_times bt;
    bench_times_init(&bt, a.steps);
    bench_run_steps(&run, d, &a, &bt);
    // the linear layers' own rate: oneDNN's matmul of the run's type, else sgemm (which the
    // bf16 emulation also runs on)
    double mm_1t = sgemm_1t;
    if (run.backend.onednn)
        mm_1t = mm_dnnl_peak_gflops(cfg.train.precision, 1024, 5);
    if (d->rank == 0) {
        bench_print(&run, &bt, sgemm_1t, mm_1t, rss_base);
        if (a.probe_cost)
            bench_print_probe_cost(&bt, cfg.probes.every);
    }
    bench_times_free(&bt);
    if (run.probes->active)
        bench_checkpoint_and_clean(&run, probe_dir);
    else if (a.probes)
        run_probes_close(&run);
    run_free(&run);
    return 0;
}
