/* The bootstrap particle filter in C: the driver of ppl.inference.smc.native.
 *
 * Appended to the generated step code (and resample.c), which defines
 *     PPL_STEPS, PPL_SLOTS, ppl_slot_size[PPL_SLOTS]     the latents' slots (doubles/particle)
 *     PPL_NORMALS                                        the most normals a step draws per row
 *     ppl_live_start[PPL_STEPS + 1], ppl_live_slot[]     per step, the slots live before it
 *     ppl_drawn_start[PPL_STEPS + 1], ppl_drawn_slot[]   per step, the slots it draws
 *     ppl_run_step(k, n, rng, slot, lw, z, pin, constants, inputs)   draws and weighs
 *     ppl_run_score(...)   the same arguments: log p(latents, observations) at the slots'
 *                          latents (the steps a conditional run scores; others do nothing)
 * (and includes scalar.h and rng.h). ppl_filter_run runs steps first .. stop - 1 of B
 * independent filters of n particles each (block b: rows b n .. b n + n - 1, which may
 * hold their own static values in a slot), in float64, with the algorithm of
 * ParticleFilter.run_program: before step k > 0 a block is resampled by its scheme when
 * the ESS of its normalized weights is below threshold * n (the live slots gathered by
 * the ancestor indices, the weights reset to 1/n); the step draws its latents and its
 * incremental log weights for every row at once; a block's log-evidence increment is the
 * log-sum-exp of its weighted increments, its weights are renormalized, its ESS (and, with
 * means, the weighted mean of every drawn latent) recorded; with may_die a block whose
 * particles all have weight zero gets the increment -inf and flat weights (an impossible
 * static value, which an MH step rejects) while the others go on. A conditional run keeps
 * a reference path in each block (particle Gibbs; see ppl_filter_run). Error codes: see
 * ppl_filter_run.
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

/* Every live slot's rows in ancestor order (into its spare buffer, which then swaps in):
   row j of block b takes row index[b n + j] of the same block. */
