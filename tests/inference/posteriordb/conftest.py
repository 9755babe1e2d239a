"""Setup for the posteriordb suite: float64 throughout."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _float64() -> Iterator[None]:
    """The data is float64 (see ``load_data``); the prior draws the graph tracer makes come in
    torch's default dtype and must match it (``X @ beta`` refuses mixed dtypes)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
