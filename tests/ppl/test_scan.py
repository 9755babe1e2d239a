"""``ppl.scan`` on the trace path: a Python loop whose sites are addressed ``x[t]``, with
``jax.lax.scan``'s return values, steps recorded per site, and clear errors for bad input."""

import pytest
import torch

from ppl import ModelError, deterministic, factor, model, param, sample, scan
from ppl.stdlib import Normal


def test_scan_returns_the_final_carry_and_stacked_outputs_like_a_loop():
    def step(carry, x):
        total, count = carry
        return (total + x["a"], count + 1), {"double": 2 * x["a"], "b": x["b"]}

    xs = {"a": torch.arange(4.0), "b": torch.ones(4, 2)}
    (total, count), ys = scan(step, (torch.tensor(0.0), torch.tensor(0)), xs)
    assert total.item() == 6.0 and count.item() == 4
    torch.testing.assert_close(ys["double"], 2 * torch.arange(4.0))
    assert ys["b"].shape == (4, 2)


def test_sites_get_the_step_index_and_record_the_scan_step():
    @model
    def m():
        def step(c, _):
            z = sample("z", Normal(c, 1.0))
            factor("f", -z.abs())
            deterministic("d", 2 * z)
            return z, None
        scan(step, torch.tensor(0.0), length=3, name="walk")

    tr = m.trace()
    assert list(tr.sites) == [f"{s}[{t}]" for t in range(3) for s in "zfd"]
    assert tr.sites["d[1]"].infer["steps"] == (("walk", 1),)
    values = {f"z[{t}]": torch.tensor(0.5 * t) for t in range(3)}
    expected = sum(Normal(c, 1.0).log_prob(torch.tensor(0.5 * t)) - 0.5 * t
                   for t, c in enumerate([0.0, 0.0, 0.5]))
    torch.testing.assert_close(m.log_density(values), expected)


def test_a_param_inside_the_step_is_refused_as_on_the_graph_path():
    @model
    def m():
        def step(c, _):
            return sample("z", Normal(c * param("w", torch.tensor(0.5)), 1.0)), None
        scan(step, torch.tensor(1.0), length=2)

    with pytest.raises(ModelError, match="param 'w' inside step 0 of scan 'step'"):
        m.trace()


def test_model_sample_vectorized_over_draws():
    @model
    def m(y):
        def step(x, y_t):
            x = sample("x", Normal(0.9 * x, 1.0))
            sample("y", Normal(x, 1.0), obs=y_t)
            return x, x
        return scan(step, torch.tensor(0.0), y)

    draws = m.sample(torch.zeros(4), seed=0, num_samples=7)
    assert draws["x[3]"].shape == (7,) and len(draws) == 8
    assert not torch.equal(draws["x[0]"], draws["x[1]"])


@pytest.mark.parametrize("call, message", [
    (lambda: scan(lambda c, x: (c, x), torch.tensor(0.0)), "give xs or length"),
    (lambda: scan(lambda c, x: (c, x), torch.tensor(0.0), torch.zeros(3), length=4),
     r"steps disagree: .*\[3, 4\]"),
    (lambda: scan(lambda c, x: (c, x), torch.tensor(0.0), {"a": torch.zeros(3), "b": 1.0}),
     "every leaf of xs is a tensor"),
    (lambda: scan(lambda c, x: c, torch.tensor(0.0), length=2), "returns a pair"),
    (lambda: scan(lambda c, x: ((c, c), None), torch.tensor(0.0), length=2),
     "carry of structure"),
    (lambda: scan(lambda c, x: (torch.cat([c.reshape(-1), c.reshape(-1)]), None),
                  torch.tensor(0.0), length=2), r"step 1 turns carry leaf 0 from \(2,\)"),
    (lambda: scan(lambda c, x: (c, None), torch.tensor(0.0), length=0), "at least one step"),
], ids=["no-steps", "disagree", "leaf", "pair", "structure", "shape", "zero"])
def test_bad_scans_are_refused_naming_the_scan(call, message):
    with pytest.raises(ModelError, match=message):
        call()
