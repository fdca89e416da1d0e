// provides: struct lr_probe — the local LR-sensitivity probe (DESIGN.md §8): every
//           probes.lr_probe_every steps, between computing the update and applying it, the loss
//           of a fixed probe batch at trial weights θ − f·(update) for f = 0, ½, 1, 2.
#ifndef CANARY_LAUNCH_LR_PROBE_H
#define CANARY_LAUNCH_LR_PROBE_H

struct run;

struct lr_probe {
    float *trial;                 // [table.total] trial weights (every rank)
    int *inputs, *targets;        // [micro_batch, T] a chunk of the fixed probe batch
    double *loss_all, *loss_mine; // [LOSS_PARTS · leaves], [· micro_steps] chunk losses
    double loss[4];               // probe-batch loss at lr × {0, ½, 1, 2}
    int due;                      // set by the loop: the coming step runs the probe
};

// The probe's buffers for run r (its model, micro-batch and leaves set up), or NULL when the
// run takes no LR probe (probes off, lr_probe_every = 0, or random benchmark data).
struct lr_probe *lr_probe_init(const struct run *r);
void lr_probe_free(struct lr_probe *p);

// Runs the probe for the update in r->update at learning rate lr_t, which update-norm clipping
// scaled by clip (1 when it did not; see lr_probe.c); fills p->loss. Every rank takes part;
// parameters are not touched.
void lr_probe_run(struct lr_probe *p, struct run *r, double lr_t, double clip);

#endif
