// Gradient norm, clipping and update application shared by the optimizers.
#include "optim/optim.h"

#include <math.h>

double optim_grad_norm(double *sumsq, const float *grads, const struct tensor_table *tt)
{
    // Eight running sums per tensor (vectorisable), combined in a fixed order.
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < tt->n; i++) {
        const float *g = grads + tt->t[i].offset;
        size_t n = tt->t[i].size;
        double lane[8] = {0};
        size_t j = 0;
        for (; j + 8 <= n; j += 8)
            for (int k = 0; k < 8; k++)
                lane[k] += (double)g[j + k] * (double)g[j + k];
        for (; j < n; j++)
            lane[0] += (double)g[j] * (double)g[j];
        sumsq[i] = ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                   ((lane[4] + lane[5]) + (lane[6] + lane[7]));
    }
    double total = 0.0;
    for (int i = 0; i < tt->n; i++)
        total += sumsq[i];
    return sqrt(total);
}

double optim_clip(float *grads, size_t n, double norm, double clip)
{
    if (clip <= 0.0 || !(norm > clip))
        return 1.0;
    float f = (float)(clip / norm);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        grads[i] *= f;
    return clip / norm;
}

void optim_update_apply(float *params, const float *update, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        params[i] -= update[i];
}

int optim_uses_muon(const struct optim_config *oc, enum tensor_kind kind)
{
    return oc->name == OPTIM_MUON &&
           (kind == TENSOR_MATRIX || kind == TENSOR_EXPERT || kind == TENSOR_ROUTER);
}

double optim_independent_wd(const struct optim_config *oc, enum tensor_kind kind, double lr_t)
{
    if (oc->wd_mode != WD_INDEPENDENT)
        return 0.0;
    // as adamw_update_compute and muon_finish form their updates
    if (optim_uses_muon(oc, kind))
        return lr_t / oc->lr * oc->muon_weight_decay;
    return tensor_kind_decays(kind) ? lr_t / oc->lr * oc->weight_decay : 0.0;
}
