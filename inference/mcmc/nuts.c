/* The No-U-Turn Sampler in C, one chain at a time, on a generated potential.
 *
 * It is compiled with -DPPL_DIM=D (the flat unconstrained dimension) and linked with a
 * model's generated potential, or appended to a potential that defines PPL_DIM itself:
 *     double ppl_potential_row(const double *z, double *grad, long row);
 * returns log p(z) and writes its gradient (it may return -inf or NaN), reading row ``row``
 * of the potential's per-row run-time inputs (its chain's data; inputs bound once for all
 * chains ignore it).
 *
 * ppl_nuts makes one NUTS transition for each of C chains: Stan's algorithm (Hoffman &
 * Gelman 2014 with Betancourt 2017's multinomial sampling), each chain building its own tree.
 *   - The trajectory starts at (z0, p0); doubling j picks a direction at random and builds a
 *     subtree of 2^j leapfrog steps from that end of the trajectory (nuts_build_tree,
 *     recursively: two halves of depth j - 1, then a merge).
 *   - Each point has the weight exp(H0 - H). Merging two halves inside a subtree keeps the
 *     second half's candidate with probability W_second / W_subtree (uniform progressive
 *     sampling: the subtree's candidate is a multinomial draw over its points); merging a
 *     complete subtree into the trajectory moves to its candidate with probability
 *     min(1, W_subtree / W_trajectory) (biased progressive sampling, favouring far points).
 *   - Every merge of a span A with the span B that follows it checks the generalized no-U-turn
 *     criterion (p#_first . rho > 0 and p#_last . rho > 0, rho the sum of momenta) on A + B,
 *     and, as Stan does, on A extended by B's first point and on B extended by A's last point.
 *   - A point with H - H0 > divergence_threshold (or NaN H) is a divergence. A subtree that
 *     diverges or U-turns inside is discarded and ends the transition; a subtree whose merge
 *     with the trajectory U-turns is kept (its candidate may be taken), then the transition
 *     ends. At most max_depth doublings; tree_depth counts the completed ones (Stan's).
 *   - accept_prob is Stan's accept_stat: the mean of min(1, exp(H0 - H)) over every leapfrog
 *     point integrated, including those of a discarded subtree.
 *
 * Randomness: the momentum p0 comes from the caller (ppl_nuts, used while adaptation changes
 * the metric between transitions) or from the transition's stream (ppl_nuts_run); the
 * directions and sampling uniforms come from xoshiro256** seeded by splitmix64 from the
 * transition's own seed, seeds[c * num_iter + t]. Chain c only reads its own inputs, so it is
 * bitwise the same in any batch, and a run cut into several calls draws what one call draws.
 *
 * Interrupts: ppl_nuts_run checks *stop before each transition and returns early when it is
 * set (by another thread); completed[c] says how many transitions chain c made.
 *
 * Every name at file scope starts with nuts_ (or NUTS_), so as not to clash with the
 * generated code it is compiled with; the random numbers (ppl_rng_) come from the backend's
 * rng.h, which nuts_source() prepends.
 */

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef PPL_DIM
#error "compile with -DPPL_DIM=<the dimension>, or after a potential that defines it"
#endif

#define PPL_NUTS_ABI 2

/* The potential, from the model's own translation unit (or defined above this file). */
double ppl_potential_row(const double *restrict z, double *restrict grad, long row);

enum { NUTS_BACKWARD = 0, NUTS_FORWARD = 1 };

/* ---------------------------------------------------------------- random numbers */

/* ppl_rng (xoshiro256**, uniforms, Box-Muller pairs) comes from rng.h, prepended. */
typedef ppl_rng nuts_rng;

/* D standard normals (both of each Box-Muller pair used). */
static void nuts_normals(nuts_rng *rng, double *out)
{
    for (int i = 0; i < PPL_DIM; i += 2) {
        double second;
        ppl_rng_normal_pair(rng, &out[i], i + 1 < PPL_DIM ? &out[i + 1] : &second);
    }
}

/* ---------------------------------------------------------------- the tree's pieces */

/* The momentum and velocity p# = M^{-1} p at the first or last point of a span. */
typedef struct {
    double p[PPL_DIM], v[PPL_DIM];
} nuts_edge;

/* Consecutive leapfrog points, in the order they were integrated. */
typedef struct {
    nuts_edge first, last;
    double rho[PPL_DIM]; /* the sum of their momenta */
    double log_w;        /* log of the sum of their weights exp(H0 - H) */
} nuts_span;

/* A point that may become the next state. */
typedef struct {
    double z[PPL_DIM], g[PPL_DIM];
    double lp, h; /* log density and energy H */
} nuts_point;

