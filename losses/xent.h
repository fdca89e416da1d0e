// provides: xent_forward_backward — softmax cross-entropy fused with the output z-loss.
//
// For each token row: log Z = logsumexp(logits), ce = log Z − logit[target],
// z = coef · (log Z)² (PaLM / Wortsman). The loss of a batch is the mean over its tokens of
// ce + z. The gradient overwrites the logits in place (llm.c's trick: no second [N, V] buffer).
#ifndef CANARY_LOSSES_XENT_H
#define CANARY_LOSSES_XENT_H

struct loss_parts {
    double total; // ce + z (+ aux, with the MoE issue)
    double ce;    // mean cross-entropy
    double z;     // coef · mean(log² Z), already scaled
    double aux;   // MoE auxiliary losses; 0 for dense models
};

// logits[n, V] in; on return logits holds dL/dlogits · grad_scale where L is the mean loss over
// the n rows (grad_scale = 1/grad_accum for micro-batches). targets[n] < V. logz[n] receives
// log Z per row (for probes; may be NULL). parts gets the means (unscaled by grad_scale).
void xent_forward_backward(struct loss_parts *parts, float *logits, float *logz, const int *targets,
                           int n, int vocab, float z_coef, float grad_scale);

// Loss only (evaluation): logits are left unchanged.
void xent_forward(struct loss_parts *parts, const float *logits, const int *targets, int n,
                  int vocab, float z_coef);

#endif
