// `canary bench`: times training steps of a config on random tokens and prints one
// machine-readable line (bench/run compares it with the PyTorch reference side by side).
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
               "\n"
               "Times N training steps (forward, loss, backward, clip, AdamW) of the config's\n"
               "model on random tokens after the warmup steps, and prints one line of\n"
               "key=value pairs: median tokens/s and step time, model GFLOP/s, the\n"
               "single-thread sgemm rate measured in this run and the fraction of it (times\n"
               "train.threads) reached, accounted bytes and peak RSS. bench/run compares it\n"
               "with the PyTorch reference. --probes also writes the probes (probes.every,\n"
               "probes.flush_every) to a temporary probes.h5, as a run would.\n"
               "\n"
               "--probe-cost measures what the probes cost within one process, so that the\n"
               "host's drift between runs cannot hide a few percent: the timed steps cycle\n"
               "through three kinds (no probes; the every-step series only; a full probe\n"
               "step) and the fastest step of each kind gives the cost of the every-step series,\n"
               "of a full probe step, and of both at the cadence probes.every.\n");
}

int cmd_bench(int argc, char **argv, struct dist_ctx *d)
{
    struct cli_config_opts opts;
    struct config cfg;
    struct run run;
    char err[1024];
    int steps = 10, warmup = 3, probes = 0, probe_cost = 0;
    memset(&opts, 0, sizeof(opts));
    for (int i = 1; i < argc; i++) {
        enum cli_opt t = cli_take_opt(&opts, argc, argv, &i, bench_usage, d);
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
            *(argv[i][2] == 's' ? &steps : &warmup) = (int)v;
            i++;
            continue;
        }
        if (strcmp(argv[i], "--probes") == 0 || strcmp(argv[i], "--probe-cost") == 0) {
            probes = 1;
            probe_cost |= strcmp(argv[i], "--probe-cost") == 0;
            continue;
        }
        return cli_unexpected("bench", argv[i], bench_usage, d);
    }
    if (cli_load_config(&cfg, &opts, d, 0) != 0)
        return 1;
    if (probes && !cfg.probes.enabled) {
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
    if (probes) { // every rank collects its micro-batches' probe records; rank 0 writes
        int ok = 1;
        if (d->rank == 0 && !mkdtemp(probe_dir)) {
            snprintf(err, sizeof(err), "make a temporary directory: %s", strerror(errno));
            ok = 0;
        }
        ok = ok && run_probes_open(&run, probe_dir, err, sizeof(err)) == 0;
        if (!ok)
            err_printf("bench: probes in '%s': %s", probe_dir, err);
        if (!dist_all_ok(d, ok)) { // every rank stops, none waits in a collective
            run_probes_close(&run);
            run_free(&run);
            if (d->rank == 0)
                rmdir(probe_dir);
            return 1;
        }
    }
    double *times = xcalloc((size_t)steps, sizeof(double));
    double *waits = xcalloc((size_t)steps, sizeof(double));
    double *opt_times = xcalloc((size_t)steps, sizeof(double));
    double *grads = xcalloc((size_t)steps, sizeof(double));
    int kind_n[3] = {0, 0, 0}; // --probe-cost: steps without probes, every-step series, full
    double *kind_t[3];
    for (int k = 0; k < 3; k++)
        kind_t[k] = xcalloc((size_t)steps, sizeof(double));
    int opened = run.probes.collect, writer = run.probes.active;
    for (int s = 0; s < warmup + steps; s++) {
        struct step_result res;
        int kind = s % 3;
        double t0 = timer_now();
        if (probe_cost) {
            run.probes.collect = opened && kind > 0;
            run.probes.active = writer && kind > 0;
            run.probe_step = opened && kind == 2;
        } else {
            run.probe_step = run.probes.collect && probe_set_due(&run.probes.set, run.step + 1);
        }
        train_step(&run, &res);
        if (run.probes.active && run_probes_step(&run, &res, 0.0, err, sizeof(err)) != 0)
            err_printf("bench: %s", err);
        double dt = timer_now() - t0;
        if (s >= warmup) {
            // the slowest rank sets the pace of a data-parallel step
            times[s - warmup] = dist_max_f64(d, dt);
            waits[s - warmup] = dist_max_f64(d, run.reducer.wait_seconds);
            opt_times[s - warmup] = dist_max_f64(d, res.seconds_optim);
            grads[s - warmup] = dist_max_f64(d, res.seconds_grads);
            kind_t[kind][kind_n[kind]++] = times[s - warmup];
        }
    }
    run.probes.collect = opened;
    run.probes.active = writer;
    // the mean counts the probe steps at their cadence (a median would mostly see the others)
    double mean = 0.0;
    for (int s = 0; s < steps; s++)
        mean += times[s] / steps;
    double med = median(times, steps), wait_med = median(waits, steps);
    double opt_med = median(opt_times, steps), grads_med = median(grads, steps);
    double tokens = (double)cfg.train.batch_size * cfg.model.seq_len;
    double gflops = run.step_flops / med * 1e-9;
    size_t n = run.model.table.total;
    double accounted = (double)n * sizeof(float) * 5.0 // params, grads, update, m, v
                       + (double)run.model.acts.floats * sizeof(float) +
                       (double)run.model.table.n * sizeof(double) +
                       2.0 * (double)run.local_batch * cfg.model.seq_len * sizeof(int);
    double attn_acts = (double)model_attention_act_floats(&run.model) * sizeof(float);
    double rss = peak_rss_mib();
    char blas[512];
    blas_core_describe(blas, sizeof(blas));
    if (d->rank == 0)
        printf("# BLAS: %s | subnormals %s\n"
               "canary_tokens_per_s=%.1f step_ms_median=%.3f step_ms_mean=%.3f model_gflops=%.2f "
               "sgemm_1t_gflops=%.2f pct_of_peak=%.1f threads=%d params=%zu accounted_mib=%.1f "
               "peak_rss_mib=%.1f baseline_rss_mib=%.1f rss_over_accounted=%.3f ranks=%d "
               "reduce_wait_ms=%.3f optim_ms=%.3f grads_ms=%.3f acts_mib=%.1f "
               "attn_acts_mib=%.1f core=%s\n",
               blas, fpenv_flushing() ? "flushed to zero" : "computed in full", tokens / med,
               med * 1e3, mean * 1e3, gflops, sgemm_1t,
               100.0 * gflops / (sgemm_1t * cfg.train.threads), cfg.train.threads, n,
               accounted / 1048576.0, rss, rss_base, (rss - rss_base) / (accounted / 1048576.0),
               d->size, wait_med * 1e3, opt_med * 1e3, grads_med * 1e3,
               (double)run.model.acts.floats * sizeof(float) / 1048576.0, attn_acts / 1048576.0,
               blas_core_name());
    if (probe_cost && d->rank == 0 && kind_n[0] > 0 && kind_n[1] > 0 && kind_n[2] > 0) {
        // the fastest step of each kind: the host's noise only ever adds time
        double off = best_of(kind_t[0], kind_n[0]), light = best_of(kind_t[1], kind_n[1]);
        double full = best_of(kind_t[2], kind_n[2]);
        double every = (light - off) / off, extra = (full - light) / off;
        printf("probe_off_ms=%.3f probe_every_step_ms=%.3f probe_full_ms=%.3f "
               "probe_every_step_pct=%.2f probe_full_step_pct=%.2f probe_cost_pct=%.2f "
               "probes_every=%d steps_per_kind=%d\n",
               off * 1e3, light * 1e3, full * 1e3, 100.0 * every, 100.0 * (full - off) / off,
               100.0 * (every + extra / cfg.probes.every), cfg.probes.every, kind_n[0]);
    }
    for (int k = 0; k < 3; k++)
        free(kind_t[k]);
    free(times);
    free(waits);
    free(opt_times);
    free(grads);
    if (run.probes.active) {
        char path[96];
        struct stat st;
        double t0 = timer_now();
        if (ckpt_write(&run, probe_dir, err, sizeof(err)) != 0)
            err_printf("bench: %s", err);
        double ckpt_s = timer_now() - t0;
        snprintf(path, sizeof(path), "%s/ckpt/step_%08ld.h5", probe_dir, run.step);
        printf("checkpoint_ms=%.1f checkpoint_mib=%.2f\n", ckpt_s * 1e3,
               stat(path, &st) == 0 ? (double)st.st_size / 1048576.0 : 0.0);
        unlink(path);
        snprintf(path, sizeof(path), "%s/ckpt", probe_dir);
        rmdir(path);
        run_probes_close(&run);
        snprintf(path, sizeof(path), "%s/probes.h5", probe_dir);
        unlink(path);
        rmdir(probe_dir);
    } else if (probes) {
        run_probes_close(&run);
    }
    run_free(&run);
    return 0;
}
