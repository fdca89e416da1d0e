// provides: run_choose_backend — who multiplies the linear layers on this rank
//           (train.matmul_backend), agreed across ranks; run_backend_describe — the run header's
//           and provenance's line naming it.
#ifndef CANARY_LAUNCH_RUN_BACKEND_H
#define CANARY_LAUNCH_RUN_BACKEND_H

#include <stddef.h>

struct config;
struct dist_ctx;
struct model;

enum { MATMUL_AUTO, MATMUL_OPENBLAS, MATMUL_ONEDNN }; // train.matmul_backend's values

struct run_backend {
    int onednn;    // this rank: 1 oneDNN's matmul, 0 OpenBLAS (bf16: round, then sgemm)
    int mixed;     // ranks differ (auto on different CPUs)
    char why[256]; // why oneDNN is not used with bf16 here (its refusal), else ""
};

// Chooses this rank's backend from the config and `avail`, whether oneDNN runs a matmul of the
// config's precision on this CPU (mm_dnnl_available; `why` its reason when not). Collective: call
// on every rank of d. Returns 0, or -1 on every rank with a one-line message in err when
// matmul_backend = onednn and some rank cannot, or with bf16 and train.deterministic when the
// ranks would run different backends (their fp32 sums differ in order, so the promise of bitwise
// results could not hold).
int run_choose_backend(struct dist_ctx *d, const struct config *c, int avail, const char *why,
                       struct run_backend *b, char *err, size_t errlen);

// "bf16 linear layers and attention products (operands rounded to nearest even, fp32
// accumulation); backend: ...", naming the library, instruction set and implementations; for
// fp32 on OpenBLAS "fp32; backend: OpenBLAS sgemm". After model_set_precision.
void run_backend_describe(const struct config *c, const struct run_backend *b,
                          const struct model *m, char *buf, size_t len);

#endif
