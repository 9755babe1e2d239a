/* Resampling in C, the schemes of ppl.inference.smc.resampling: ancestor indices from
 * normalized float64 weights w (finite, none negative, a positive total), each scheme
 * unbiased (particle i has n w_i offspring in expectation). Cumulative sums are float64;
 * every index is clamped to the last particle of positive weight, so a uniform that
 * rounding puts past the last cumulative sum never gives an index out of range nor a
 * particle of weight zero. Included by the C filter (filter.c) and, alone, by
 * ppl.inference.smc.native_resampling's test library; needs rng.h. Every name at file
 * scope starts with pf_.
 *
 * Scheme codes (native_resampling.SCHEME_CODES): 0 multinomial, 1 stratified,
 * 2 systematic, 3 residual. The multinomial draws come out sorted (the order statistics of
 * n uniforms from normalized exponential spacings, so one pass over the weights serves
 * them all): the offspring counts are multinomial, the order carries no information.
 */

/* The total of w and the last index of positive weight. */
static double pf_total(const double *restrict w, long n, long *last)
{
    double total = 0.0;
    long top = 0;
    for (long i = 0; i < n; i++) {
        total += w[i];
        top = w[i] > 0.0 ? i : top;
    }
    *last = top;
    return total;
}

/* index[j] = the first particle whose cumulative weight exceeds points[j] * total, for
   non-decreasing points in [0, 1], at most the last particle of positive weight. */
static void pf_invert_sorted(const double *restrict w, long n, const double *restrict points,
                             long m, int64_t *restrict index)
{
    long last;
    double total = pf_total(w, n, &last);
    long i = 0;
    double cdf = w[0];
    for (long j = 0; j < m; j++) {
        double point = points[j] * total;
        while (i < last && cdf <= point)
            cdf += w[++i];
        index[j] = i;
    }
}

/* m sorted uniforms in [0, 1): S_j / S_{m+1} for S the partial sums of m + 1 exponentials. */
static void pf_sorted_uniforms(ppl_rng *rng, long m, double *restrict out)
{
    double sum = 0.0;
    for (long j = 0; j < m; j++) {
        sum += ppl_std_exponential(ppl_rng_uniform(rng));
        out[j] = sum;
    }
    double scale = 1.0 / (sum + ppl_std_exponential(ppl_rng_uniform(rng)));
    for (long j = 0; j < m; j++)
        out[j] *= scale;
}

/* m multinomial draws from w (scratch: m doubles). */
static void pf_multinomial(const double *restrict w, long n, long m, ppl_rng *rng,
                           double *restrict scratch, int64_t *restrict index)
{
    pf_sorted_uniforms(rng, m, scratch);
    pf_invert_sorted(w, n, scratch, m, index);
}

/* One uniform in each of m strata [j/m, (j+1)/m) (scratch: m doubles). */
static void pf_stratified(const double *restrict w, long n, long m, ppl_rng *rng,
                          double *restrict scratch, int64_t *restrict index)
{
    for (long j = 0; j < m; j++)
        scratch[j] = (j + ppl_rng_uniform(rng)) / m;
    pf_invert_sorted(w, n, scratch, m, index);
}

/* Systematic resampling: u_j = (j + u) / m times the total, index j the first particle
   whose cumulative weight exceeds u_j, at most the last particle of positive weight.
   Branch-free: particle i's cumulative weight c_i is at most u_j exactly for
   j >= m_i = ceil(c_i m / total - u), so counting the m_i and summing the counts gives
   every index at once. */
static void pf_systematic(const double *restrict w, long n, long m, double u,
                          int64_t *restrict index)
{
    long last;
    const double scale = m / pf_total(w, n, &last);
    memset(index, 0, sizeof(int64_t) * m);
    double cdf = 0.0;
    for (long i = 0; i < n; i++) {
        cdf += w[i];
        double first = ceil(cdf * scale - u);
        long at = first < 0.0 ? 0 : first > m ? m : (long)first;
        if (at < m)
            index[at]++;
    }
    int64_t count = 0;
    for (long j = 0; j < m; j++) {
        count += index[j];
        index[j] = count < last ? count : last;
    }
}

/* floor(m w_i) copies of particle i, then the rest drawn multinomially from the residuals
   m w_i - floor(m w_i) (the weights themselves should rounding leave no residual mass);
   scratch: n + m doubles. */
static void pf_residual(const double *restrict w, long n, long m, ppl_rng *rng,
                        double *restrict scratch, int64_t *restrict index)
{
    double *rest = scratch, residual = 0.0;
    long j = 0;
    for (long i = 0; i < n; i++) {
        double scaled = m * w[i], copies = floor(scaled);
        rest[i] = scaled - copies;
        residual += rest[i];
        for (long c = 0; c < (long)copies && j < m; c++)
            index[j++] = i;
    }
    if (j < m)
        pf_multinomial(residual > 0.0 ? rest : w, n, m - j, rng, scratch + n, index + j);
}

/* m ancestor indices from the n weights w by scheme (see the top of the file); scratch:
   n + m doubles. */
static void pf_resample(int scheme, const double *restrict w, long n, long m, ppl_rng *rng,
                        double *restrict scratch, int64_t *restrict index)
{
    switch (scheme) {
    case 0: pf_multinomial(w, n, m, rng, scratch, index); break;
    case 1: pf_stratified(w, n, m, rng, scratch, index); break;
    case 2: pf_systematic(w, n, m, ppl_rng_uniform(rng), index); break;
    default: pf_residual(w, n, m, rng, scratch, index); break;
    }
}
