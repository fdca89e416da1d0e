// Counter-keyed sampling: no state, so resume and any rank count see the same sequences.
#include "data/sampler.h"

#include "util/rng.h"

static void copy_seq(const uint16_t *src, int *inputs, int *targets, int T)
{
    for (int t = 0; t < T; t++) {
        inputs[t] = src[t];
        targets[t] = src[t + 1];
    }
}

void sampler_train_batch(const struct sampler *s, int *inputs, int *targets, uint64_t first, int B)
{
    int T = s->seq_len;
    uint64_t starts = s->n_train - (size_t)T; // valid starts: [0, n_train − T − 1]
    for (int b = 0; b < B; b++) {
        uint64_t start = rng_u64(s->seed, RNG_STREAM_SAMPLE, first + (uint64_t)b) % starts;
        copy_seq(s->train + start, inputs + (size_t)b * T, targets + (size_t)b * T, T);
    }
}

size_t sampler_eval_sequences(const struct sampler *s)
{
    return (s->n_val - 1) / (size_t)s->seq_len;
}

void sampler_eval_batch(const struct sampler *s, int *inputs, int *targets, uint64_t first, int B)
{
    int T = s->seq_len;
    size_t count = sampler_eval_sequences(s);
    for (int b = 0; b < B; b++) {
        size_t k = (size_t)((first + (uint64_t)b) % count);
        copy_seq(s->val + k * T, inputs + (size_t)b * T, targets + (size_t)b * T, T);
    }
}