/* A span and the multinomial draw among its points. */
typedef struct {
    nuts_span span;
    nuts_point pick;
} nuts_subtree;

/* Where the integrator stands at one end of the trajectory. */
typedef struct {
    double z[PPL_DIM], p[PPL_DIM], g[PPL_DIM];
} nuts_phase;

/* Everything one chain's transition works on. Heap-allocated: D may be large. */
typedef struct {
    /* settings of the chain */
    const double *inv_mass; /* (D,) diagonal or (D, D) row-major dense M^{-1} */
    int dense;
    double eps;       /* step size, signed for the direction being built */
    double h0;        /* energy of the initial point */
    double threshold; /* energy error that marks a divergence */
    nuts_rng rng;
    long row;         /* of the potential's per-row inputs this chain reads */
    /* the trajectory */
    nuts_phase end[2];   /* its backward and forward ends */
    nuts_phase *moving;  /* the end being extended */
    nuts_span whole;     /* first = backward end, last = forward end */
    nuts_point sample;   /* the current candidate for the next state */
    nuts_subtree sub;    /* the subtree being built */
    nuts_subtree *halves; /* halves[k]: second half of a subtree of depth k + 1 */
    /* statistics */
    long num_steps;
    double sum_metro; /* sum of min(1, exp(H0 - H)) over the integrated points */
    int divergent;
    /* scratch (here, not on the stack: D may be large and threads' stacks small) */
    double v[PPL_DIM];
    double rho[PPL_DIM];
    double xi[PPL_DIM], p[PPL_DIM], g_now[PPL_DIM], delta[PPL_DIM];
} nuts_chain;

/* ---------------------------------------------------------------- small vector helpers */

static double nuts_dot(const double *a, const double *b)
{
    double s = 0.0;
    for (int i = 0; i < PPL_DIM; i++)
        s += a[i] * b[i];
    return s;
}

/* v = M^{-1} p: the velocity, which moves the position and enters the U-turn criterion. */
static void nuts_velocity(const nuts_chain *ch, const double *p, double *v)
{
    const double *m = ch->inv_mass;
    if (!ch->dense) {
        for (int i = 0; i < PPL_DIM; i++)
            v[i] = m[i] * p[i];
        return;
    }
    for (int i = 0; i < PPL_DIM; i++)
        v[i] = nuts_dot(m + (size_t)i * PPL_DIM, p);
}

/* log(exp(a) + exp(b)), exact when either is -inf. */
static double nuts_log_sum_exp(double a, double b)
{
    if (a == -INFINITY)
        return b;
    if (b == -INFINITY)
        return a;
    double hi = a > b ? a : b;
    return hi + log1p(exp(-fabs(a - b)));
}

/* ---------------------------------------------------------------- U-turn criterion */

/* The generalized no-U-turn criterion on a span with end velocities v_a, v_b and momentum
 * sum rho: true while both ends still move along rho. */
static int nuts_no_uturn(const double *v_a, const double *v_b, const double *rho)
{
    return nuts_dot(v_a, rho) > 0.0 && nuts_dot(v_b, rho) > 0.0;
}

/* The checks on joining span a to span b that follows it: a + b as a whole, then (Stan's
 * extra checks, catching U-turns hidden at the junction) a extended by b's first point and b
 * extended by a's last point. `rho` is scratch. */
static int nuts_join_ok(const nuts_edge *a_first, const nuts_edge *a_last, const double *a_rho,
                        const nuts_edge *b_first, const nuts_edge *b_last, const double *b_rho,
                        double *rho)
{
    for (int i = 0; i < PPL_DIM; i++)
        rho[i] = a_rho[i] + b_rho[i];
    if (!nuts_no_uturn(a_first->v, b_last->v, rho))
        return 0;
    for (int i = 0; i < PPL_DIM; i++)
        rho[i] = a_rho[i] + b_first->p[i];
    if (!nuts_no_uturn(a_first->v, b_first->v, rho))
        return 0;
    for (int i = 0; i < PPL_DIM; i++)
        rho[i] = b_rho[i] + a_last->p[i];
    return nuts_no_uturn(a_last->v, b_last->v, rho);
}

/* ---------------------------------------------------------------- building subtrees */

/* One leapfrog step of the moving end, as a subtree of depth 0: p += eps/2 grad,
 * z += eps p#, grad at z, p += eps/2 grad (grad of the log density: momentum goes uphill).
 * Returns 0 on a divergence. */
