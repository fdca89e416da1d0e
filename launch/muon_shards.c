// Muon across the ranks: the shard plan, and the momentum / Newton–Schulz / gather of one step.
#include "launch/muon_shards.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/error.h"

// The largest unassigned matrix goes to the least loaded rank, until none is left. Fills
// owner[] and the floats each rank sends; returns the number of Muon matrices.
static int plan(int *owner, size_t *counts, const struct tensor_table *tt,
                const struct optim_config *oc, int ranks)
{
    double *load = xcalloc((size_t)ranks, sizeof(double));
    int n = 0;
    for (int i = 0; i < tt->n; i++)
        owner[i] = -1;
    for (;;) {
        int best = -1;
        double cost = -1.0;
        for (int i = 0; i < tt->n; i++) {
            const struct tensor *t = &tt->t[i];
            double c = muon_ns_flops(t->rows, t->cols, oc->ns_steps);
            if (optim_uses_muon(oc, t->kind) && owner[i] < 0 && c > cost) {
                best = i;
                cost = c;
            }
        }
        if (best < 0)
            break;
        int q = 0;
        for (int k = 1; k < ranks; k++)
            q = load[k] < load[q] ? k : q;
        owner[best] = q;
        load[q] += cost;
        counts[q] += tt->t[best].size;
        n++;
    }
    free(load);
    return n;
}

struct muon_shards *muon_shards_init(const struct tensor_table *tt, const struct optim_config *oc,
                                     struct dist_ctx *dist, char *err, size_t errlen)
{
    struct muon_shards *s = xcalloc(1, sizeof(*s));
    size_t *counts = xcalloc((size_t)dist->size, sizeof(size_t));
    s->owner = xcalloc((size_t)tt->n, sizeof(int));
    s->ortho = xcalloc((size_t)tt->n, sizeof(double));
    int n = plan(s->owner, counts, tt, oc, dist->size);
    if (n == 0) {
        snprintf(err, errlen,
                 "optim.name = muon needs hidden 2-D matrices and this model has "
                 "none; use optim.name = adamw");
        free(counts);
        free(s->owner);
        free(s->ortho);
        free(s);
        return NULL;
    }
    dist_gather_init(&s->gather, dist, counts, 0);
    free(counts);
    s->send = xcalloc(s->gather.counts[dist->rank] + 1, sizeof(float));
    s->recv = xcalloc(s->gather.total + 1, sizeof(float));
    muon_init(&s->state, tt, oc);
    return s;
}

void muon_shards_free(struct muon_shards *s)
{
    if (!s)
        return;
    muon_free(&s->state);
    dist_gather_free(&s->gather);
    free(s->owner);
    free(s->send);
    free(s->recv);
    free(s->ortho);
    free(s);
}

void muon_shards_step(struct muon_shards *s, struct dist_ctx *dist, const struct tensor_table *tt,
                      const struct optim_config *oc, float *update, const float *grads,
                      const float *params, double lr_t, int probe)
{
    int me = dist->rank;
    size_t packed = 0;
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *t = &tt->t[i];
        if (s->owner[i] < 0)
            continue;
        muon_momentum(&s->state, update, grads, t, oc);
        s->ortho[i] = 0.0;
        if (s->owner[i] != me)
            continue;
        muon_newton_schulz(&s->state, update + t->offset, t->rows, t->cols, oc->ns_steps,
                           probe ? &s->ortho[i] : NULL);
        muon_finish(update, params, t, oc, lr_t);
        if (dist->size > 1) {
            memcpy(s->send + packed, update + t->offset, t->size * sizeof(float));
            packed += t->size;
        }
    }
    if (dist->size == 1)
        return;
    ASSERT(packed == s->gather.counts[me]);
    dist_gather_f32(dist, &s->gather, s->send, s->recv);
    for (int q = 0; q < dist->size; q++) {
        size_t at = s->gather.displs[q];
        for (int i = 0; i < tt->n; i++) {
            if (s->owner[i] != q)
                continue;
            if (q != me)
                memcpy(update + tt->t[i].offset, s->recv + at, tt->t[i].size * sizeof(float));
            at += tt->t[i].size;
        }
    }
    if (probe)
        dist_allreduce_sum_f64(dist, s->ortho, (size_t)tt->n); // x + 0 + … = x
}
