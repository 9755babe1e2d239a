/* The ADVI fast path's step for a mean-field Gaussian guide (AutoNormal), linked with the
   model's potential (inference/vi/fast.py): the draws, the potential and the chain rule in
   one foreign call instead of a dozen small torch operations. Compiled with PPL_DIM, the
   model's dimension, and PPL_REAL, the type of the guide's params and noise (float or
   double); everything is computed in double. */
#include <math.h>

double ppl_potential(const double *restrict z, double *restrict grad);

/* params = [loc | log_scale] and eps (K, PPL_DIM): the K particles u_k = loc + exp(log_scale)
   eps_k, the potential f and its gradient g at each; writes the gradient of the negative
   ELBO, [-mean_k g_k | -mean_k (g_k eps_k) scale - 1], into grad and returns the ELBO
   estimate mean_k f(u_k) - log q(u_k), with log q(u_k) = -|eps_k|^2 / 2 - sum(log_scale)
   - PPL_DIM / 2 log(2 pi). */
double ppl_mean_field(long K, const PPL_REAL *params, const PPL_REAL *eps, PPL_REAL *grad) {
    static _Thread_local double scale[PPL_DIM], u[PPL_DIM], g[PPL_DIM];
    static _Thread_local double d_loc[PPL_DIM], d_log_scale[PPL_DIM];
    double log_p = 0.0, eps_sq = 0.0, log_det = 0.0;
    for (long j = 0; j < PPL_DIM; j++) {
        scale[j] = exp((double)params[PPL_DIM + j]);
        log_det += params[PPL_DIM + j];
        d_loc[j] = 0.0;
        d_log_scale[j] = 0.0;
    }
    for (long k = 0; k < K; k++) {
        const PPL_REAL *e = eps + k * PPL_DIM;
        for (long j = 0; j < PPL_DIM; j++) {
            u[j] = params[j] + scale[j] * e[j];
            eps_sq += (double)e[j] * e[j];
        }
        log_p += ppl_potential(u, g);
        for (long j = 0; j < PPL_DIM; j++) {
            d_loc[j] += g[j];
            d_log_scale[j] += g[j] * e[j];
        }
    }
    for (long j = 0; j < PPL_DIM; j++) {
        grad[j] = (PPL_REAL)(-d_loc[j] / K);
        grad[PPL_DIM + j] = (PPL_REAL)(-d_log_scale[j] * scale[j] / K - 1.0);
    }
    return (log_p + 0.5 * eps_sq) / K + log_det + 0.5 * PPL_DIM * log(2.0 * M_PI);
}
