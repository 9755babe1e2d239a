"""Smoke tests of bench/gallery.py: every gallery model's data fit its signature, the bench
models have the gallery's log density, and a short ppl run (slow: a subprocess that compiles
its C) prints its table row."""

import importlib.util
import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gallery.py"


def load_bench():
    sys.path.insert(0, str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_gallery", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_models_match_the_gallery_log_density():
    from ppl import model
    from ppl.inference.gallery import gallery
    from ppl.passes.rewriting import probe

    bench = load_bench()
    adapter = bench.GalleryPpl()
    lib = adapter.namespace()
    cases = gallery(seed=0)
    assert set(bench.GALLERY) == set(cases)
    for name, spec in bench.GALLERY.items():
        data = spec.data()
        fn = spec.build(lib)
        assert set(inspect.signature(fn).parameters) == set(data), name
        tensors = adapter.convert(data, x64=False)
        ours, theirs = model(fn), cases[name]
        graph = theirs.model.graph(*theirs.args, **theirs.kwargs)
        point = probe(graph).env  # a prior draw (improper sites: a point of their support)
        values = {n.address: point[n.name] for n in graph.latent_nodes}
        torch.testing.assert_close(ours.log_density(values, **tensors),
                                   theirs.model.log_density(values, *theirs.args, **theirs.kwargs))


@pytest.mark.slow
def test_a_short_ppl_run(tmp_path):
    out = tmp_path / "gallery.json"
    cmd = [sys.executable, str(BENCH), "--num-warmup", "30", "--num-samples", "30",
           "--models", "mvn_constant_scale", "--ppls", "ppl", "--chains", "1", "--json", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (row,) = json.loads(out.read_text())["results"]
    assert (row["model"], row["ppl"], row["error"]) == ("mvn_constant_scale", "ppl", None)
    assert math.isfinite(row["e2e_s"]) and row["grad_evals"] > 0
    assert any(line.split()[:3] == ["mvn_constant_scale", "1", "ppl"]
               for line in done.stdout.splitlines())
