// AdamW. Elementwise over each tensor's range; no reductions, so any thread count gives the same
// bits.
#include "optim/adamw.h"

#include <math.h>
#include <stdlib.h>

#include "util/error.h"

void adamw_init(struct adamw *a, size_t n)
{
    a->m = xcalloc(n, sizeof(float));
    a->v = xcalloc(n, sizeof(float));
    a->n = n;
    a->t = 0;
}

void adamw_free(struct adamw *a)
{
    free(a->m);
    free(a->v);
    a->m = a->v = NULL;
}

void adamw_update_compute(struct adamw *a, float *update, const float *params, const float *grads,
                          const struct tensor_table *tt, const struct optim_config *oc, double lr_t)
{
    long t = ++a->t;
    float b1 = (float)oc->beta1, b2 = (float)oc->beta2, eps = (float)oc->eps;
    float bc1 = (float)(1.0 / (1.0 - pow(oc->beta1, (double)t)));
    float bc2 = (float)(1.0 / (1.0 - pow(oc->beta2, (double)t)));
    float lr = (float)lr_t;
    float s = (float)(lr_t / oc->lr);
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *ten = &tt->t[i];
        if (optim_uses_muon(oc, ten->kind))
            continue; // Muon's group
        float wd = tensor_kind_decays(ten->kind) ? (float)oc->weight_decay : 0.0f;
        // update = lr·Δ + wd_scale·θ
        float wd_scale = oc->wd_mode == WD_INDEPENDENT ? s * wd : lr * wd;
        size_t lo = ten->offset, hi = ten->offset + ten->size;
#pragma omp parallel for schedule(static)
        for (size_t j = lo; j < hi; j++) {
            float g = grads[j];
            float m = b1 * a->m[j] + (1.0f - b1) * g;
            float v = b2 * a->v[j] + (1.0f - b2) * g * g;
            a->m[j] = m;
            a->v[j] = v;
            float delta = (m * bc1) / (sqrtf(v * bc2) + eps);
            update[j] = lr * delta + wd_scale * params[j];
        }
    }
}
