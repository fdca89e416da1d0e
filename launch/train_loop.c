// The `canary train` loop: evaluation at step 0 (ℓ0), steps with progress lines, periodic and
// final evaluation. Everything that prints or writes files lives here, between steps.
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "launch/checkpoint.h"
#include "launch/stop.h"
#include "launch/rundir.h"
#include "launch/train.h"
#include "model/blas_core.h"
#include "model/matmul.h"
#include "model/matmul_dnnl.h"
#include "util/error.h"
#include "util/fpenv.h"
#include "util/timer.h"

struct train_out {
    FILE *log;          // log.txt: everything printed, plus the run header
    FILE *metrics;      // metrics.tsv: one row per step and per evaluation, full precision
    int rank0;          // rank 0 of the run's communicator writes
    const char *tag;    // prefix on stdout (the run id in a sweep)
    int quiet;          // progress lines go to log.txt only
    char changed[1024]; // a resume's --set changes, for the header ("" when none)
};

// Prints a line to stdout and log.txt (rank 0 only).
static void out_line(struct train_out *o, int progress, const char *fmt, ...) CANARY_PRINTF(3, 4);
static void out_line(struct train_out *o, int progress, const char *fmt, ...)
{
    va_list ap;
    if (!o->rank0)
        return;
    if (!(progress && o->quiet)) {
        if (o->tag)
            printf("[%s] ", o->tag);
        va_start(ap, fmt);
        vprintf(fmt, ap);
        va_end(ap);
        fputc('\n', stdout);
        fflush(stdout);
    }
    if (o->log) {
        va_start(ap, fmt);
        vfprintf(o->log, fmt, ap);
        va_end(ap);
        fputc('\n', o->log);
        fflush(o->log);
    }
}

static void format_eta(char *buf, size_t len, double seconds)
{
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, len, "%ldh%02ldm", s / 3600, s / 60 % 60);
    else if (s >= 60)
        snprintf(buf, len, "%ldm%02lds", s / 60, s % 60);
    else
        snprintf(buf, len, "%lds", s);
}

void train_metrics_row(FILE *f, long step, const struct step_result *res, double tokens_per_s)
{
    fprintf(f, "train\t%ld\t%.17g\t%.17g\t%.17g\t%.17g\t%.17g\t%.17g\t%.6g\n", step,
            res->loss.total, res->loss.ce, res->loss.z, res->lr, res->grad_norm, res->clip_factor,
            tokens_per_s);
    fflush(f); // a crash loses no row (a small write per step)
}

// Keeps the metrics rows of steps ≤ step (a resumed run rewrites what came after).
static int metrics_truncate(const char *path, long step, char *err, size_t errlen)
{
    char tmp[CONFIG_PATH_MAX + 48], line[1024];
    FILE *in = fopen(path, "r"), *out = NULL;
    int rc = -1, first = 1;
    if (!in) {
        snprintf(err, errlen, "open '%s': %s", path, strerror(errno));
        return -1;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    out = fopen(tmp, "w");
    if (!out) {
        snprintf(err, errlen, "write '%s': %s", tmp, strerror(errno));
        goto done;
    }
    while (fgets(line, sizeof(line), in)) {
        char kind[16];
        long s = 0;
        if (first || (sscanf(line, "%15s %ld", kind, &s) == 2 && s <= step))
            fputs(line, out);
        first = 0;
    }
    if (fclose(out) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "rewrite '%s': %s", path, strerror(errno));
        goto done;
    }
    rc = 0;
done:
    fclose(in);
    return rc;
}

