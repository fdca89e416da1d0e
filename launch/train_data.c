// The batches a training step and an evaluation read: the global batch a step draws (a replay
// branch may move it), a rank's slice of it with the CANARY_FAULT data hook, and the held-out
// evaluation (train.h).
#include <stdint.h>

#include "launch/train.h"

uint64_t run_batch_index(const struct run *r)
{
    uint64_t b = (uint64_t)r->step;
    if (r->branch.kind == BRANCH_DROP && r->step >= r->branch.at)
        b++;
    if (r->branch.kind == BRANCH_UNSEEN && r->step == r->branch.at)
        b = (uint64_t)r->cfg.train.steps + (uint64_t)r->branch.at;
    return b;
}

void run_load_batch(struct run *r, uint64_t batch)
{
    uint64_t first = batch * (uint64_t)r->cfg.train.batch_size +
                     (uint64_t)r->dist->rank * (uint64_t)r->local_batch;
    sampler_train_batch(&r->sampler, r->inputs, r->targets, first, r->local_batch);
    fault_corrupt_batch(r->fault, r->dist->rank, batch, r->inputs, r->targets, r->cfg.model.seq_len,
                        r->cfg.model.vocab);
}

void train_eval(struct run *r, struct loss_parts *out)
{
    const struct config *c = &r->cfg;
    struct model *m = &r->model;
    int T = c->model.seq_len, mb = r->micro_batch;
    // eval_batches · batch_size sequences in chunks of one micro-batch; a rank takes a contiguous
    // run of chunks. Per-chunk losses are gathered and summed in global order, so the result is
    // the same for any rank count when the micro-batch is (deterministic mode).
    int chunks = r->eval_chunks / r->dist->size;
    model_set_probing(m, 0);
    for (int k = 0; k < chunks; k++) {
        struct loss_parts lp;
        uint64_t first = ((uint64_t)r->dist->rank * chunks + k) * (uint64_t)mb;
        sampler_eval_batch(&r->sampler, r->inputs, r->targets, first, mb);
        model_forward(m, r->params, r->inputs, mb);
        xent_forward(&lp, m->acts.logits, r->targets, mb * T, c->model.vocab,
                     (float)c->optim.z_loss, (float)c->model.final_softcap);
        loss_parts_pack(&lp, r->eval_loss_mine + LOSS_PARTS * k);
    }
    run_mean_in_global_order(r, r->eval_loss_mine, r->eval_loss, chunks, LOSS_PARTS, out);
}
