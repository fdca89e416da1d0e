// Deterministic mode's tree sum of micro-batch gradients (grad_tree.h).
#include "launch/grad_tree.h"

#include <stdlib.h>
#include <string.h>

#include "dist/reduce.h"
#include "util/error.h"

struct grad_tree *grad_tree_init(size_t n, int micro_steps, int ranks)
{
    struct grad_tree *t = xcalloc(1, sizeof(*t));
    int levels = 1;
    while ((1 << (levels - 1)) < micro_steps)
        levels++;
    t->n = n;
    t->levels = levels;
    t->sum = xcalloc((size_t)levels, sizeof(float *));
    t->level = xcalloc((size_t)levels, sizeof(int));
    for (int i = 0; i < levels; i++)
        t->sum[i] = xcalloc(n, sizeof(float));
    if (ranks > 1)
        t->scratch = xcalloc(n, sizeof(float));
    return t;
}

void grad_tree_free(struct grad_tree *t)
{
    if (!t)
        return;
    for (int i = 0; i < t->levels; i++)
        free(t->sum[i]);
    free(t->sum);
    free(t->level);
    free(t->scratch);
    free(t);
}

float *grad_tree_leaf(struct grad_tree *t)
{
    ASSERT(t->depth < t->levels);
    float *leaf = t->sum[t->depth];
    memset(leaf, 0, t->n * sizeof(float));
    return leaf;
}

static void add_into(float *acc, const float *x, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++)
        acc[i] = acc[i] + x[i];
}

void grad_tree_push(struct grad_tree *t)
{
    float *leaf = t->sum[t->depth];
    int level = 0;
    while (t->depth > 0 && t->level[t->depth - 1] == level) {
        add_into(t->sum[t->depth - 1], leaf, t->n); // left + right
        t->depth--;
        leaf = t->sum[t->depth];
        level++;
    }
    t->level[t->depth] = level;
    t->depth++;
}

void grad_tree_finish(struct grad_tree *t, float *grads, struct dist_ctx *d)
{
    ASSERT(t->depth == 1); // the micro-batches were a power of two
    memcpy(grads, t->sum[0], t->n * sizeof(float));
    t->depth = 0;
    if (d->size > 1)
        dist_tree_allreduce_f32(d, grads, t->scratch, t->n);
}
