"""The ParamStore: a current-store context (per thread), state_dict round trips through
torch.save, loading in place keeps an optimizer's leaves, and the module-level functions act
on the current store."""

import io
import threading

import pytest
import torch
from torch.distributions import constraints

from ppl import ParamStore, param
from ppl.errors import ModelError
from ppl.params import current_store, get_param, unconstrained_params


def test_a_store_context_keeps_params_apart_from_the_default_store():
    with ParamStore() as store:
        param("w", torch.tensor(1.0))
        assert "w" in store and unconstrained_params().keys() == {"w"}
        with ParamStore() as inner:
            param("w", torch.tensor(5.0))
            assert float(get_param("w").detach()) == 5.0
        assert current_store() is store
        assert float(get_param("w").detach()) == 1.0 and len(inner) == 1
    assert "w" not in current_store()


def test_state_dict_round_trips_through_torch_save_with_constraints():
    with ParamStore() as store:
        param("scale", torch.tensor([2.0, 3.0]), constraints.positive)
        buffer = io.BytesIO()
        torch.save(store.state_dict(), buffer)
    buffer.seek(0)
    fresh = ParamStore()
    fresh.load_state_dict(torch.load(buffer, weights_only=False))
    with fresh:
        assert torch.allclose(get_param("scale"), torch.tensor([2.0, 3.0]))
    assert fresh.unconstrained()["scale"].requires_grad


def test_loading_overwrites_existing_leaves_in_place_so_an_optimizer_keeps_them():
    with ParamStore() as store:
        param("scale", torch.tensor(1.0), constraints.positive)
        leaf = store.unconstrained()["scale"]
        optimizer = torch.optim.SGD([leaf], lr=0.1)
        saved = store.state_dict()
        with torch.no_grad():
            leaf.add_(3.0)
        # an unpickled constraint is a new object; it must still match
        buffer = io.BytesIO()
        torch.save(saved, buffer)
        buffer.seek(0)
        store.load_state_dict(torch.load(buffer, weights_only=False))
        assert store.unconstrained()["scale"] is leaf
        assert float(leaf.detach()) == 0.0
        assert optimizer.param_groups[0]["params"][0] is leaf


def test_the_state_is_a_copy():
    with ParamStore() as store:
        param("w", torch.tensor(1.0))
        state = store.state_dict()
        with torch.no_grad():
            store.unconstrained()["w"].fill_(9.0)
    assert float(state["unconstrained"]["w"]) == 1.0


def test_a_mismatched_state_is_refused():
    with pytest.raises(ModelError, match="names of values and constraints differ"):
        ParamStore().load_state_dict({"unconstrained": {"a": torch.zeros(())},
                                      "constraints": {}})


def test_each_thread_starts_in_the_default_store():
    seen = {}

    def worker():
        seen["store"] = current_store()

    with ParamStore() as store:
        thread = threading.Thread(target=worker)
        thread.start()
        thread.join()
    assert seen["store"] is not store
