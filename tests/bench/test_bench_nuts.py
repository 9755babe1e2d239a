"""Smoke tests of bench/nuts.py: the data are as documented, and a short run of eight schools
prints the expected table rows and writes the JSON fields.

The ppl run takes a few seconds. The peers (NumPyro, Pyro) are optional: their runs skip when
they are not installed, and are marked slow (NumPyro's XLA compilation alone takes ~10-20 s).
"""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "nuts.py"
FIELDS = ("e2e_s", "warm_s", "grad_evals", "ess_min", "ess_median", "ess_per_s_e2e",
          "ess_per_s_warm", "us_per_grad")
HEADER = ("model", "chains", "ppl", "e2e s", "warm s", "grads", "ESS min", "ESS med",
          "ESS/s e2e", "ESS/s warm", "us/grad")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_nuts", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def run_bench(tmp_path: Path, ppls: str, chains: str) -> tuple[str, dict]:
    out = tmp_path / "nuts.json"
    cmd = [sys.executable, str(BENCH), "--quick", "--num-warmup", "50", "--num-samples", "50",
           "--models", "eight_schools", "--ppls", ppls, "--chains", chains, "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


def check_rows(stdout: str, results: list[dict], ppls: list[str], chains: list[int]) -> None:
    assert all(h in stdout for h in HEADER), stdout
    assert "machine:" in stdout and "versions:" in stdout and "torch" in stdout
    assert [(r["model"], r["chains"], r["ppl"]) for r in results] == [
        ("eight_schools", c, p) for c in chains for p in ppls]
    for r in results:
        assert r["error"] is None, r["error"]
        assert all(math.isfinite(r[f]) for f in FIELDS), r
        assert min(r["e2e_s"], r["warm_s"], r["grad_evals"], r["us_per_grad"]) > 0, r
        assert 0 <= r["ess_min"] <= r["ess_median"]
        table_row = next(line for line in stdout.splitlines()
                         if line.split()[:3] == ["eight_schools", str(r["chains"]), r["ppl"]])
        assert f"{r['grad_evals']:.0f}" in table_row.split()


def test_data_match_the_docstring():
    bench = load_bench()
    logistic = bench.logistic_data()
    assert logistic["x"].shape == (5000, 25) and logistic["y"].shape == (5000,)
    assert set(logistic["y"].tolist()) == {0.0, 1.0}
    radon = bench.varying_intercept_data()
    assert radon["y"].shape == (900,) and radon["num_groups"] == 85
    assert sorted(set(radon["group"].tolist())) == list(range(85))
    again = bench.varying_intercept_data()
    assert (again["y"] == radon["y"]).all()  # fixed seed: the same data for every PPL
    assert len(bench.eight_schools_data()["y"]) == 8


def test_ppl_eight_schools_quick(tmp_path):
    stdout, report = run_bench(tmp_path, "ppl", "1,4")
    check_rows(stdout, report["results"], ["ppl"], [1, 4])
    assert report["settings"]["num_samples"] == 50 and report["ratios"] == []


@pytest.mark.slow
@pytest.mark.parametrize("peer", ["numpyro", "pyro"])
def test_peer_eight_schools_quick(tmp_path, peer):
    pytest.importorskip(peer)
    stdout, report = run_bench(tmp_path, f"ppl,{peer}", "1")
    check_rows(stdout, report["results"], ["ppl", peer], [1])
    assert [(r["peer"], r["chains"]) for r in report["ratios"]] == [(peer, 1)]
    assert "ratios ppl / peer" in stdout
