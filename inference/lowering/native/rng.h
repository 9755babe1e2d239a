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

/* Standard variates from one uniform u in [0, 1) by their inverse CDFs, finite for every u. */
static inline double ppl_std_exponential(double u) { return -log1p(-u); }
static inline double ppl_std_gumbel(double u)
{
    return -log(fmax(-log1p(-u), 0x1p-1022));
}
static inline double ppl_std_laplace(double u)
{
    double v = fmax(2.0 * u - 1.0, 0x1p-53 - 1.0);
    return v < 0.0 ? log1p(v) : -log1p(-v);
}
static inline double ppl_std_cauchy(double u) { return tan(3.141592653589793 * (u - 0.5)); }

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
/* sin and cos of 2 pi t for t in [0, 1), branch-free so that loops over it vectorize: t to
   the nearest quarter turn q, the rest r in [-pi/4, pi/4] by Taylor polynomials (truncation
   below 1e-17), then rotated by q quarter turns. */
static inline void ppl_rng_sincos_turn(double t, double *s, double *c)
{
    double q = floor(4.0 * t + 0.5);
    double r = (4.0 * t - q) * 1.5707963267948966, r2 = r * r;
    double sr = r * (1.0 + r2 * (-1.0 / 6 + r2 * (1.0 / 120 + r2 * (-1.0 / 5040
                + r2 * (1.0 / 362880 + r2 * (-1.0 / 39916800 + r2 * (1.0 / 6227020800.0
                + r2 * (-1.0 / 1307674368000.0))))))));
    double cr = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24 + r2 * (-1.0 / 720 + r2 * (1.0 / 40320
                + r2 * (-1.0 / 3628800 + r2 * (1.0 / 479001600 + r2 * (-1.0 / 87178291200.0
                + r2 * (1.0 / 20922789888000.0))))))));
    double k = q - 4.0 * floor(q * 0.25);  /* quarter turns, 0 to 3 */
    int odd = k == 1.0 || k == 3.0;
    double sa = odd ? cr : sr, ca = odd ? sr : cr;
    *s = k >= 2.0 ? -sa : sa;
    *c = (k == 1.0 || k == 2.0) ? -ca : ca;
}

/* count standard normals (Box-Muller: the radii in one loop, then the angles' sines and
   cosines in a vectorized one; both of each pair used). */
static void ppl_rng_normals(ppl_rng *rng, double *restrict out, long count)
{
    long pairs = count / 2;
    for (long i = 0; i < pairs; i++) {
        out[i] = sqrt(-2.0 * log(1.0 - ppl_rng_uniform(rng)));
        out[pairs + i] = ppl_rng_uniform(rng);
    }
#pragma omp simd
    for (long i = 0; i < pairs; i++) {
        double s, c, r = out[i];
        ppl_rng_sincos_turn(out[pairs + i], &s, &c);
        out[i] = r * c;
        out[pairs + i] = r * s;
    }
    if (count % 2)
        out[count - 1] = ppl_rng_normal(rng);
}
#endif
