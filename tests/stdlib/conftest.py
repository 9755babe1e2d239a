"""Shared setup for the stdlib tests: a fixed seed per test."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
