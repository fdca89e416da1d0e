// The engine of `canary replay` (replay.h): the step loop with its rows and the check against the
// run, and the per-sequence losses of a batch. Everything that prints or chooses lives in
// cmd_replay.c.
#include "launch/replay.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim.h"
#include "util/error.h"
#include "util/timer.h"

const char *const replay_branch_names[RB_COUNT] = {
    "drop", "unseen", "half_lr", "reset_m", "skip", "guard_skip", "guard_clip",
};

const char *const replay_branch_what[RB_COUNT] = {
    "drop the batch of S (every step from S on draws the next one)",
    "replace the batch of S by one the run never draws",
    "halve the learning rate of step S",
    "zero the first moments (AdamW m, Muon momentum) before S",
    "skip step S (no update; the data moves on)",
    "skip-step guard on from S",
    "update-norm clipping on from S",
};

void replay_trace_init(struct replay_trace *t, long first, long last)
{
    t->first = first;
    t->n = last >= first ? last - first + 1 : 0;
    t->loss = xcalloc((size_t)t->n + 1, sizeof(double));
    t->grad_norm = xcalloc((size_t)t->n + 1, sizeof(double));
    t->update_norm = xcalloc((size_t)t->n + 1, sizeof(double));
    for (long i = 0; i < t->n; i++)
        t->loss[i] = t->grad_norm[i] = t->update_norm[i] = NAN;
}

void replay_trace_free(struct replay_trace *t)
{
    free(t->loss);
    free(t->grad_norm);
    free(t->update_norm);
    memset(t, 0, sizeof(*t));
}

static int same(double a, double b)
{
    return a == b || (isnan(a) && isnan(b));
}

// The first column of the run's row that the step's result does not reproduce bit for bit.
static int compare_row(const struct replay_row *want, const struct step_result *res, char *what,
                       size_t len)
{
    const char *names[] = {"loss", "ce", "z", "lr", "grad_norm", "clip_factor"};
    double run[] = {want->loss, want->ce, want->z, want->lr, want->grad_norm, want->clip};
    double got[] = {res->loss.total, res->loss.ce,   res->loss.z,
                    res->lr,         res->grad_norm, res->clip_factor};
    for (int i = 0; i < 6; i++) {
        if (!same(run[i], got[i])) {
            snprintf(what, len, "%s %.17g in the run, %.17g replayed", names[i], run[i], got[i]);
            return 1;
        }
    }
    return 0;
}

int replay_steps(struct run *r, long end, struct replay_out *o, struct replay_trace *trace,
                 const struct replay_row *run, long nrows, long *parted, char *parted_what,
                 size_t whatlen, char *err, size_t errlen)
{
    const struct config *c = &r->cfg;
    double tokens = (double)c->train.batch_size * c->model.seq_len;
    double *usum = xcalloc((size_t)r->model.table.n, sizeof(double));
    int rc = 0;
    while (r->step < end) {
        struct step_result res;
        long step = r->step; // counted from 0; the row says step + 1
        r->probe_step = r->probes->collect && probe_set_due(&r->probes->set, step + 1);
        if (r->lr_probe)
            r->lr_probe->due =
                c->probes.lr_probe_every > 0 && (step + 1) % c->probes.lr_probe_every == 0;
        double t0 = timer_now();
        train_step(r, &res);
        double dt = timer_now() - t0;
        long i = step + 1 - trace->first;
        if (i >= 0 && i < trace->n) {
            trace->loss[i] = res.loss.total;
            trace->grad_norm[i] = res.grad_norm;
            // the update the step applied (r->update after clipping and guards), as the run's
            // update-norm guard would have seen it unclipped when the run had none
            trace->update_norm[i] =
                res.applied ? optim_grad_norm(usum, r->update, &r->model.table) : NAN;
        }
        if (run && !*parted && step + 1 < nrows &&
            (!run[step + 1].present || compare_row(&run[step + 1], &res, parted_what, whatlen))) {
            if (!run[step + 1].present)
                snprintf(parted_what, whatlen, "the run has no row for this step");
            *parted = step + 1;
        }
        if (!res.finite) {
            char what[200];
            train_nonfinite_detail(r, &res, what, sizeof(what));
            if (run_probes_event(r, step + 1, "non-finite", what, err, errlen) != 0)
                r->io_failed = 1;
            if (c->train.on_nonfinite != 1) {
                rc = dist_all_ok(r->dist, !r->io_failed) ? 1 : -1;
                if (rc < 0)
                    snprintf(err, errlen, "writing an event to the replay's probes.h5 failed");
                break;
            }
            r->step++;
        }
        train_guard_events(r, &res, step);
        if (o->metrics)
            train_metrics_row(o->metrics, step + 1, &res, tokens / dt);
        int ok = run_probes_step(r, &res, tokens / dt, err, errlen) == 0;
        if (ok && r->io_failed)
            snprintf(err, errlen, "writing an event to the replay's probes.h5 failed");
        // every rank learns at once whether rank 0's writes failed (the steps are collective)
        if (!dist_all_ok(r->dist, ok && !r->io_failed)) {
            rc = -1;
            break;
        }
    }
    free(usum);
    return rc;
}

void replay_batch_losses(struct run *r, double *loss, int *tokens)
{
    const struct config *c = &r->cfg;
    int T = c->model.seq_len, V = c->model.vocab, mb = r->micro_batch;
    int B = c->train.batch_size, local = r->local_batch;
    if (r->dist->rank != 0)
        return;
    uint64_t batch = run_batch_index(r);
    model_set_probing(&r->model, 0);
    for (int j0 = 0; j0 < B; j0 += mb) {
        // chunks of one micro-batch never straddle two ranks' slices (mb divides local)
        uint64_t first = batch * (uint64_t)B + (uint64_t)j0;
        sampler_train_batch(&r->sampler, r->inputs, r->targets, first, mb);
        if (j0 % local == 0)
            fault_corrupt_batch(r->fault, j0 / local, batch, r->inputs, r->targets, T, V);
        model_forward(&r->model, r->params, r->inputs, mb);
        for (int j = 0; j < mb; j++) {
            struct loss_parts lp;
            const int *tg = r->targets + (size_t)j * T;
            xent_forward(&lp, r->model.acts.logits + (size_t)j * T * V, tg, T, V,
                         (float)c->optim.z_loss, (float)c->model.final_softcap);
            loss[j0 + j] = lp.ce + lp.z;
            int *tok = tokens + (size_t)(j0 + j) * (T + 1);
            memcpy(tok, r->inputs + (size_t)j * T, (size_t)T * sizeof(int));
            tok[T] = tg[T - 1];
        }
    }
}
