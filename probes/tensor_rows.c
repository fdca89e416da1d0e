// Per-tensor probe rows (see tensor_rows.h).
#include "probes/tensor_rows.h"

#include <math.h>

#include "probes/stats.h"

void probe_tensor_rows(const struct probe_tensor_in *in, const struct probe_tensor_out *out)
{
    // before AdamW's first update (t = 0) v is all zeros and there is no bias correction yet
    double bc2 = in->adam_t > 0 ? 1.0 - pow(in->beta2, (double)in->adam_t) : 0.0;
    float bound = (float)(in->eps * in->eps * bc2);
    for (int i = 0; i < in->n; i++) {
        size_t o = in->offset[i], sz = in->size[i];
        double n = (double)sz;
        int muon = in->muon && in->muon[i];
        if (out->grad_rms)
            out->grad_rms[i] = stats_rms(in->grad_sumsq[i], n);
        if (out->param_rms)
            out->param_rms[i] = stats_rms(stats_sumsq(in->params + o, sz), n);
        if (out->update_rms)
            out->update_rms[i] = in->skipped ? NAN : stats_rms(stats_sumsq(in->update + o, sz), n);
        if (out->adam_sqrt_v_rms) {
            // sqrt(v̂) < ε  ⇔  v < ε²·(1 − β₂ᵗ): no square root or division per entry. Entries
            // with v = 0 count: never updated (adam/v_zero_frac tells them), or decayed to 0
            // after their gradient stayed 0 (flushed from the subnormals), the most
            // ε-dominated of all
            const float *v = in->adam_v + o;
            double zero = (double)stats_count_zero(v, sz);
            double below = (double)stats_count_below(v, sz, bound);
            double vs = bc2 > 0.0 ? stats_sum(v, sz) / bc2 : 0.0;
            out->adam_sqrt_v_rms[i] = muon ? 0.0 : sqrt(vs / n);
            out->adam_eps_frac[i] = muon ? 0.0 : below / n;
            out->adam_v_zero_frac[i] = muon ? 0.0 : zero / n;
        }
        if (out->muon_ortho)
            out->muon_ortho[i] = muon ? (in->skipped ? NAN : in->muon_ortho[i]) : 0.0;
        if (out->muon_momentum_rms)
            out->muon_momentum_rms[i] =
                muon ? stats_rms(stats_sumsq(in->muon_momentum + o, sz), n) : 0.0;
    }
}
