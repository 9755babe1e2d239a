"""Smoke test of bench/enumerated.py: a short ppl run of the enumerated mixture prints its row on
the native (or, without a compiler, generated) backend; NumPyro's rows need NumPyro and are
skipped without it."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "enumerated.py"


def run_enumerated(ppls: str) -> str:
    cmd = [sys.executable, str(BENCH), "--models", "mixture3", "--chains", "1", "--draws", "30",
           "--ppls", ppls]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow  # tracing, the pass and a C compile: ~10 s alone
def test_ppl_row_runs_on_the_fast_path():
    rows = [line.split() for line in run_enumerated("ppl").splitlines() if line.startswith("mix")]
    (row,) = rows
    assert row[:3] == ["mixture3", "1", "ppl"] and row[3] in ("native", "generated")
    assert float(row[4]) > 0 and float(row[5]) > 0


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("numpyro") is None, reason="numpyro not installed")
def test_numpyro_row_and_ratio():
    out = run_enumerated("ppl,numpyro")
    assert "mixture3        1 numpyro  jax" in out and "ppl wall / numpyro wall" in out
