// AdamW. Elementwise over each tensor's range; StableAdamW's one reduction per tensor runs in
// eight double lanes on one thread, so any thread count gives the same bits.
#include "optim/adamw.h"

#include <math.h>
#include <stdlib.h>

#include "util/error.h"

void adamw_init(struct adamw *a, size_t n, int ntensors)
{
    a->m = xcalloc(n, sizeof(float));
    a->v = xcalloc(n, sizeof(float));
    a->n = n;
    a->t = 0;
    a->stable = ntensors > 0 ? xcalloc((size_t)ntensors, sizeof(double)) : NULL;
    a->stable_scaled = 0;
}

void adamw_free(struct adamw *a)
{
    free(a->m);
    free(a->v);
    free(a->stable);
    a->m = a->v = NULL;
    a->stable = NULL;
}

// StableAdamW's factor of one tensor: 1 / max(1, sqrt(mean(g² / max(v·bc2, ε²)))), the moments
// already advanced. In double, so ε² stays above 0 for any ε the config takes; an entry with
// g = 0 adds 0 (also where v is 0: an embedding row never seen); NaN when a g is NaN.
static double stable_factor(const float *g, const float *v, size_t n, double bc2, double eps)
{
    double lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    double floor2 = eps * eps;
    size_t j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++) {
            double gg = (double)g[j + l] * g[j + l], vh = (double)v[j + l] * bc2;
            lane[l] += gg == 0.0 ? 0.0 : gg / (vh > floor2 ? vh : floor2);
        }
    for (; j < n; j++) {
        double gg = (double)g[j] * g[j], vh = (double)v[j] * bc2;
        lane[0] += gg == 0.0 ? 0.0 : gg / (vh > floor2 ? vh : floor2);
    }
    double sum =
        ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    double rms = sqrt(sum / (double)(n > 0 ? n : 1));
    return isnan(rms) ? NAN : rms > 1.0 ? 1.0 / rms : 1.0;
}

void adamw_update_compute(struct adamw *a, float *update, const float *params, const float *grads,
                          const struct tensor_table *tt, const struct optim_config *oc, double lr_t)
{
    long t = ++a->t;
    float b1 = (float)oc->beta1, b2 = (float)oc->beta2, eps = (float)oc->eps;
    float bc1 = (float)(1.0 / (1.0 - pow(oc->beta1, (double)t)));
    float bc2 = (float)(1.0 / (1.0 - pow(oc->beta2, (double)t)));
    float s = (float)(lr_t / oc->lr);
    int stable = oc->stable_adamw && a->stable;
    if (stable)
        a->stable_scaled = 0;
    for (int i = 0; i < tt->n; i++) {
        const struct tensor *ten = &tt->t[i];
        if (stable)
            a->stable[i] = 1.0;
        if (optim_uses_muon(oc, ten->kind))
            continue; // Muon's group
        size_t lo = ten->offset, hi = ten->offset + ten->size;
        double lr_ten = lr_t * ten->lr_scale; // µParam's factor (1 without it)
        float lr = (float)lr_ten;
        if (stable) { // the moments first, then the tensor's factor from them
#pragma omp parallel for schedule(static)
            for (size_t j = lo; j < hi; j++) {
                a->m[j] = b1 * a->m[j] + (1.0f - b1) * grads[j];
                a->v[j] = b2 * a->v[j] + (1.0f - b2) * grads[j] * grads[j];
            }
            a->stable[i] = stable_factor(grads + lo, a->v + lo, ten->size,
                                         1.0 / (1.0 - pow(oc->beta2, (double)t)), oc->eps);
            a->stable_scaled += a->stable[i] < 1.0;
            lr = (float)(lr_ten * a->stable[i]);
        }
        float wd = tensor_kind_decays(ten->kind) ? (float)oc->weight_decay : 0.0f;
        // update = lr·Δ + wd_scale·θ (StableAdamW scales a coupled decay with the lr)
        float wd_scale = oc->wd_mode == WD_INDEPENDENT ? s * wd : lr * wd;
        if (stable) {
#pragma omp parallel for schedule(static)
            for (size_t j = lo; j < hi; j++) {
                float delta = (a->m[j] * bc1) / (sqrtf(a->v[j] * bc2) + eps);
                update[j] = lr * delta + wd_scale * params[j];
            }
            continue;
        }
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
