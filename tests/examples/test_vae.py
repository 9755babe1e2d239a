"""examples/vae.py: its smoke budget trains (on the compiled VI step) below the loss its
docstring states, a run resumed from a checkpoint (fresh networks, as in a new process)
continues the uninterrupted run's loss curve exactly, and its model traces to a graph
(module weights as params, the minibatch as an input) that agrees with the trace path."""

import importlib.util
import io
import pathlib

import torch

from ppl import ParamStore, subsample
from ppl.inference.vi.compiled import COMPILED
from ppl.ir import LogDensity

_PATH = pathlib.Path(__file__).parents[2] / "examples" / "vae.py"
_SPEC = importlib.util.spec_from_file_location("vae_example", _PATH)
vae = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(vae)


def test_the_data_set_is_deterministic_and_binary():
    images = vae.shapes(64)
    assert torch.equal(images, vae.shapes(64)) and not torch.equal(images, vae.shapes(64, seed=1))
    assert images.shape == (64, vae.SIDE * vae.SIDE) and set(images.unique().tolist()) == {0, 1}


def test_the_smoke_budget_reaches_the_documented_loss():
    images = vae.shapes()
    result = vae.train(images, vae.SMOKE_STEPS)
    assert result.extra["path"] == COMPILED  # the networks' steps run as generated code
    assert f"below {vae.SMOKE_LOSS}" in vae.__doc__
    assert float(result.losses[-20:].mean()) / len(images) < vae.SMOKE_LOSS


def test_a_resumed_run_continues_the_same_loss_curve():
    images = vae.shapes(512)
    whole = vae.train(images, 16)
    first = vae.train(images, 8)
    buffer = io.BytesIO()
    torch.save(first.checkpoint, buffer)
    buffer.seek(0)
    resumed = vae.train(images, 16, resume=torch.load(buffer, weights_only=False))
    assert torch.equal(first.losses, whole.losses[:8])
    assert torch.equal(resumed.losses, whole.losses)


def test_the_model_traces_to_a_graph_that_agrees_with_the_trace_path():
    images = vae.shapes(64)
    generative, _ = vae.vae(*vae.networks(0), batch=8)
    ind = torch.tensor([3, 60, 7, 0, 12, 41, 5, 33])
    values = {"z": torch.randn(8, vae.LATENT, generator=torch.Generator().manual_seed(0))}
    with ParamStore():
        graph = generative.graph(images)
        with subsample({"images": ind}):
            trace_lp = generative.log_density(values, images)
        graph_lp = LogDensity(graph, values, inputs={"images_indices": ind}).run()
    assert [n.address for n in graph.nodes_of("param")] == [
        "decoder.hidden.weight", "decoder.hidden.bias", "decoder.logits.weight",
        "decoder.logits.bias"]
    assert torch.allclose(trace_lp, graph_lp)
