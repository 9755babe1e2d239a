/* The bootstrap particle filter in C: the driver of ppl.inference.smc.native.
 *
 * Appended to the generated step code, which defines
 *     PPL_STEPS, PPL_SLOTS, ppl_slot_size[PPL_SLOTS]     the latents' slots (doubles/particle)
 *     PPL_NORMALS                                        the most normals a step draws per row
 *     ppl_live_start[PPL_STEPS + 1], ppl_live_slot[]     per step, the slots live before it
 *     ppl_drawn_start[PPL_STEPS + 1], ppl_drawn_slot[]   per step, the slots it draws
 *     ppl_run_step(k, n, rng, slot, lw, z, constants, inputs)
 * (and includes scalar.h and rng.h). ppl_filter_run makes the whole run, in float64, with the
 * algorithm of ParticleFilter.run_program: before step k > 0 the particles are resampled
 * systematically when the ESS of the normalized weights is below threshold * n (the live
 * slots gathered by the ancestor indices, the weights reset to 1/n); the step draws its
 * latents and its incremental log weights; the log-evidence increment is the log-sum-exp of
 * the weighted increments, the weights are renormalized, the ESS and the weighted mean of
 * every drawn latent recorded. Returns 0, or 1 + 2k when step k gives a NaN log weight,
 * 2 + 2k when every particle's weight is zero after step k.
 *
 * Every name at file scope starts with pf_ (or is ppl_filter_run).
 */

/* log sum_i exp(x_i): -inf when every x_i is -inf, NaN when one is. */
static double pf_log_sum_exp(const double *restrict x, long n)
{
    double top = -INFINITY;
    for (long i = 0; i < n; i++)
        if (x[i] > top || isnan(x[i]))
            top = x[i];
    if (isinf(top) || isnan(top))
        return top;
    double total = 0.0;
#pragma omp simd reduction(+:total)
    for (long i = 0; i < n; i++)
        total += ppl_exp(x[i] - top);
    return top + log(total);
}

/* Systematic resampling of the normalized weights w: u_j = (j + u) / n times their total,
   index j the number of particles whose cumulative weight is at most u_j (the first one
   whose cumulative weight exceeds it), at most the last particle of positive weight (as
   resampling.systematic). Branch-free: particle i's cumulative weight c_i is at most u_j
   exactly for j >= m_i = ceil(c_i n / total - u), so counting the m_i and summing the
   counts gives every index at once. */
static void pf_systematic(const double *restrict w, long n, double u, int64_t *restrict index)
{
    double total = 0.0;
    long last = 0;
    for (long i = 0; i < n; i++) {
        total += w[i];
        last = w[i] > 0.0 ? i : last;
    }
    const double scale = n / total;
    memset(index, 0, sizeof(int64_t) * n);
    double cdf = 0.0;
    for (long i = 0; i < n; i++) {
        cdf += w[i];
        double first = ceil(cdf * scale - u);
        long m = first < 0.0 ? 0 : first > n ? n : (long)first;
        if (m < n)
            index[m]++;
    }
    int64_t count = 0;
    for (long j = 0; j < n; j++) {
        count += index[j];
        index[j] = count < last ? count : last;
    }
}
/* Every live slot's rows in ancestor order (into its spare buffer, which then swaps in). */
static void pf_gather(int k, long n, const int64_t *restrict index, double **slot, double **spare)
{
    for (int t = ppl_live_start[k]; t < ppl_live_start[k + 1]; t++) {
        int s = ppl_live_slot[t];
        long size = ppl_slot_size[s];
        const double *from = slot[s];
        double *to = spare[s];
        if (size == 1)
            for (long j = 0; j < n; j++)
                to[j] = from[index[j]];
        else
            for (long j = 0; j < n; j++)
                memcpy(to + j * size, from + index[j] * size, sizeof(double) * size);
        spare[s] = slot[s];
        slot[s] = to;
    }
}

/* The weighted mean of each slot step k drew, element by element, appended at *means. */
static double *pf_means(int k, long n, const double *restrict w, double *const *slot,
                        double *means)
{
    for (int t = ppl_drawn_start[k]; t < ppl_drawn_start[k + 1]; t++) {
        int s = ppl_drawn_slot[t];
        long size = ppl_slot_size[s];
        for (long e = 0; e < size; e++) {
            double total = 0.0;
#pragma omp simd reduction(+:total)
            for (long i = 0; i < n; i++)
                total += w[i] * slot[s][i * size + e];
            *means++ = total;
        }
    }
    return means;
}

/* The run (see the top of the file). slot/spare: each slot's two buffers of n * size
   doubles (swapped by resampling: slot[] holds the current ones on return); log_w: n, the
   final normalized log weights; lw: n and z: n * PPL_NORMALS of scratch; w: n, the weights
   exp(log_w); ancestors: PPL_STEPS * n, or NULL
   with index: n of scratch; ess, increments, resampled: PPL_STEPS each; means: every drawn
   element of every step, in step and slot order. */
int ppl_filter_run(long n, uint64_t seed, double threshold, double **slot, double **spare,
                   const void *const *const *constants, const void *const *inputs,
                   double *restrict log_w, double *restrict lw, double *restrict z,
                   double *restrict w,
                   int64_t *ancestors, int64_t *index, double *ess, double *increments,
                   unsigned char *resampled, double *means)
{
    ppl_rng rng;
    ppl_rng_seed(&rng, seed);
    const double flat = -log((double)n);
    for (long i = 0; i < n; i++)
        log_w[i] = flat;
    for (int k = 0; k < PPL_STEPS; k++) {
        int64_t *parents = ancestors != NULL ? ancestors + (long)k * n : index;
        resampled[k] = k > 0 && ess[k - 1] < threshold * n;
        if (resampled[k]) {  /* w: the normalized weights of step k - 1 */
            pf_systematic(w, n, ppl_rng_uniform(&rng), parents);
            pf_gather(k, n, parents, slot, spare);
            for (long i = 0; i < n; i++)
                log_w[i] = flat;
        } else if (ancestors != NULL) {
            for (long i = 0; i < n; i++)
                parents[i] = i;
        }
        ppl_run_step(k, n, &rng, slot, lw, z, constants, inputs);
        for (long i = 0; i < n; i++) {
            if (isnan(lw[i]))
                return 1 + 2 * k;
            lw[i] += log_w[i];
        }
        double total = pf_log_sum_exp(lw, n);
        if (total == -INFINITY)
            return 2 + 2 * k;
        increments[k] = total;
        double squares = 0.0;
#pragma omp simd reduction(+:squares)
        for (long i = 0; i < n; i++) {
            log_w[i] = lw[i] - total;
            w[i] = ppl_exp(log_w[i]);
            squares += w[i] * w[i];
        }
        ess[k] = 1.0 / squares;
        means = pf_means(k, n, w, slot, means);
    }
    return 0;
}