static int nuts_leapfrog(nuts_chain *ch, nuts_subtree *out)
{
    nuts_phase *x = ch->moving;
    double half = 0.5 * ch->eps;
    for (int i = 0; i < PPL_DIM; i++)
        x->p[i] += half * x->g[i];
    nuts_velocity(ch, x->p, ch->v);
    for (int i = 0; i < PPL_DIM; i++)
        x->z[i] += ch->eps * ch->v[i];
    double lp = ppl_potential_row(x->z, x->g, ch->row);
    for (int i = 0; i < PPL_DIM; i++)
        x->p[i] += half * x->g[i];

    nuts_span *s = &out->span;
    memcpy(s->last.p, x->p, sizeof x->p);
    nuts_velocity(ch, x->p, s->last.v);
    double h = -lp + 0.5 * nuts_dot(x->p, s->last.v);
    if (isnan(h))
        h = INFINITY;
    s->first = s->last;
    memcpy(s->rho, x->p, sizeof x->p);
    s->log_w = ch->h0 - h;

    memcpy(out->pick.z, x->z, sizeof x->z);
    memcpy(out->pick.g, x->g, sizeof x->g);
    out->pick.lp = lp;
    out->pick.h = h;

    ch->num_steps++;
    ch->sum_metro += h <= ch->h0 ? 1.0 : exp(ch->h0 - h);
    if (h - ch->h0 > ch->threshold) {
        ch->divergent = 1;
        return 0;
    }
    return 1;
}

/* Integrate 2^depth leapfrog steps on from the moving end into `out`: its span and a
 * multinomial draw among its points. Returns 0 when a point diverged or a merge inside
 * U-turned (the caller discards the subtree and ends the transition). */
static int nuts_build_tree(nuts_chain *ch, int depth, nuts_subtree *out)
{
    if (depth == 0)
        return nuts_leapfrog(ch, out);
    /* The first half goes straight into `out`, the second into this depth's scratch. */
    if (!nuts_build_tree(ch, depth - 1, out))
        return 0;
    nuts_subtree *second = &ch->halves[depth - 1];
    if (!nuts_build_tree(ch, depth - 1, second))
        return 0;
    nuts_span *a = &out->span, *b = &second->span;
    if (!nuts_join_ok(&a->first, &a->last, a->rho, &b->first, &b->last, b->rho, ch->rho))
        return 0;
    /* Uniform progressive sampling: the second half's draw with probability W_b / W. */
    double log_w = nuts_log_sum_exp(a->log_w, b->log_w);
    if (ppl_rng_uniform(&ch->rng) < exp(b->log_w - log_w))
        out->pick = second->pick;
    a->log_w = log_w;
    a->last = b->last;
    for (int i = 0; i < PPL_DIM; i++)
        a->rho[i] += b->rho[i];
    return 1;
}

/* ---------------------------------------------------------------- one transition */

/* Start the trajectory at (z0, p0) with gradient g0 and log density lp0. */
static void nuts_start(nuts_chain *ch, const double *z0, double lp0, const double *g0,
                       const double *p0)
{
    for (int side = 0; side < 2; side++) {
        memcpy(ch->end[side].z, z0, sizeof ch->end[side].z);
        memcpy(ch->end[side].p, p0, sizeof ch->end[side].p);
        memcpy(ch->end[side].g, g0, sizeof ch->end[side].g);
    }
    nuts_edge *e = &ch->whole.first;
    memcpy(e->p, p0, sizeof e->p);
    nuts_velocity(ch, p0, e->v);
    ch->whole.last = *e;
    memcpy(ch->whole.rho, p0, sizeof ch->whole.rho);
    ch->whole.log_w = 0.0; /* the initial point's weight exp(H0 - H0) */
    ch->h0 = -lp0 + 0.5 * nuts_dot(p0, e->v);

    memcpy(ch->sample.z, z0, sizeof ch->sample.z);
    memcpy(ch->sample.g, g0, sizeof ch->sample.g);
    ch->sample.lp = lp0;
    ch->sample.h = ch->h0;

    ch->num_steps = 0;
    ch->sum_metro = 0.0;
    ch->divergent = 0;
}

/* Double the trajectory until it U-turns, diverges or reaches max_depth doublings; returns
 * the number of completed doublings. The next state is left in ch->sample. */
