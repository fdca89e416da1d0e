// Counter-based RNG: a splitmix64-style finaliser over a combination of (seed, stream, index).
// Quality is ample for weight init and sampling; it is not a cryptographic generator.
#include "util/rng.h"

#include <math.h>

static uint64_t mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

uint64_t rng_u64(uint64_t seed, uint64_t stream, uint64_t index)
{
    // Mixing each key before combining keeps (s, t, i) and (s, t', i') from colliding by sum.
    uint64_t h = mix64(seed + 0x9e3779b97f4a7c15ULL);
    h = mix64(h ^ (stream * 0xd6e8feb86659fd93ULL + 0x632be59bd9b4e019ULL));
    return mix64(h ^ (index + 0x9e3779b97f4a7c15ULL));
}

double rng_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    // 53 random bits, offset by half an ulp so the result is in (0, 1).
    uint64_t bits = rng_u64(seed, stream, index) >> 11;
    return ((double)bits + 0.5) * (1.0 / 9007199254740992.0);
}

double rng_normal(uint64_t seed, uint64_t stream, uint64_t index)
{
    double u1 = rng_uniform(seed, stream, 2 * index);
    double u2 = rng_uniform(seed, stream, 2 * index + 1);
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

double rng_trunc_normal(uint64_t seed, uint64_t stream, uint64_t index)
{
    // Acceptance is ~95%; 64 attempts fail with probability ~1e-83. Attempt k of element i uses
    // counter i * 64 + k, so elements stay independent of each other.
    for (uint64_t k = 0; k < 64; k++) {
        double z = rng_normal(seed, stream, index * 64 + k);
        if (z >= -2.0 && z <= 2.0)
            return z;
    }
    return 0.0;
}

uint64_t rng_stream_of(const char *name)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ULL;
    }
    return h;
}
