// provides: xent_forward_backward — softmax cross-entropy fused with the output z-loss.
//
// For each token row: log Z = logsumexp(logits), ce = log Z − logit[target],
// z = coef · (log Z)² (PaLM / Wortsman). The loss of a batch is the mean over its tokens of
// ce + z. The gradient overwrites the logits in place (llm.c's trick: no second [N, V] buffer).
#ifndef CANARY_LOSSES_XENT_H
#define CANARY_LOSSES_XENT_H

struct loss_parts {
    double total;    // ce + z + aux
    double ce;       // mean cross-entropy
    double z;        // coef · mean(log² Z), already scaled
    double aux;      // MoE auxiliary losses (balance + router_z); 0 for dense models
    double balance;  // MoE load-balancing loss, scaled (optim.balance_loss)
    double router_z; // MoE router z-loss, scaled (optim.router_z_loss)
};

// The parts as an array of LOSS_PARTS doubles (total, ce, z, aux, balance, router_z), for
// gathering across ranks.
#define LOSS_PARTS 6
void loss_parts_pack(const struct loss_parts *p, double *out);
void loss_parts_unpack(struct loss_parts *p, const double *in);

// What the loss reports about the logits for the output probes (DESIGN.md §8). The sums come
// from the loss's own max pass over each row, while the row is in cache: the probes cost no
// further sweep over the [n, V] logits (at V = 8192, d = 64 the two sweeps they replace cost
// about 4% of a step).
struct xent_probe {
    float *logz;   // in: [n], receives log Z per row (of the capped logits when softcap > 0)
    double sumsq;  // out: Σ logit² over the n rows of raw logits, row sums added in row order
    double absmax; // out: max |logit| over the raw logits; NaN when any is NaN
};

// logits[n, V] in; on return logits holds dL/dlogits · grad_scale where L is the mean loss over
// the n rows (grad_scale = 1/grad_accum for micro-batches). targets[n] < V. probe (may be NULL)
// gets log Z per row and the logit statistics. parts gets the means (unscaled by grad_scale).
// softcap > 0: the loss is of the capped logits softcap·tanh(z/softcap) (Gemma 2), log Z too,
// and the gradient is with respect to the raw logits; 0: no capping.
void xent_forward_backward(struct loss_parts *parts, float *logits, struct xent_probe *probe,
                           const int *targets, int n, int vocab, float z_coef, float grad_scale,
                           float softcap);

// Loss only (evaluation): logits are left unchanged. softcap as above.
void xent_forward(struct loss_parts *parts, const float *logits, const int *targets, int n,
                  int vocab, float z_coef, float softcap);

#endif