static int nuts_doublings(nuts_chain *ch, double step_size, int max_depth)
{
    int depth = 0;
    while (depth < max_depth) {
        int dir = ppl_rng_uniform(&ch->rng) < 0.5 ? NUTS_FORWARD : NUTS_BACKWARD;
        ch->moving = &ch->end[dir];
        ch->eps = dir == NUTS_FORWARD ? step_size : -step_size;
        if (!nuts_build_tree(ch, depth, &ch->sub))
            break;
        depth++;

        /* Biased progressive sampling: move to the subtree's draw w.p. min(1, W_sub / W). */
        nuts_span *whole = &ch->whole, *sub = &ch->sub.span;
        if (sub->log_w > whole->log_w ||
            ppl_rng_uniform(&ch->rng) < exp(sub->log_w - whole->log_w))
            ch->sample = ch->sub.pick;
        whole->log_w = nuts_log_sum_exp(whole->log_w, sub->log_w);

        /* Join: the trajectory, read from its outer end to the junction, then the subtree. */
        nuts_edge *inner = dir == NUTS_FORWARD ? &whole->last : &whole->first;
        nuts_edge *outer = dir == NUTS_FORWARD ? &whole->first : &whole->last;
        int ok = nuts_join_ok(outer, inner, whole->rho, &sub->first, &sub->last, sub->rho,
                              ch->rho);
        *inner = sub->last;
        for (int i = 0; i < PPL_DIM; i++)
            whole->rho[i] += sub->rho[i];
        if (!ok)
            break;
    }
    return depth;
}

int ppl_nuts_abi(void) { return PPL_NUTS_ABI; }

/* ---------------------------------------------------------------- warmup adaptation */

/* Stan's warmup adaptation carried across transitions (the windows' schedule, the metric
 * updates and step-size searches at their ends stay in Python, which calls in between).
 * Per chain c: the dual averaging state dual_averaging[4c .. 4c + 3] = (log step, its
 * running average, h_bar, mu) after da_count updates (NULL: the step size stays fixed), and
 * the Welford estimate of the current window, welford_mean (C, D) and welford_m2 (C, D) or
 * (C, D, D), after welford_count draws (NULL: outside a window). */
typedef struct {
    double *dual_averaging;
    long da_count;
    double target, gamma, t0, kappa;
    double *welford_mean, *welford_m2;
    long welford_count;
} ppl_adaptation;

/* One dual averaging step (Hoffman & Gelman 2014) after update number m of the chain's
 * state da with acceptance statistic accept (NaN counts as 0); returns the next step size. */
static double nuts_dual_averaging(const ppl_adaptation *a, double *da, long m, double accept)
{
    accept = isnan(accept) ? 0.0 : (accept > 1.0 ? 1.0 : accept);
    double eta = 1.0 / ((double)m + a->t0);
    da[2] = (1.0 - eta) * da[2] + eta * (a->target - accept);
    da[0] = da[3] - sqrt((double)m) / a->gamma * da[2];
    double weight = pow((double)m, -a->kappa);
    da[1] = weight * da[0] + (1.0 - weight) * da[1];
    return exp(da[0]);
}

/* Add draw x as number n of the chain's Welford (co)variance estimate (mean, m2); delta is
 * scratch of D values. */
static void nuts_welford(double *mean, double *m2, int dense, long n, const double *x,
                         double *delta)
{
    for (int i = 0; i < PPL_DIM; i++) {
        delta[i] = x[i] - mean[i];
        mean[i] += delta[i] / (double)n;
    }
    for (int i = 0; i < PPL_DIM; i++) {
        double after = x[i] - mean[i];
        if (!dense)
            m2[i] += delta[i] * after;
        else
            for (int j = 0; j < PPL_DIM; j++)
                m2[(size_t)i * PPL_DIM + j] += after * delta[j];
    }
}

/* num_iter transitions of each of num_chains chains, in one call: the sampling phase (adapt
 * NULL: step size and metric fixed) or a stretch of warmup (adapt: see ppl_adaptation).
 * With p0 given (num_iter must be 1) it is the initial momentum; else C draws each
 * transition's momentum p = F xi from its own stream, with F the factor of the mass matrix
 * (F F^T = M: mass_sqrt, (C, D) diagonal or (C, D, D)). Per transition t of chain c, row
 * c * num_iter + t of: draws (D values), accept_prob, divergent, energy, num_steps,
 * tree_depth and step_used (unless NULL), seeds (one uint64 each). The final state goes to
 * z (unless NULL: it is the last draw made), lp and g (C rows); completed (unless NULL, C
 * counts) gets the number of transitions each chain made: num_iter, or fewer once *stop (unless
 * NULL) is set. Chain c reads row first_row + c of the potential's per-row inputs. Arrays are row-major float64 except the flags (uint8) and counts and seeds
 * (int64); inv_mass is (C, D), or (C, D, D) when dense. Returns 0, or -1 when out of memory
 * (then nothing is written). */
