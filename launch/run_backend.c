// The linear layers' backend of a run (launch/run_backend.h).
#include "launch/run_backend.h"

#include <stdio.h>
#include <string.h>

#include "dist/dist.h"
#include "launch/config.h"
#include "model/matmul.h"
#include "model/matmul_dnnl.h"
#include "model/model.h"

// The largest v over the ranks (a lone rank, as the unit tests make, needs no MPI).
static double rank_max(struct dist_ctx *d, double v)
{
    return d->size > 1 ? dist_max_f64(d, v) : v;
}

int run_choose_backend(struct dist_ctx *d, const struct config *c, int avail, const char *why,
                       struct run_backend *b, char *err, size_t errlen)
{
    const struct train_config *t = &c->train;
    memset(b, 0, sizeof(*b));
    int all_avail = -rank_max(d, -(double)(avail != 0)) > 0.5;
    if (t->matmul_backend == MATMUL_ONEDNN && !all_avail) {
        if (avail)
            snprintf(err, errlen,
                     "train.matmul_backend = onednn: another rank's CPU has no oneDNN %s matmul "
                     "(use auto or openblas)",
                     t->precision ? "bf16" : "fp32");
        else
            snprintf(err, errlen, "train.matmul_backend = onednn: %s (use auto or openblas)", why);
        return -1;
    }
    b->onednn = t->matmul_backend == MATMUL_ONEDNN ||
                (t->matmul_backend == MATMUL_AUTO && t->precision && avail);
    int any = rank_max(d, b->onednn) > 0.5, all = -rank_max(d, -b->onednn) > 0.5;
    b->mixed = any != all;
    if (b->mixed && t->precision && t->deterministic) {
        snprintf(err, errlen,
                 "train.precision = bf16 with train.deterministic: the ranks would multiply on "
                 "different backends (oneDNN on some CPUs, the OpenBLAS emulation on others), "
                 "whose fp32 sums differ in order; set train.matmul_backend = openblas for "
                 "bitwise results on every CPU");
        return -1;
    }
    if (t->precision && !b->onednn && t->matmul_backend == MATMUL_AUTO && !avail)
        snprintf(b->why, sizeof(b->why), "%s", why);
    return 0;
}

void run_backend_describe(const struct config *c, const struct run_backend *b,
                          const struct model *m, char *buf, size_t len)
{
    const struct train_config *t = &c->train;
    char lib[768] = "";
    if (b->onednn && m->mm && m->mm->dnnl) {
        char isa[96];
        const char *exact = mm_dnnl_impl(m->mm->dnnl, 0), *rt = mm_dnnl_impl(m->mm->dnnl, 1);
        mm_dnnl_describe(isa, sizeof(isa));
        // a "ref:" implementation is oneDNN's slow reference loop: a product shape or layout
        // its optimised kernels do not take
        snprintf(lib, sizeof(lib),
                 "%s %s matmul, %d primitives (micro-batch rows: %s; runtime rows, for MoE "
                 "experts and smaller evaluations: %s)%s",
                 isa, t->precision ? "bf16" : "fp32", mm_dnnl_count(m->mm->dnnl), exact, rt,
                 strstr(exact, "ref:") || strstr(rt, "ref:")
                     ? " WARNING: some products run oneDNN's reference implementation, which is "
                       "slow"
                     : "");
    }
    if (!t->precision) {
        snprintf(buf, len, "fp32; backend: %s", b->onednn ? lib : "OpenBLAS sgemm");
        return;
    }
    snprintf(buf, len,
             "bf16 linear layers%s (operands rounded to nearest even, fp32 accumulation); "
             "backend: %s%s%s%s",
             t->bf16_attention ? " and attention products (attention on OpenBLAS)" : "",
             b->onednn ? lib : "emulation: rounding, then OpenBLAS sgemm (may be slower than fp32)",
             b->why[0] ? "; no oneDNN: " : "", b->why,
             b->mixed ? "; WARNING: the ranks use different backends" : "");
}
