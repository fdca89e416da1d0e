// The local LR-sensitivity probe (lr_probe.h).
#include "launch/lr_probe.h"

#include <stdlib.h>

#include "launch/train.h"
#include "model/qk_clip.h"
#include "optim/optim.h"
#include "util/error.h"

struct lr_probe *lr_probe_init(const struct run *r)
{
    const struct config *c = &r->cfg;
    if (!c->probes.enabled || c->probes.lr_probe_every <= 0 || r->random_data)
        return NULL;
    struct lr_probe *p = xcalloc(1, sizeof(*p));
    size_t tok = (size_t)r->micro_batch * c->model.seq_len;
    p->trial = xcalloc(r->model.table.total, sizeof(float));
    p->loss_mine = xcalloc((size_t)LOSS_PARTS * r->micro_steps, sizeof(double));
    p->loss_all = xcalloc((size_t)LOSS_PARTS * r->leaves, sizeof(double));
    p->inputs = xcalloc(tok, sizeof(int));
    p->targets = xcalloc(tok, sizeof(int));
    return p;
}

void lr_probe_free(struct lr_probe *p)
{
    if (!p)
        return;
    free(p->trial);
    free(p->loss_mine);
    free(p->loss_all);
    free(p->inputs);
    free(p->targets);
    free(p);
}

// Local LR sensitivity (between computing the update and applying it): the mean loss of the
// fixed probe batch — the first batch_size held-out sequences, in chunks of one micro-batch
// spread over the ranks like an evaluation and summed in global order — at θ (f = 0, the
// reference) and at θ − f·(update − c·θ) − c·θ for f = ½, 1, 2: the update as it is about to
// land, scaled as if the learning rate were scaled. An independent weight-decay term c·θ
// (optim_independent_wd; times the update-norm clip factor `clip` when that guard scaled the
// whole update) does not scale with the learning rate, so it stays as it is. Trial
// weights go to a separate buffer, so the parameters are never touched; every rank holds the
// same parameters and update, so every rank can take its chunks.
void lr_probe_run(struct lr_probe *p, struct run *r, double lr_t, double clip)
{
    const float factors[4] = {0.0f, 0.5f, 1.0f, 2.0f};
    const struct config *c = &r->cfg;
    int mb = r->micro_batch, T = c->model.seq_len;
    model_set_probing(&r->model, 0);
    const struct tensor_table *tt = &r->model.table;
    for (int i = 0; i < 4; i++) {
        float f = factors[i];
        for (int t = 0; t < tt->n; t++) {
            // update = lr part + c·θ; only the lr part scales with the learning rate
            float c_wd = (float)(clip * optim_independent_wd(&c->optim, tt->t[t].kind, lr_t));
            float keep = f > 0.0f ? (f - 1.0f) * c_wd : 0.0f;
            size_t lo = tt->t[t].offset, hi = lo + tt->t[t].size;
#pragma omp parallel for simd schedule(static)
            for (size_t j = lo; j < hi; j++)
                p->trial[j] = r->params[j] - f * r->update[j] + keep * r->params[j];
        }
        // QK-clip acts on the weights the update lands on, so on the trial ones too (its eta
        // comes from the step's logits, whatever f)
        if (f > 0.0f && r->qk_max && !c->optim.qk_clip_log_only)
            qk_clip_apply(&r->model, p->trial, r->qk_eta, c->optim.qk_clip_alpha);
        for (int k = 0; k < r->micro_steps; k++) {
            struct loss_parts lp;
            uint64_t first = ((uint64_t)r->dist->rank * r->micro_steps + k) * (uint64_t)mb;
            sampler_eval_batch(&r->sampler, p->inputs, p->targets, first, mb);
            struct model_aux aux = model_forward(&r->model, p->trial, p->inputs, mb);
            xent_forward(&lp, r->model.acts.logits, p->targets, mb * T, c->model.vocab,
                         (float)c->optim.z_loss, (float)c->model.final_softcap);
            // the training loss the update descends: with MoE, its auxiliary losses too
            lp.balance = aux.balance;
            lp.router_z = aux.router_z;
            lp.aux = lp.balance + lp.router_z;
            lp.total += lp.aux;
            loss_parts_pack(&lp, p->loss_mine + LOSS_PARTS * k);
        }
        struct loss_parts mean;
        run_mean_in_global_order(r, p->loss_mine, p->loss_all, r->micro_steps, LOSS_PARTS, &mean);
        p->loss[i] = mean.total;
    }
}
