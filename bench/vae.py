"""VAE training steps per second: ``examples/vae.py`` under ``VI`` against the same model
trained by a hand-written torch loop and by Pyro (when installed).

All start from the same networks (``vae.networks(0)``) and take the same steps: a random
minibatch of 128 of the 2048 images, one reparameterized draw of ``z`` per image, the ELBO
scaled by 2048 / 128, Adam at lr 0.02, one torch thread. ppl's runs go through everything a
user's does (``ppl.module``, the subsampled plates, the objective program, the
checkpointable VI loop): ``ppl`` with the library's ``ELBO`` (the compiled step,
``inference/vi/compiled.py``), ``program`` with the same ELBO written as a user's
``@expectation`` program, ``general`` with ``fast_path=False`` (guide and model on the
handlers at every step: the VAE's path before the compiled step); ``torch`` is the hand
loop with the default Adam, ``fused`` the same with ``Adam(fused=True)``. The warm rates
count the steps after ``--warmup``. Reported: steps/s of each (medians over ``--repeats``,
the runs interleaved so that a change of the machine's load hits them all) and each warm
rate over both hand loops'. Measured on a shared 2-core x86_64 machine, load about 2
(``--steps 200 --warmup 50 --repeats 11``, one session): ppl 1,031 warm steps/s, program
1,035, general 590, torch 911, fused 1,108, Pyro 442: ppl 1.13x torch's and 0.93x fused's,
the program the same, general 0.65x and 0.53x, Pyro 0.49x and 0.40x. ppl's Adam is the
fused kernel called directly (``inference/vi/optim.py``), which the default loop lacks.

Run: ``.venv/bin/python bench/vae.py [--steps 500] [--warmup 50] [--repeats 3]``.

    >>> rate = measure_torch(vae.shapes(256), steps=4, warmup=2)
    >>> rate["warm_steps_per_s"] > 0
    True
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import platform
import statistics
import sys
import time

import torch

from ppl.inference.vi import expectation

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from svi import _rates  # noqa: E402

_EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "vae.py"
_SPEC = importlib.util.spec_from_file_location("vae_example", _EXAMPLE)
vae = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(vae)

BATCH, LR = 128, 0.02


@expectation
def program_elbo(model, guide, *args):
    """The ELBO written as a user's objective program (the library's ``ELBO`` is one too)."""
    zs = guide.sample()
    return (model.log_density(zs, *args) - guide.log_density(zs)).mean()


def measure_ppl(images: torch.Tensor, steps: int, warmup: int,
                **vi_options: object) -> dict[str, float]:
    marks: list[float] = []

    def mark(_checkpoint) -> None:
        marks.append(time.perf_counter())

    start = time.perf_counter()
    vae.train(images, steps, checkpoint_every=warmup, on_checkpoint=mark, **vi_options)
    end = marks[-1]
    return _rates(end - start, end - marks[0], steps, warmup)


def measure_program(images: torch.Tensor, steps: int, warmup: int) -> dict[str, float]:
    """ppl with :func:`program_elbo` as the objective."""
    return measure_ppl(images, steps, warmup, objective=program_elbo)


def measure_general(images: torch.Tensor, steps: int, warmup: int) -> dict[str, float]:
    """ppl on its general path (``fast_path=False``: guide and model run on the handlers
    at every step), the path the VAE took before the compiled step."""
    return measure_ppl(images, steps, warmup, fast_path=False)


def measure_torch(images: torch.Tensor, steps: int, warmup: int,
                  fused: bool = False) -> dict[str, float]:
    """The same model, guide and ELBO estimate written by hand (``fused``: with torch's
    fused Adam, the kernel ppl's optimizer step calls)."""
    encoder, decoder = vae.networks(0)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=LR,
                                 fused=fused or None)
    prior = torch.distributions.Normal(0.0, 1.0)
    n = len(images)
    generator = torch.Generator().manual_seed(0)
    start = warm = time.perf_counter()
    for step in range(steps):
        if step == warmup:
            warm = time.perf_counter()
        optimizer.zero_grad()
        x = images[torch.randperm(n, generator=generator)[:BATCH]]
        loc, scale = encoder(x)
        q = torch.distributions.Normal(loc, scale)
        z = q.rsample()
        log_lik = torch.distributions.Bernoulli(logits=decoder(z)).log_prob(x).sum()
        elbo = log_lik + prior.log_prob(z).sum() - q.log_prob(z).sum()
        loss = -(n / BATCH) * elbo
        loss.backward()
        optimizer.step()
    end = time.perf_counter()
    return _rates(end - start, end - warm, steps, warmup)


def measure_fused(images: torch.Tensor, steps: int, warmup: int) -> dict[str, float]:
    """The hand-written loop with ``Adam(fused=True)``."""
    return measure_torch(images, steps, warmup, fused=True)


def measure_pyro(images: torch.Tensor, steps: int, warmup: int) -> dict[str, float]:
    """The same model and guide in Pyro: ``pyro.module``, subsampled plates, ``Trace_ELBO``."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import SVI, Trace_ELBO

    pyro.clear_param_store()
    encoder, decoder = vae.networks(0)
    n = len(images)

    def model(images):
        pyro.module("decoder", decoder)
        with pyro.plate("images", n, subsample_size=BATCH) as ind:
            z = pyro.sample("z", dist.Normal(torch.zeros(vae.LATENT), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=decoder(z)).to_event(1), obs=images[ind])

    def guide(images):
        pyro.module("encoder", encoder)
        with pyro.plate("images", n, subsample_size=BATCH) as ind:
            loc, scale = encoder(images[ind])
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), Trace_ELBO())
    start = warm = time.perf_counter()
    for step in range(steps):
        if step == warmup:
            warm = time.perf_counter()
        svi.step(images)
    end = time.perf_counter()
    return _rates(end - start, end - warm, steps, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    images = vae.shapes()
    print(f"# {platform.processor() or platform.machine()}, 1 torch thread; {len(images)} "
          f"images, batch {BATCH}, {args.steps} steps ({args.warmup} warmup), median of "
          f"{args.repeats}")
    results = {}
    measures = [("ppl", measure_ppl), ("program", measure_program),
                ("general", measure_general), ("torch", measure_torch),
                ("fused", measure_fused)]
    if importlib.util.find_spec("pyro") is None:
        print("pyro     skipped: not installed (pip install -e '.[bench]')")
    else:
        measures.append(("pyro", measure_pyro))
    runs: dict[str, list[dict[str, float]]] = {name: [] for name, _ in measures}
    for _ in range(args.repeats):  # interleaved: a change in the machine's load hits all
        for name, measure in measures:
            runs[name].append(measure(images, args.steps, args.warmup))
    for name, _ in measures:
        results[name] = {k: statistics.median(r[k] for r in runs[name]) for k in runs[name][0]}
        print(f"{name:8s} cold {results[name]['cold_steps_per_s']:8.1f} steps/s   "
              f"warm {results[name]['warm_steps_per_s']:8.1f} steps/s")
    warm = {name: row["warm_steps_per_s"] for name, row in results.items()}
    for name in (n for n in warm if n not in ("torch", "fused")):
        print(f"{name} / torch: warm {warm[name] / warm['torch']:.2f}x   "
              f"/ fused: {warm[name] / warm['fused']:.2f}x")


if __name__ == "__main__":
    main()
