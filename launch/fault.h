// provides: struct fault — the test hooks that make one rank fail at a known step, read from
//           the environment: CANARY_FAULT=abort:RANK:STEP (RANK dies after STEP: a crashed
//           node), perturb:RANK:STEP (it corrupts one parameter: silent divergence),
//           stall:RANK:STEP (it stops responding for up to 60 s or until a stop signal: a hung
//           node), fsize:RANK:BYTES (files RANK writes may not grow past BYTES: a full disk),
//           repeat:RANK:STEP (a bad sample: the first sequence of RANK's slice of the batch of
//           step STEP is one token repeated).
#ifndef CANARY_LAUNCH_FAULT_H
#define CANARY_LAUNCH_FAULT_H

enum fault_kind { FAULT_NONE = 0, FAULT_ABORT, FAULT_PERTURB, FAULT_STALL, FAULT_REPEAT };

struct fault {
    enum fault_kind kind;
    int rank;
    long step;
};

// Reads CANARY_FAULT for the process of rank `rank` (NULL when unset or unparsable: no fault).
// fsize takes effect here, on that rank; the others at their step (fault_inject).
struct fault *fault_init(int rank);
void fault_free(struct fault *f);

// After step `step` on rank `rank`: dies, stalls, or adds 1 to param[0] (a parameter of the
// run's middle tensor), when f names this rank and step. f may be NULL.
void fault_inject(const struct fault *f, int rank, long step, float *param);

// repeat:RANK:STEP — when f names this rank and `batch` is the batch of step STEP (index STEP − 1;
// the batch, not the step, so a replay branch that draws another batch does not see it): the
// first of the rank's sequences, inputs[0, T) and targets[0, T), becomes token vocab − 1 (a byte
// no text holds, at V = 256) throughout. f may be NULL.
void fault_corrupt_batch(const struct fault *f, int rank, unsigned long long batch, int *inputs,
                         int *targets, int T, int vocab);

#endif
