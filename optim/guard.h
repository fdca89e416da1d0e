// provides: struct guard_window — the rolling statistics behind the update guards: skip-step
//           (OLMo-core) and update-norm clipping (Levanter).
//
// A window keeps the last `cap` values of one per-step scalar (the loss, the gradient norm, the
// unclipped update norm) and gives the threshold mean + k·σ over them once it holds `min`
// values. σ is the sample standard deviation (n − 1), everything in double, summed oldest first:
// the same values give the same bits. What is not here: deciding what to do at a threshold
// (launch/train.c) and MPI (the values are global-batch statistics already).
#ifndef CANARY_OPTIM_GUARD_H
#define CANARY_OPTIM_GUARD_H

struct guard_window {
    double *v; // [cap] ring buffer, owned
    int cap;   // values kept (optim.guard_window)
    int n;     // values held, ≤ cap
    int head;  // slot the next value goes to
};

void guard_window_init(struct guard_window *w, int cap);
void guard_window_free(struct guard_window *w);
// Adds x (the oldest value leaves a full window). Non-finite values are not added.
void guard_window_push(struct guard_window *w, double x);
// 1 and *thr = mean + k·σ (and *mean, *sd) when the window holds at least min (≥ 2) values;
// else 0 and nothing written.
int guard_window_threshold(const struct guard_window *w, double k, int min, double *thr,
                           double *mean, double *sd);
// The n values held, oldest first, into out[w->n] (checkpoints).
void guard_window_get(const struct guard_window *w, double *out);
// Replaces the contents by in[n], oldest first (n ≤ cap; a resume).
void guard_window_set(struct guard_window *w, const double *in, int n);

#endif
