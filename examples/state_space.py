"""Tracking a hidden AR(1) state: a particle filter (SMC) against the exact Kalman filter,
smoothing draws against the RTS smoother, and tempered SMC on the model's static version.

Run: python examples/state_space.py [--short]
"""

import argparse

from ppl import infer, model, plate, sample, scan
from ppl.inference import MALA, SMC, TemperedSMC
from ppl.inference.testing import LinearGaussianSSM
from ppl.stdlib import HalfNormal, Normal

SSM = LinearGaussianSSM(a=0.9, q=0.5, r=1.0)


@model
def ar1(ys):
    """x_t = 0.9 x_{t-1} + N(0, 0.5), y_t = x_t + N(0, 1), written with scan: the state
    after x0 at step t of the scan is x[t], the model's x_{t+1}."""
    def step(x, y):
        x = sample("x", Normal(0.9 * x, 0.5))
        sample("y", Normal(x, 1.0), obs=y)
        return x, None

    x0 = sample("x0", Normal(0.0, 1.0))
    sample("y0", Normal(x0, 1.0), obs=ys[0])
    scan(step, x0, ys[1:])


@model
def noise_scale(ys):
    """The same data as i.i.d. draws with an unknown scale: a static model for TemperedSMC."""
    s = sample("s", HalfNormal(2.0))
    with plate("data", len(ys)):
        sample("y", Normal(0.0, s), obs=ys)


def main(short: bool = False) -> None:
    ys = SSM.simulate(30, seed=0)
    particles = 500 if short else 5000
    res = infer(ar1, ys, method=SMC(num_particles=particles, keep_history=True), seed=0)
    exact = SSM.kalman(ys)
    print(f"SMC with {particles} particles: log evidence {float(res.log_evidence):.3f} "
          f"(Kalman {exact.log_evidence:.3f}), resampled {res.num_resampled} "
          f"of {res.num_steps} steps")
    last = f"x[{len(ys) - 2}]"
    print(f"filtering mean of the last state {float(res.mean(last)):.3f} "
          f"(Kalman {exact.means[-1]:.3f})")
    paths = res.smooth(num_paths=100 if short else 500)
    print(f"smoothed mean of x[0]: {float(paths['x[0]'].mean()):.3f} "
          f"(RTS {SSM.smoothed_means(ys)[1]:.3f})")

    tempered = infer(noise_scale, ys, method=TemperedSMC(
        num_particles=200 if short else 2000, kernel=MALA(), num_moves=3), seed=0)
    print(tempered.summary())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--short", action="store_true", help="fewer particles (smoke test)")
    main(parser.parse_args().short)
