// provides: rng_u64, rng_uniform, rng_normal, rng_trunc_normal, rng_stream_of: a counter-based RNG.
//
// Every random number is a pure function of (seed, stream, index): there is no generator state to
// carry, split or checkpoint. Weight init keys the stream by the tensor's name, so a tensor's
// values depend only on the seed and its name, never on world size, thread count or the order in
// which tensors are initialised; the data sampler keys by the global sample index (DESIGN.md §4).
#ifndef CANARY_UTIL_RNG_H
#define CANARY_UTIL_RNG_H

#include <stdint.h>

// Streams of the sampler and evaluation; tensors use rng_stream_of(name).
enum rng_stream {
    RNG_STREAM_SAMPLE = 1,
    RNG_STREAM_BENCH_TOKENS = 2,
};

// 64 well-mixed bits for (seed, stream, index).
uint64_t rng_u64(uint64_t seed, uint64_t stream, uint64_t index);
// Uniform in (0, 1), never exactly 0 or 1.
double rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);
// Standard normal (Box-Muller on two uniforms derived from index).
double rng_normal(uint64_t seed, uint64_t stream, uint64_t index);
// Standard normal truncated to [-2, 2] by rejection; attempts are keyed by index too.
double rng_trunc_normal(uint64_t seed, uint64_t stream, uint64_t index);
// A stream id from a string (FNV-1a), used to key tensors by name.
uint64_t rng_stream_of(const char *name);

#endif
