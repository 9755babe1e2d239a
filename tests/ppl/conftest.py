"""Shared setup for the runtime tests: a fixed seed, an empty param store, a clean stack."""

import pytest
import torch

from ppl import clear_params, set_validation
from ppl.runtime import active_handlers


@pytest.fixture(autouse=True)
def _clean_runtime():
    torch.manual_seed(0)
    clear_params()
    set_validation(True)
    yield
    clear_params()
    set_validation(True)
    assert active_handlers() == (), "a test left handlers on the stack"
