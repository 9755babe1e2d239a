/* Scalar helpers of the generated potentials, with torch's semantics (NaN propagation,
   stable branches), and the table of bound tensor constants. Included once per model. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define PPL_PI 3.14159265358979323846

/* Branch-free exp, log and log1p (about 1 ulp), so that loops over them vectorize; the libm
   ones are calls that stop the vectorizer, and they dominate a large model's gradient. (So
   do fmin/fmax: selects are written as conditionals.) */
static inline uint64_t ppl_bits(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
static inline double ppl_double(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }

/* exp(x) for |x| <= 710 (callers clamp): x = n ln2 + r, |r| <= ln2/2; e^r by its Taylor
   polynomial of degree 13 (truncation error below 2e-17 relative), 2^n built from bits. */
static inline double ppl_exp_core(double x) {
    const double shift = 0x1.8p52;
    double kd = x * 0x1.71547652b82fep0 + shift;    /* round(x / ln2) in the low bits */
    uint64_t ki = ppl_bits(kd);
    kd -= shift;
    double r = (x - kd * 0x1.62e42fefa3800p-1) - kd * 0x1.ef35793c76730p-45;
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    return p * ppl_double((ki << 52) + ((uint64_t)1023 << 52));
}

/* exp(x), branch-free so loops over it vectorize; NaN in, NaN out. */
static inline double ppl_exp(double x) {
    double c = x > 710.0 ? 710.0 : (x < -750.0 ? -750.0 : x);
    double low = c < -700.0 ? 1.0 : 0.0;               /* subnormal results: e^-700 apart */
    double e = ppl_exp_core(c + 700.0 * low) * (low != 0.0 ? 0x1.1f5f5e1a2f1bap-1010 : 1.0);
    return x != x ? x : e;
}

/* log(x): x = m 2^e with m in [sqrt(1/2), sqrt(2)); log m = 2 atanh(s), s = (m-1)/(m+1). */
static inline double ppl_log(double x) {
    double tiny = x < 0x1p-1022 ? 1.0 : 0.0;           /* subnormals: scale up by 2^60 */
    double y = tiny != 0.0 ? x * 0x1p60 : x;
    uint64_t u = ppl_bits(y);
    uint64_t biased = u >> 52;                          /* sign is 0 for valid inputs */
    double m = ppl_double((u & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL);
    double big = m > 0x1.6a09e667f3bcdp0 ? 1.0 : 0.0;
    m = big != 0.0 ? 0.5 * m : m;
    double e = (ppl_double(biased | 0x4330000000000000ULL) - 0x1p52) - 1023.0 + big - 60.0 * tiny;
    double s = (m - 1.0) / (m + 1.0), s2 = s * s;
    double q = 2.0 / 21;
    q = q * s2 + 2.0 / 19;
    q = q * s2 + 2.0 / 17;
    q = q * s2 + 2.0 / 15;
    q = q * s2 + 2.0 / 13;
    q = q * s2 + 2.0 / 11;
    q = q * s2 + 2.0 / 9;
    q = q * s2 + 2.0 / 7;
    q = q * s2 + 2.0 / 5;
    q = q * s2 + 2.0 / 3;
    double logm = 2.0 * s + s * s2 * q;
    double r = e * 0x1.62e42fefa3800p-1 + (logm + e * 0x1.ef35793c76730p-45);
    r = x == 0.0 ? -INFINITY : r;
    r = x < 0.0 ? NAN : r;
    r = x == INFINITY ? x : r;
    return x != x ? x : r;
}

/* log1p(x) = log(u) + (x - (u - 1)) / u with u = 1 + x (the rounding of u corrected). */
static inline double ppl_log1p(double x) {
    double u = 1.0 + x, l = ppl_log(u);
    double c = (x - (u - 1.0)) / u;
    return (u == INFINITY || u == 0.0) ? l : l + c;
}

static inline double ppl_square(double x) { return x * x; }
static inline double ppl_sign(double x) { return isnan(x) ? x : (double)((x > 0) - (x < 0)); }
static inline double ppl_maximum(double a, double b) {
    return isnan(a) || isnan(b) ? NAN : (a > b ? a : b);
}
/* sigmoid, logsigmoid and softplus of x from e = exp(-|x|), which a fused loop computes
   once for all three (the compiler does not merge the inlined exps itself) */
static inline double ppl_sigmoid_e(double x, double e) {
    double s = 1.0 / (1.0 + e);
    return x >= 0 ? s : e * s;
}
static inline double ppl_logsigmoid_e(double x, double e) {
    return (x < 0.0 ? x : 0.0) - ppl_log1p(e);
}
/* torch's softplus: log1p(exp(x)), and x itself above 20 */
static inline double ppl_softplus_e(double x, double e) {
    return x > 20.0 ? x : (x > 0.0 ? x : 0.0) + ppl_log1p(e);
}
static inline double ppl_sigmoid(double x) { return ppl_sigmoid_e(x, ppl_exp(-fabs(x))); }
static inline double ppl_logsigmoid(double x) { return ppl_logsigmoid_e(x, ppl_exp(-fabs(x))); }
static inline double ppl_softplus(double x) { return ppl_softplus_e(x, ppl_exp(-fabs(x))); }
/* log(exp(a) + exp(b)), as torch's logcumsumexp steps: infinities kept, NaN in, NaN out */
static inline double ppl_logaddexp(double a, double b) {
    if (isnan(a) || isnan(b)) return NAN;
    double m = a > b ? a : b;
    return isinf(m) ? m : m + ppl_log1p(ppl_exp(-fabs(a - b)));
}
/* log(1 - exp(a)) for a <= 0, by the branch that keeps its precision */
static inline double ppl_log1mexp(double a) {
    return a > -0x1.62e42fefa39efp-1 ? ppl_log(-expm1(a)) : ppl_log1p(-ppl_exp(a));
}
/* log Phi(x) of the standard normal CDF: log1p of the upper tail above -1, the log of erfc
   down to -20, then the asymptotic series of the Mills ratio (terms to x^-16, below 2e-16) */
static double ppl_log_ndtr(double x) {
    if (isnan(x)) return x;
    if (x > -1.0) return log1p(-0.5 * erfc(x * 0.70710678118654752440));
    if (x > -20.0) return log(0.5 * erfc(-x * 0.70710678118654752440));
    double r = 1.0 / (x * x), term = 1.0, series = 0.0;
    for (int k = 1; k <= 8; k++) { term *= -(2 * k - 1) * r; series += term; }
    return -0.5 * x * x - log(-x) - 0.91893853320467274178 + log1p(series);
}
/* log I0(x) as torch's VonMises computes it: Abramowitz and Stegun 9.8.1-2, below and above
   3.75 (ppl.inference.lowering.tape.prims holds the same coefficients); its derivative */
static const double ppl_i0_small[7] = {1.0, 3.5156229, 3.0899424, 1.2067492, 0.2659732,
                                       0.0360768, 0.0045813};
static const double ppl_i0_large[9] = {0.39894228, 0.01328592, 0.00225319, -0.00157565,
                                       0.00916281, -0.02057706, 0.02635537, -0.01647633,
                                       0.00392377};
static inline void ppl_polynomial(double y, const double *c, int n, double *value,
                                  double *slope) {
    double v = c[n - 1], s = 0.0;
    for (int k = n - 2; k >= 0; k--) { s = s * y + v; v = v * y + c[k]; }
    *value = v; *slope = s;
}
static double ppl_log_i0(double x) {
    double v, s;
    if (x < 3.75) { ppl_polynomial(x * x / 14.0625, ppl_i0_small, 7, &v, &s); return log(v); }
    ppl_polynomial(3.75 / x, ppl_i0_large, 9, &v, &s);
    return x - 0.5 * log(x) + log(v);
}
static double ppl_log_i0_slope(double x) {
    double v, s;
    if (x < 3.75) {
        ppl_polynomial(x * x / 14.0625, ppl_i0_small, 7, &v, &s);
        return s / v * (2.0 / 14.0625) * x;
    }
    ppl_polynomial(3.75 / x, ppl_i0_large, 9, &v, &s);
    return 1.0 - 0.5 / x - s / v * 3.75 / (x * x);
}
/* psi(x): reflection below 0, recurrence up to 10, then the asymptotic series */
static double ppl_digamma(double x) {
    if (x == 0.0) return -INFINITY;
    if (x < 0.0) {
        if (x == floor(x)) return NAN;
        return ppl_digamma(1.0 - x) - PPL_PI / tan(PPL_PI * x);
    }
    double shift = 0.0;
    while (x < 10.0) { shift -= 1.0 / x; x += 1.0; }
    double r = 1.0 / (x * x);
    return shift + log(x) - 0.5 / x
        - r * (1.0 / 12 - r * (1.0 / 120 - r * (1.0 / 252 - r * (1.0 / 240 - r / 132))));
}
/* psi'(x), the same way */
static double ppl_trigamma(double x) {
    if (x <= 0.0 && x == floor(x)) return INFINITY;
    if (x < 0.0) {
        double s = sin(PPL_PI * x);
        return -ppl_trigamma(1.0 - x) + PPL_PI * PPL_PI / (s * s);
    }
    double shift = 0.0;
    while (x < 10.0) { shift += 1.0 / (x * x); x += 1.0; }
    double r = 1.0 / (x * x);
    return shift + 1.0 / x + r / 2
        + r / x * (1.0 / 6 - r * (1.0 / 30 - r * (1.0 / 42 - r * (1.0 / 30 - r * 5.0 / 66))));
}

static const void *const *ppl_K;  /* bound tensor constants */
void ppl_bind(const void *const *constants) { ppl_K = constants; }
