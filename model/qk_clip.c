// QK-clip: η per head and the row scaling of the query and key projections (qk_clip.h).
#include "model/qk_clip.h"

#include <math.h>
#include <stddef.h>

int qk_clip_eta(const double *max_logit, int n, double tau, double *eta)
{
    int clipped = 0;
    for (int i = 0; i < n; i++) {
        double s = max_logit[i];
        eta[i] = isnan(s) ? NAN : s > tau ? tau / s : 1.0;
        clipped += eta[i] < 1.0;
    }
    return clipped;
}

// Rows [r0, r1) of a row-major matrix with `cols` columns, times f.
static void scale_rows(float *w, int cols, int r0, int r1, float f)
{
    for (size_t i = (size_t)r0 * cols; i < (size_t)r1 * cols; i++)
        w[i] *= f;
}

void qk_clip_apply(const struct model *m, float *params, const double *eta, double alpha)
{
    const struct model_config *c = &m->cfg;
    const struct tensor *t = m->table.t;
    int H = c->heads, hd = c->head_dim, I = m->inner, dqk = m->dqk;
    for (int l = 0; l < c->layers; l++) {
        const struct block_index *bi = &m->blocks[l];
        for (int h = 0; h < H; h++) {
            double e = eta[l * H + h];
            if (!(e < 1.0))
                continue;
            float fq = (float)pow(e, alpha), fk = (float)pow(e, 1.0 - alpha);
            if (c->attention != ATTN_MLA) {
                // wq, wk, wv are adjacent [I, C] blocks (the fused projection of model.c)
                float *w = params + t[bi->wq].offset;
                scale_rows(w, c->dim, h * hd, (h + 1) * hd, fq);
                scale_rows(w, c->dim, I + h * hd, I + (h + 1) * hd, fk);
                continue;
            }
            int qi = bi->wq_b >= 0 ? bi->wq_b : bi->wq; // [H·d_qk, in], head h's rows together
            float *wq = params + t[qi].offset, *wkv = params + t[bi->wkv_b].offset;
            scale_rows(wq, t[qi].cols, h * dqk, h * dqk + hd, fq);
            scale_rows(wq, t[qi].cols, h * dqk + hd, (h + 1) * dqk, (float)e); // rope part
            scale_rows(wkv, t[bi->wkv_b].cols, h * hd, (h + 1) * hd, fk);      // key content rows
        }
    }
}
