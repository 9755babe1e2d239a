/* Random numbers for the C samplers and filters: xoshiro256** (Blackman & Vigna) seeded by
   splitmix64 from one 64-bit word, uniforms from the top 53 bits, standard normals by
   Box-Muller, and the variates built on them (gamma, Student's t, beta, Poisson, binomial). Prepended
   as text to the units that use it (nuts.c, the particle filter), so a unit's hash covers
   it; every name starts with ppl_rng. */
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
/* Gamma(shape, 1) by Marsaglia & Tsang (2000): d = shape - 1/3, c = 1 / sqrt(9 d), propose
   d (1 + c x)^3 for a standard normal x, accept with the squeeze 1 - 0.0331 x^4 or the log
   test; a shape below 1 is boosted, Gamma(shape + 1) u^(1 / shape) (in logs, so tiny
   shapes give tiny draws rather than zeros past necessity). */
static double ppl_rng_gamma(ppl_rng *rng, double shape)
{
    double boost = 0.0;
    if (shape < 1.0) {
        boost = log(1.0 - ppl_rng_uniform(rng)) / shape;
        shape += 1.0;
    }
    const double d = shape - 1.0 / 3.0, c = 1.0 / sqrt(9.0 * d);
    for (;;) {
        double x = ppl_rng_normal(rng), v = 1.0 + c * x;
        if (v <= 0.0)
            continue;
        v = v * v * v;
        double u = 1.0 - ppl_rng_uniform(rng), x2 = x * x;
        if (u < 1.0 - 0.0331 * x2 * x2 || log(u) < 0.5 * x2 + d * (1.0 - v + log(v)))
            return boost == 0.0 ? d * v : exp(log(d * v) + boost);
    }
}

/* Student's t with df degrees of freedom: x / sqrt(chi2_df / df), chi2 = 2 Gamma(df / 2). */
static double ppl_rng_student_t(ppl_rng *rng, double df)
{
    double chi2 = 2.0 * ppl_rng_gamma(rng, 0.5 * df);
    return ppl_rng_normal(rng) / sqrt(fmax(chi2, 0x1p-1022) / df);
}

/* Beta(a, b) = G_a / (G_a + G_b), kept inside the open unit interval (as torch's rule). */
static double ppl_rng_beta(ppl_rng *rng, double a, double b)
{
    double ga = ppl_rng_gamma(rng, a), gb = ppl_rng_gamma(rng, b);
    return fmin(fmax(ga / (ga + gb), 0x1p-1022), 1.0 - 0x1p-52);
}

/* Poisson(rate) as a double: below rate 10 by sequential inversion of one uniform (at most
   about 40 terms); from 10 on by Hoermann's transformed rejection with squeeze (PTRS, 1993),
   whose acceptance is above 0.9 for every such rate. A rate of 0 gives 0. */
static double ppl_rng_poisson(ppl_rng *rng, double rate)
{
    if (rate < 10.0) {
        double u = ppl_rng_uniform(rng), p = exp(-rate), cdf = p, k = 0.0;
        while (u > cdf && p > 0.0) {
            k += 1.0;
            p *= rate / k;
            cdf += p;
        }
        return k;
    }
    const double s = sqrt(rate), log_rate = log(rate);
    const double b = 0.931 + 2.53 * s, a = -0.059 + 0.02483 * b;
    const double inv_alpha = 1.1239 + 1.1328 / (b - 3.4), vr = 0.9277 - 3.6224 / (b - 2.0);
    for (;;) {
        double u = ppl_rng_uniform(rng) - 0.5, v = ppl_rng_uniform(rng);
        double us = 0.5 - fabs(u), k = floor((2.0 * a / us + b) * u + rate + 0.43);
        if (us >= 0.07 && v <= vr)
            return k;
        if (k < 0.0 || (us < 0.013 && v > us))
            continue;
        if (log(v) + log(inv_alpha) - log(a / (us * us) + b)
                <= -rate + k * log_rate - lgamma(k + 1.0))
            return k;
    }
}

/* Binomial(count, p) as a double, exactly, by splitting at a median order statistic
   (Devroye 1986, X.4): the i-th smallest of count uniforms is V ~ Beta(i, count + 1 - i);
   when V < p the i smallest all count and the rest are uniform above V, else only the
   i - 1 below V can; each split halves the count, and at most 16 uniforms finish it. */
static double ppl_rng_binomial(ppl_rng *rng, double count, double p)
{
    double k = 0.0;
    while (count > 16.0) {
        double i = floor(0.5 * (count + 1.0)), v = ppl_rng_beta(rng, i, count + 1.0 - i);
        if (v < p) {
            k += i;
            count -= i;
            p = (p - v) / (1.0 - v);
        } else {
            count = i - 1.0;
            p = p / v;
        }
    }
    for (double j = 0.0; j < count; j += 1.0)
        k += ppl_rng_uniform(rng) < p;
    return k;
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
