/* Random numbers for the C samplers and filters: xoshiro256** (Blackman & Vigna) seeded by
   splitmix64 from one 64-bit word, uniforms from the top 53 bits, standard normals by
   Box-Muller. Prepended as text to the units that use it (nuts.c, the particle filter), so a
   unit's hash covers it; every name starts with ppl_rng. */
#ifndef PPL_RNG_H
#define PPL_RNG_H
#include <math.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
    double spare;   /* the second normal of the last Box-Muller pair (ppl_rng_normal) */
    int has_spare;
} ppl_rng;

/* splitmix64: spreads one 64-bit seed over the xoshiro state (never all zero). */
static uint64_t ppl_rng_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static void ppl_rng_seed(ppl_rng *rng, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        rng->s[i] = ppl_rng_splitmix64(&seed);
    rng->has_spare = 0;
}

static inline uint64_t ppl_rng_rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t ppl_rng_next(ppl_rng *rng)
{
    uint64_t *s = rng->s;
    uint64_t result = ppl_rng_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = ppl_rng_rotl(s[3], 45);
    return result;
}

/* A uniform double in [0, 1). */
static inline double ppl_rng_uniform(ppl_rng *rng)
{
    return (double)(ppl_rng_next(rng) >> 11) * 0x1.0p-53;
}

/* Two independent standard normals (1 - u keeps the log away from 0). */
static inline void ppl_rng_normal_pair(ppl_rng *rng, double *a, double *b)
{
    double r = sqrt(-2.0 * log(1.0 - ppl_rng_uniform(rng)));
    double angle = 6.283185307179586 * ppl_rng_uniform(rng);
    *a = r * cos(angle);
    *b = r * sin(angle);
}

/* One standard normal: each pair serves two calls. */
static inline double ppl_rng_normal(ppl_rng *rng)
{
    if (rng->has_spare) {
        rng->has_spare = 0;
        return rng->spare;
    }
    double first;
    ppl_rng_normal_pair(rng, &first, &rng->spare);
    rng->has_spare = 1;
    return first;
}
#endif