static int open_outputs(struct train_out *o, const char *dir, const struct run *r, char *err,
                        size_t errlen)
{
    char path[CONFIG_PATH_MAX + 32];
    int resume = r->step > 0;
    if (!resume && rundir_create(dir, err, errlen) != 0)
        return -1;
    // (a resume rewrites it too, keeping the earlier one when --set changed a value)
    if (resume && rundir_keep_changed_config(dir, &r->cfg, r->step, o->changed, sizeof(o->changed),
                                             err, errlen) != 0)
        return -1;
    if (rundir_write_config(dir, &r->cfg, err, errlen) != 0)
        return -1;
    snprintf(path, sizeof(path), "%s/log.txt", dir);
    o->log = fopen(path, resume ? "a" : "w");
    if (!o->log) {
        snprintf(err, errlen, "open '%s': %s", path, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "%s/metrics.tsv", dir);
    if (resume && metrics_truncate(path, r->step, err, errlen) != 0)
        return -1;
    o->metrics = fopen(path, resume ? "a" : "w");
    if (!o->metrics) {
        snprintf(err, errlen, "open '%s': %s", path, strerror(errno));
        return -1;
    }
    if (!resume)
        fputs(TRAIN_METRICS_HEADER, o->metrics);
    return 0;
}

static void close_outputs(struct train_out *o)
{
    if (o->log)
        fclose(o->log);
    if (o->metrics)
        fclose(o->metrics);
    o->log = o->metrics = NULL;
}

static double eval_and_report(struct run *r, struct train_out *o, long step)
{
    struct loss_parts lp;
    train_eval(r, &lp);
    out_line(o, 0, "eval step %ld: loss %.6f (ce %.6f z %.6f)%s", step, lp.total, lp.ce, lp.z,
             step == 0 ? "  [l0, loss at init]" : "");
    if (o->rank0 && o->metrics)
        fprintf(o->metrics, "eval\t%ld\t%.17g\t%.17g\t%.17g\t\t\t\t\n", step, lp.total, lp.ce,
                lp.z);
    if (o->rank0 && o->metrics)
        fflush(o->metrics);
    char err[512];
    if (run_probes_eval(r, step, lp.total, err, sizeof(err)) != 0) {
        err_printf("%s", err);
        r->io_failed = 1; // the loop's next collective check stops the run
    }
    return lp.total;
}

// "non-finite loss nan" or "non-finite gradient: first in 'blocks.0.attn.wq' (grad norm inf)".
void train_nonfinite_detail(const struct run *r, const struct step_result *res, char *out,
                            size_t len)
{
    if (!isfinite(res->loss.total)) {
        snprintf(out, len, "non-finite loss %g (ce %g, z %g)", res->loss.total, res->loss.ce,
                 res->loss.z);
        return;
    }
    for (int i = 0; i < r->model.table.n; i++) {
        if (!isfinite(r->tensor_sumsq[i])) {
            snprintf(out, len, "non-finite gradient, first in '%s' (loss %g)",
                     r->model.table.t[i].name, res->loss.total);
            return;
        }
    }
    snprintf(out, len, "non-finite gradient norm %g", res->grad_norm);
}

// Rank 0 writes a checkpoint; every rank learns whether it worked. Returns 1 on success.
static int checkpoint(struct run *r, struct train_out *o, const char *out_dir)
{
    char err[1024];
    // Probe rows up to the checkpoint reach the disk first, so a resume finds them all.
    int ok = run_probes_flush(r, err, sizeof(err)) == 0;
    if (ok && r->dist->rank == 0)
        ok = ckpt_write(r, out_dir, err, sizeof(err)) == 0;
    if (!ok)
        err_printf("%s", err);
    if (!dist_all_ok(r->dist, ok)) {
        out_line(o, 0, "step %ld: checkpoint failed; the previous one is intact: stopping",
                 r->step);
        return 0;
    }
    return 1;
}

// A stop request by signal, agreed by all ranks at a step boundary: a checkpoint of this step
// (unless one was just written), an event, and TRAIN_EXIT_STOPPED — or TRAIN_EXIT_IO when the
// checkpoint cannot be written.
static int stop_run(struct run *r, struct train_out *o, const char *out_dir, int written)
{
    char what[160], err[1024];
    int sig = stop_requested();
    snprintf(what, sizeof(what), "%s received: checkpoint at step %ld, then exit",
             sig ? stop_signal_name(sig) : "a signal on another rank", r->step);
    out_line(o, 0, "step %ld: %s (continue with canary train --resume)", r->step, what);
    if (run_probes_event(r, r->step, "stopped", what, err, sizeof(err)) != 0) {
        err_printf("%s", err);
        r->io_failed = 1;
    }
    if (!written && !checkpoint(r, o, out_dir))
        return TRAIN_EXIT_IO;
    return TRAIN_EXIT_STOPPED;
}

// The run header: output directory, model, BLAS core and rate, data. peak: sgemm GFLOP/s of
// all threads of one rank.
static void print_header(struct run *r, struct train_out *o, const char *out_dir, double peak)
{
    const struct config *c = &r->cfg;
    out_line(o, 0, "canary train: %s", out_dir);
    out_line(o, 0,
             "model: dim %d layers %d heads %d head_dim %d seq_len %d vocab %d | %zu parameters "
             "in %d tensors | %d rank(s) x %d thread(s)",
             c->model.dim, c->model.layers, c->model.heads, c->model.head_dim, c->model.seq_len,
             c->model.vocab, r->model.table.total, r->model.table.n, r->dist->size,
             c->train.threads);
    if (c->model.attention == ATTN_MLA)
        out_line(o, 0, "attention: mla (kv_rank %d, q_rank %d, rope_dim %d)", c->model.kv_rank,
                 c->model.q_rank, c->model.rope_dim);
    if (c->model.mup != MUP_OFF) {
        static const char *level[] = {"off", "simple", "intermediate", "full"};
        out_line(o, 0, "muParam %s: base width %d, hidden matrices' LR x %g%s", level[c->model.mup],
                 c->model.mup_base_width, (double)c->model.mup_base_width / c->model.dim,
                 r->muon ? " (AdamW's only: Muon's matrices keep Muon's shape scaling)" : "");
    }
    if (c->model.experts > 0)
        out_line(o, 0,
                 "feed-forward: MoE in %d of %d blocks, %d experts, top-%d%s, %d shared, "
                 "capacity factor %g",
                 r->model.moe_layers, c->model.layers, c->model.experts, c->model.top_k,
                 c->model.gate_renorm ? " (renormalised gates)" : "", c->model.shared_experts,
                 c->model.capacity_factor);
    char blas[512];
    blas_core_describe(blas, sizeof(blas));
    // every rank chose its core alone (before MPI): ranks on different CPUs may differ, and then
    // their results are not bitwise comparable
    double h = 0.0;
    for (const char *p = blas_core_name(); *p; p++)
        h = fmod(h * 131.0 + (unsigned char)*p, 1e9);
    int same = dist_max_f64(r->dist, h) == -dist_max_f64(r->dist, -h);
    if (c->train.precision || r->backend.onednn) {
        char prec[1280];
        run_backend_describe(c, &r->backend, &r->model, prec, sizeof(prec));
        out_line(o, 0, "precision: %s", prec);
    }
    if (r->resumed_precision[0])
        out_line(o, 0,
                 "WARNING: resumed from a checkpoint written with another precision or matmul "
                 "backend (%s): from here the run is not bitwise the one that would have gone on",
                 r->resumed_precision);
    out_line(o, 0, "BLAS: %s | sgemm %.0f GFLOP/s per thread%s%s", blas, peak / c->train.threads,
             fpenv_flushing() ? " | subnormals flushed to zero" : "",
             r->dist->size == 1 ? ""
             : same             ? " | the same core on every rank"
                                : " | WARNING: the ranks run different BLAS cores");
    out_line(o, 0, "data: %zu training tokens, %zu held out | batch %d x %d tokens | %ld steps",
             r->sampler.n_train, r->sampler.n_val, c->train.batch_size, c->model.seq_len,
             (long)c->train.steps);
}

// The progress line's window: rates over the steps since the last line, ETA over the run.
struct progress {
    double peak;     // sgemm GFLOP/s of one rank's threads
    long first_step; // > 0 when resumed
    double t_start, t_window;
    double flops, optim; // model FLOPs (all ranks) and optimizer seconds in the window
    long steps;          // steps in the window
};

static void progress_step(struct run *r, struct train_out *o, struct progress *pg,
                          const struct step_result *res)
{
    const struct config *c = &r->cfg;
    long steps = c->train.steps;
    double tokens_per_step = (double)c->train.batch_size * c->model.seq_len;
    pg->flops += r->step_flops * r->dist->size;
    pg->optim += res->seconds_optim;
    pg->steps++;
    if (r->step % c->train.log_every != 0 && r->step != steps)
        return;
    double now = timer_now(), span = now - pg->t_window;
    double per_step = (now - pg->t_start) / (double)(r->step - pg->first_step);
    double gflops = pg->flops / span * 1e-9 / r->dist->size;
    char eta[32];
    format_eta(eta, sizeof(eta), per_step * (double)(steps - r->step));
    char aux[48] = "", opt[40] = "";
    if (c->model.experts > 0)
        snprintf(aux, sizeof(aux), " balance %.2e router_z %.2e", res->loss.balance,
                 res->loss.router_z);
    // Newton–Schulz does not shrink with the batch: show what it costs (rank 0's share)
    if (r->muon)
        snprintf(opt, sizeof(opt), " | optimizer %.0f%% of step", 100.0 * pg->optim / span);
    out_line(o, 1,
             "step %6ld/%ld | loss %.4f (ce %.4f z %.2e%s) | lr %.3e | gnorm %.3f%s | "
             "%.0f tok/s | %.1f GFLOP/s/rank (%.0f%% of %s sgemm peak)%s | ETA %s",
             r->step, steps, res->loss.total, res->loss.ce, res->loss.z, aux, res->lr,
             res->grad_norm, res->clip_factor < 1.0 ? " (clipped)" : "",
             tokens_per_step * (double)pg->steps / span, gflops, 100.0 * gflops / pg->peak,
             blas_core_name(), opt, eta);
    pg->t_window = now;
    pg->flops = pg->optim = 0.0;
    pg->steps = 0;
}

// A step whose loss or gradient was not finite: its event, then stop (returns
// TRAIN_EXIT_NONFINITE) or, with train.on_nonfinite = skip, move on without the update (0).
static int on_nonfinite(struct run *r, struct train_out *o, const struct step_result *res,
                        long step)
{
    char what[200], err[1024];
    train_nonfinite_detail(r, res, what, sizeof(what));
    if (run_probes_event(r, step + 1, "non-finite", what, err, sizeof(err)) != 0) {
        err_printf("%s", err);
        r->io_failed = 1;
    }
    if (r->cfg.train.on_nonfinite != 1) {
        out_line(o, 0, "step %ld: %s: stopping", step + 1, what);
        if (o->rank0)
            err_printf("training diverged at step %ld: the loss or gradient is not finite",
                       step + 1);
        return TRAIN_EXIT_NONFINITE;
    }
    // skip: no update; the step still gets its rows (non-finite values, as they were),
    // evaluation and checkpoint, and the data moves on to the next batch
    out_line(o, 0, "step %ld: %s: update skipped (train.on_nonfinite = skip)", step + 1, what);
    r->step++;
    return 0;
}

// The update guards' actions: an event each (kind "skip" or "update_clip"), printed as it is
// recorded.
void train_guard_events(struct run *r, const struct step_result *res, long step)
{
    char what[256], err[1024];
    const char *kind = NULL;
    if (res->guard_skipped) {
        snprintf(what, sizeof(what),
                 "update skipped: loss %.6g (threshold %.6g), grad norm %.6g (threshold %.6g), "
                 "optim.skip_sigma = %g",
                 res->loss.total, res->loss_thr, res->grad_norm, res->gnorm_thr,
                 r->cfg.optim.skip_sigma);
        kind = "skip";
    } else if (res->update_clip_factor < 1.0) {
        snprintf(what, sizeof(what),
                 "update norm %.6g clipped to %.6g (factor %.4g), optim.update_clip_sigma = %g",
                 res->update_norm, res->update_thr, res->update_clip_factor,
                 r->cfg.optim.update_clip_sigma);
        kind = "update_clip";
    }
    if (!kind)
        return;
    if (run_probes_event(r, step + 1, kind, what, err, sizeof(err)) != 0) {
        err_printf("%s", err);
        r->io_failed = 1;
    }
}

// What follows a step, in order: its metrics and probe rows, the collective probe-write check,
// evaluation, checkpoint, a stop request, fault injection, the consistency check. Returns 0 to
// go on, or the exit code that ends the run. *io_ok: rank 0's probe writes so far.
static int after_step(struct run *r, struct train_out *o, const char *out_dir,
                      const struct step_result *res, long step, double dt, int *io_ok)
{
    const struct config *c = &r->cfg;
    long steps = c->train.steps;
    double tokens_per_step = (double)c->train.batch_size * c->model.seq_len;
    char err[1024];
    // the step's row goes out before any checkpoint of this step, so a resume finds it
    if (o->rank0)
        train_metrics_row(o->metrics, step + 1, res, tokens_per_step / dt);
    if (*io_ok && run_probes_step(r, res, tokens_per_step / dt, err, sizeof(err)) != 0) {
        err_printf("%s", err);
        *io_ok = 0;
    }
    *io_ok = *io_ok && !r->io_failed;
    if (r->step % c->probes.flush_every == 0 && !dist_all_ok(r->dist, *io_ok)) {
        out_line(o, 0, "step %ld: writing probes.h5 failed: stopping", r->step);
        return TRAIN_EXIT_IO;
    }
    // evaluation first: the checkpoint's flush then covers its row, and a resume from this
    // checkpoint does not need it again
    if (c->train.eval_every > 0 && r->step % c->train.eval_every == 0 && r->step != steps)
        eval_and_report(r, o, r->step);
    int written = c->train.checkpoint_every > 0 && r->step % c->train.checkpoint_every == 0 &&
                  r->step != steps;
    if (written && !checkpoint(r, o, out_dir))
        return TRAIN_EXIT_IO;
    // a signal on any rank stops every rank here, between two steps (after the last step the
    // run just ends as usual, with its final evaluation and checkpoint)
    if (r->step < steps && !dist_all_ok(r->dist, stop_requested() == 0))
        return stop_run(r, o, out_dir, written);
    fault_inject(r->fault, r->dist->rank, r->step,
                 &r->params[r->model.table.t[r->model.table.n / 2].offset]);
    if (c->train.check_every > 0 && r->step % c->train.check_every == 0)
        train_check_consistency(r);
    return 0;
}

// After the last step: the final evaluation, checkpoint and summary. Returns the exit code.
static int finish_run(struct run *r, struct train_out *o, const char *out_dir, double t_start)
{
    const struct config *c = &r->cfg;
    int rc = TRAIN_EXIT_OK;
    if (c->train.check_every > 0)
        train_check_consistency(r);
    r->final_eval = eval_and_report(r, o, r->step);
    if (!checkpoint(r, o, out_dir))
        rc = TRAIN_EXIT_IO;
    if (!dist_all_ok(r->dist, !r->io_failed))
        rc = TRAIN_EXIT_IO;
    char took[32];
    format_eta(took, sizeof(took), timer_now() - t_start);
    if (r->model.mm && r->model.mm->dnnl && mm_dnnl_late(r->model.mm->dnnl) > 0)
        out_line(o, 0,
                 "oneDNN: %d product shapes were first met during training (rank 0), past "
                 "planning: their primitives were compiled inside steps",
                 mm_dnnl_late(r->model.mm->dnnl));
    out_line(o, 0, "parameter checksum %016llx", train_params_checksum(r));
    out_line(o, 0, "done: %ld steps in %s; outputs in %s/ (config.ini, log.txt, metrics.tsv%s)",
             (long)c->train.steps, took, out_dir, r->probes->active ? ", probes.h5" : "");
    return rc;
}

int train_run(struct run *r, const char *out_dir)
{
    const struct config *c = &r->cfg;
    struct train_out o = {NULL, NULL, r->dist->rank == 0, r->tag, r->quiet, ""};
    char err[1024];
    int rc = TRAIN_EXIT_OK;

    int opened = !o.rank0 || open_outputs(&o, out_dir, r, err, sizeof(err)) == 0;
    if (opened && run_probes_open(r, out_dir, err, sizeof(err)) != 0)
        opened = 0;
    if (!opened)
        err_printf("%s", err);
    if (!dist_all_ok(r->dist, opened)) { // every rank stops, none waits in a collective
        run_probes_close(r);
        close_outputs(&o);
        return TRAIN_EXIT_IO;
    }
    struct progress pg = {.peak = matmul_peak_gflops(512, 3) * c->train.threads,
                          .first_step = r->step};
    print_header(r, &o, out_dir, pg.peak);
    if (r->step == 0)
        r->l0 = eval_and_report(r, &o, 0);
    else
        out_line(&o, 0, "resumed from step %ld", r->step);
    if (o.changed[0])
        out_line(&o, 0,
                 "resumed with other settings than steps 1 .. %ld ran with (those are kept in "
                 "config.ini.to_step_%08ld): %s",
                 r->step, r->step, o.changed);

    int io_ok = 1; // rank 0's probe writes; checked by all ranks at every flush
    pg.t_start = pg.t_window = timer_now();
    while (r->step < c->train.steps && rc == TRAIN_EXIT_OK) {
        struct step_result res;
        long step = r->step;
        r->probe_step = r->probes->collect && probe_set_due(&r->probes->set, step + 1);
        if (r->lr_probe)
            r->lr_probe->due = (step + 1) % c->probes.lr_probe_every == 0;
        double t0 = timer_now();
        train_step(r, &res);
        double dt = timer_now() - t0;
        if (!res.finite && (rc = on_nonfinite(r, &o, &res, step)) != 0)
            break;
        train_guard_events(r, &res, step);
        if ((rc = after_step(r, &o, out_dir, &res, step, dt, &io_ok)) != 0)
            break;
        progress_step(r, &o, &pg, &res);
    }
    if (rc == TRAIN_EXIT_OK)
        rc = finish_run(r, &o, out_dir, pg.t_start);
    if (run_probes_flush(r, err, sizeof(err)) != 0) {
        err_printf("%s", err);
        rc = rc == TRAIN_EXIT_OK ? TRAIN_EXIT_IO : rc;
    }
    run_probes_close(r);
    if (o.rank0 && (ferror(o.metrics) || ferror(o.log))) {
        err_printf("write outputs in '%s' failed", out_dir);
        rc = rc == TRAIN_EXIT_OK ? TRAIN_EXIT_IO : rc;
    }
    close_outputs(&o);
    return rc;
}
