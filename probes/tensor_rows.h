// provides: probe_tensor_rows — the per-tensor probe rows (gradient, parameter, update RMS,
//           AdamW's second-moment statistics, Muon's) over a table of tensors, as a pure
//           function on plain arrays.
//
// Tensor i is the range [offset[i], offset[i] + size[i]) of every flat array. Nothing here
// knows about the model: launch/ hands over the tensor table's offsets and the optimizer state.
#ifndef CANARY_PROBES_TENSOR_ROWS_H
#define CANARY_PROBES_TENSOR_ROWS_H

#include <stddef.h>

struct probe_tensor_in {
    int n;                       // tensors
    const size_t *offset, *size; // [n]
    const double *grad_sumsq;    // [n] Σ g² of the reduced gradient, before clipping
    const float *params;         // after the update
    const float *update;         // the update applied (ignored when skipped)
    const float *adam_v;         // AdamW's second moment (raw, not bias-corrected)
    long adam_t;                 // AdamW's step count t (0: no update yet)
    double beta2, eps;
    const int *muon;            // [n] 1 for Muon's tensors (AdamW's v is unused there), or NULL
    const float *muon_momentum; // Muon's momentum, or NULL
    const double *muon_ortho;   // [n] Newton–Schulz orthogonality error, or NULL
    int skipped;                // the step computed no update: update and ortho rows are NaN
};

// Row buffers [n]; a NULL pointer is skipped.
struct probe_tensor_out {
    double *grad_rms, *param_rms, *update_rms;
    double *adam_sqrt_v_rms;  // RMS of sqrt(v̂), v̂ = v / (1 − β₂ᵗ); 0 for Muon's tensors
    double *adam_eps_frac;    // fraction of entries with sqrt(v̂) < ε (v = 0 included)
    double *adam_v_zero_frac; // entries with v = 0 (never updated, or decayed to 0)
    double *muon_ortho, *muon_momentum_rms; // 0 for AdamW's tensors
};

void probe_tensor_rows(const struct probe_tensor_in *in, const struct probe_tensor_out *out);

#endif