static void pf_gather(int k, long blocks, long n, const int64_t *restrict index, double **slot,
                      double **spare)
{
    for (int t = ppl_live_start[k]; t < ppl_live_start[k + 1]; t++) {
        int s = ppl_live_slot[t];
        long size = ppl_slot_size[s];
        for (long b = 0; b < blocks; b++) {
            const double *from = slot[s] + b * n * size;
            double *to = spare[s] + b * n * size;
            const int64_t *parent = index + b * n;
            if (size == 1)
                for (long j = 0; j < n; j++)
                    to[j] = from[parent[j]];
            else
                for (long j = 0; j < n; j++)
                    memcpy(to + j * size, from + parent[j] * size, sizeof(double) * size);
        }
        double *swap = spare[s];
        spare[s] = slot[s];
        slot[s] = swap;
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

/* A block's weights after step k: lw (its n log weights plus its previous normalized ones)
   normalized into log_w and w; returns the log-evidence increment and sets *ess. */
static double pf_reweight(long n, const double *restrict lw, double *restrict log_w,
                          double *restrict w, double *ess)
{
    double total = pf_log_sum_exp(lw, n);
    if (total == -INFINITY)
        return total;
    double squares = 0.0;
#pragma omp simd reduction(+:squares)
    for (long i = 0; i < n; i++) {
        log_w[i] = lw[i] - total;
        w[i] = ppl_exp(log_w[i]);
        squares += w[i] * w[i];
    }
    *ess = 1.0 / squares;
    return total;
}

/* Each row of step k's drawn slots set to its block's reference value (ref[t]: B * size
   doubles for the t-th drawn entry). */
static void pf_place(int k, long blocks, long n, const double *const *ref, double *const *slot)
{
    for (int t = ppl_drawn_start[k]; t < ppl_drawn_start[k + 1]; t++) {
        int s = ppl_drawn_slot[t];
        long size = ppl_slot_size[s];
        for (long b = 0; b < blocks; b++)
            for (long j = 0; j < n; j++)
                memcpy(slot[s] + (b * n + j) * size, ref[t] + b * size, sizeof(double) * size);
    }
}

/* Ancestor sampling for a block's reference particle: one index drawn from
   log_w_i + score_i (scratch: n + 1 doubles); -1 when no index is possible or one is NaN. */
static int64_t pf_reference_ancestor(long n, const double *restrict log_w,
                                     const double *restrict score, ppl_rng *rng,
                                     double *restrict scratch)
{
    double top = -INFINITY;
    for (long i = 0; i < n; i++) {
        double x = log_w[i] + score[i];
        if (isnan(x))
            return -1;
        top = x > top ? x : top;
    }
    if (top == -INFINITY)
        return -1;
    for (long i = 0; i < n; i++)
        scratch[i] = ppl_exp(log_w[i] + score[i] - top);
    int64_t index;
    pf_multinomial(scratch, n, 1, rng, scratch + n, &index);
    return index;
}

/* One path per block: a final particle drawn from the block's weights w, then its
   ancestors back to step first; path[t] (B * size doubles) gets the t-th drawn entry's
   values from history[t] (B n * size). */
static void pf_paths(int first, int stop, long blocks, long n, const double *restrict w,
                     const int64_t *ancestors, const double *const *history,
                     double *const *path, ppl_rng *rng, double *restrict scratch)
{
    for (long b = 0; b < blocks; b++) {
        int64_t i;
        pf_multinomial(w + b * n, n, 1, rng, scratch, &i);
        for (int k = stop - 1; k >= first; k--) {
            for (int t = ppl_drawn_start[k]; t < ppl_drawn_start[k + 1]; t++) {
                long size = ppl_slot_size[ppl_drawn_slot[t]];
                memcpy(path[t] + b * size, history[t] + (b * n + i) * size,
                       sizeof(double) * size);
            }
            i = ancestors[(long)k * blocks * n + b * n + i];
        }
    }
}

/* The run (see the top of the file). Per row (B n of them): slot/spare, each slot's two
   buffers of size doubles (swapped by resampling: slot[] holds the current ones on
   return); log_w and w, the normalized log weights and weights (read before step
   first > 0, written after each step); lw and index of scratch, z: PPL_NORMALS of
   scratch; ancestors: one row per step, or NULL. Per step and block (PPL_STEPS * B,
   step-major): ess (the row of step first - 1 read), increments, resampled. scratch: 2n
   doubles; means: NULL, or every drawn element of every step (for B = 1), in step and
   slot order.

   A conditional run (ref, per drawn entry t the blocks' reference values, B * size
   doubles; pin and score: per row, of scratch) keeps each block's last particle on its
   reference path: before every step after the first the block resamples its other
   n - 1 particles by its scheme and draws the reference's ancestor by ancestor sampling
   (ppl_run_score at the reference, plus the log weights); the step's draws of pinned rows
   keep the reference. history (per drawn entry, B n * size doubles, or NULL) records each
   step's particles; path (per drawn entry, B * size, or NULL; needs history and
   ancestors) receives one path per block drawn back from the final weights. Returns 0, or
   with k the step: 1 + 3k a NaN log weight, 2 + 3k a block whose weights are all zero
   (unless may_die), 3 + 3k ancestor sampling with no possible (or a NaN) weight. */
int ppl_filter_run(long blocks, long n, uint64_t seed, double threshold, int scheme,
                   int first, int stop, int may_die, double **slot, double **spare,
                   const void *const *const *constants, const void *const *inputs,
                   double *restrict log_w, double *restrict w, double *restrict lw,
                   double *restrict z, double *restrict scratch, int64_t *ancestors,
                   int64_t *index, double *ess, double *increments, unsigned char *resampled,
                   double *means, const double *const *ref, unsigned char *pin, double *score,
                   double *const *history, double *const *path)
{
    ppl_rng rng;
    ppl_rng_seed(&rng, seed);
    const double flat = -log((double)n);
    const long rows = blocks * n;
    if (first == 0)
        for (long i = 0; i < rows; i++)
            log_w[i] = flat;
    if (ref != NULL)
        for (long i = 0; i < rows; i++)
            pin[i] = i % n == n - 1;
    for (int k = first; k < stop; k++) {
        int64_t *parents = ancestors != NULL ? ancestors + (long)k * rows : index;
        int any = 0;
        if (ref != NULL)
            pf_place(k, blocks, n, ref, slot);
        if (ref != NULL && k > first)
            ppl_run_score(k, rows, &rng, slot, score, z, NULL, constants, inputs);
        for (long b = 0; b < blocks; b++) {
            unsigned char due = k > 0 && (ref != NULL ? k > first
                                          : ess[(long)(k - 1) * blocks + b] < threshold * n);
            resampled[(long)k * blocks + b] = due;
            any |= due;
            int64_t *parent = parents + b * n;
            if (due && ref != NULL) {
                pf_resample(scheme, w + b * n, n, n - 1, &rng, scratch, parent);
                parent[n - 1] = pf_reference_ancestor(n, log_w + b * n, score + b * n, &rng,
                                                      scratch);
                if (parent[n - 1] < 0)
                    return 3 + 3 * k;
            } else if (due) {  /* w: the block's normalized weights of step k - 1 */
                pf_resample(scheme, w + b * n, n, n, &rng, scratch, parent);
            } else {
                for (long i = 0; i < n; i++)
                    parent[i] = i;
            }
            if (due)
                for (long i = 0; i < n; i++)
                    log_w[b * n + i] = flat;
        }
        if (any)
            pf_gather(k, blocks, n, parents, slot, spare);
        ppl_run_step(k, rows, &rng, slot, lw, z, ref != NULL ? pin : NULL, constants, inputs);
        for (long i = 0; i < rows; i++) {
            if (isnan(lw[i]))
                return 1 + 3 * k;
            lw[i] += log_w[i];
        }
        for (long b = 0; b < blocks; b++) {
            long at = (long)k * blocks + b;
            increments[at] = pf_reweight(n, lw + b * n, log_w + b * n, w + b * n, ess + at);
            if (increments[at] == -INFINITY) {
                if (!may_die)
                    return 2 + 3 * k;
                for (long i = 0; i < n; i++) {
                    log_w[b * n + i] = flat;
                    w[b * n + i] = 1.0 / n;
                }
                ess[at] = n;
            }
        }
        if (means != NULL)
            means = pf_means(k, n, w, slot, means);
        if (history != NULL)
            for (int t = ppl_drawn_start[k]; t < ppl_drawn_start[k + 1]; t++) {
                int s = ppl_drawn_slot[t];
                memcpy(history[t], slot[s], sizeof(double) * rows * ppl_slot_size[s]);
            }
    }
    if (path != NULL)
        pf_paths(first, stop, blocks, n, w, ancestors, (const double *const *)history, path,
                 &rng, scratch);
    return 0;
}
