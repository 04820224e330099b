"""Shared fixtures: deterministic seeds and one intra-op thread for every test.

The test models are small: with several threads, per-op synchronisation costs more than
it gains, and on a loaded 2-core machine it made some tests 10-20x slower.
"""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)