int ppl_nuts_run(long num_chains, long first_row, long num_iter, const double *z0,
                 const double *lp0, const double *g0, const double *p0, const double *mass_sqrt,
                 const double *step_size, const double *inv_mass, int dense,
                 const uint64_t *seeds, int max_depth, double divergence_threshold,
                 const ppl_adaptation *adapt, double *draws, double *z, double *lp, double *g,
                 double *accept_prob, uint8_t *divergent, double *energy, int64_t *num_steps,
                 int64_t *tree_depth, double *step_used, const volatile int *stop,
                 int64_t *completed)
{
    const size_t dim = PPL_DIM;
    nuts_chain *ch = malloc(sizeof *ch);
    nuts_subtree *halves = malloc(sizeof *halves * (size_t)(max_depth > 1 ? max_depth - 1 : 1));
    if (!ch || !halves) {
        free(ch);
        free(halves);
        return -1;
    }
    ch->halves = halves;
    ch->dense = dense;
    ch->threshold = divergence_threshold;
    size_t metric_size = dense ? dim * dim : dim;
    double *da_all = adapt ? adapt->dual_averaging : NULL;
    double *mean_all = adapt ? adapt->welford_mean : NULL;
    double *xi = ch->xi, *p = ch->p, *g_now = ch->g_now;
    for (long c = 0; c < num_chains; c++) {
        size_t row = (size_t)c * dim;
        ch->row = first_row + c;
        ch->inv_mass = inv_mass + (size_t)c * metric_size;
        const double *factor = mass_sqrt ? mass_sqrt + (size_t)c * metric_size : NULL;
        double *da = da_all ? da_all + 4 * c : NULL;
        double eps = da ? exp(da[0]) : step_size[c]; /* the step adaptation reached */
        const double *z_now = z0 + row;
        double lp_now = lp0[c];
        memcpy(g_now, g0 + row, sizeof ch->g_now);
        long t = 0;
        for (; t < num_iter && !(stop && *stop); t++) {
            ppl_rng_seed(&ch->rng, seeds[c * num_iter + t]);
            if (p0) {
                memcpy(p, p0 + row, sizeof ch->p);
            } else {
                nuts_normals(&ch->rng, xi);
                for (size_t i = 0; i < dim; i++)
                    p[i] = dense ? nuts_dot(factor + i * dim, xi) : factor[i] * xi[i];
            }
            nuts_start(ch, z_now, lp_now, g_now, p);
            int depth = nuts_doublings(ch, eps, max_depth);

            size_t k = (size_t)(c * num_iter + t);
            memcpy(draws + k * dim, ch->sample.z, sizeof ch->sample.z);
            energy[k] = ch->sample.h;
            accept_prob[k] = ch->num_steps ? ch->sum_metro / (double)ch->num_steps : 0.0;
            divergent[k] = (uint8_t)ch->divergent;
            num_steps[k] = ch->num_steps;
            tree_depth[k] = depth;
            if (step_used)
                step_used[k] = eps;
            z_now = draws + k * dim;
            memcpy(g_now, ch->sample.g, sizeof ch->g_now);
            lp_now = ch->sample.lp;
            if (da)
                eps = nuts_dual_averaging(adapt, da, adapt->da_count + t + 1, accept_prob[k]);
            if (mean_all)
                nuts_welford(mean_all + row, adapt->welford_m2 + (size_t)c * metric_size, dense,
                             adapt->welford_count + t + 1, z_now, ch->delta);
        }
        if (z)
            memcpy(z + row, z_now, sizeof ch->g_now);
        memcpy(g + row, g_now, sizeof ch->g_now);
        lp[c] = lp_now;
        if (completed)
            completed[c] = t;
    }
    free(halves);
    free(ch);
    return 0;
}

/* One NUTS transition for each of num_chains chains (see the top of the file) from the
 * momenta p0 (C, D): ppl_nuts_run with num_iter 1, the new positions written to z. */
int ppl_nuts(long num_chains, const double *z0, const double *lp0, const double *g0,
             const double *p0, const double *step_size, const double *inv_mass, int dense,
             const uint64_t *seeds, int max_depth, double divergence_threshold, double *z,
             double *lp, double *g, double *accept_prob, uint8_t *divergent, double *energy,
             int64_t *num_steps, int64_t *tree_depth)
{
    return ppl_nuts_run(num_chains, 0, 1, z0, lp0, g0, p0, NULL, step_size, inv_mass, dense,
                        seeds, max_depth, divergence_threshold, NULL, z, NULL, lp, g,
                        accept_prob, divergent, energy, num_steps, tree_depth, NULL, NULL, NULL);
}
