"""Each VI test runs in a param store of its own, inside a seed scope."""

import pytest

from ppl import ParamStore
from ppl.handlers import seed
from ppl.runtime import active_handlers


@pytest.fixture(autouse=True)
def store():
    with ParamStore() as fresh, seed(0):
        yield fresh
    assert active_handlers() == (), "a test left handlers on the stack"
