"""pytest-benchmark suite for the MMD (forward + backward, float32, CPU).

    python -m pytest benchmarks/test_mmd.py --benchmark-group-by=group
    python -m pytest benchmarks/test_mmd.py -k "1024 and 64" --benchmark-group-by=group

Ratios measured within one run are printed by ``python -m benchmarks.mmd_table``.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import factorkit
from benchmarks.common import (
    bare_matmuls,
    forward_backward,
    geomloss_mmd,
    implementations,
    inputs,
)

REFERENCE_LIMIT = 1024 * 1024 * 64  # n * n * d elements per broadcast tensor
SIZES = [(n, d) for n in (256, 1024, 4096, 8192) for d in (16, 64, 256)]
IMPLS = ["factorkit", "chunked", "geomloss", "reference", "bare matmuls"]


@pytest.mark.parametrize(("n", "d"), SIZES, ids=[f"n{n}-d{d}" for n, d in SIZES])
@pytest.mark.parametrize("impl", IMPLS)
def test_forward_backward(benchmark: Any, impl: str, n: int, d: int) -> None:
    if impl == "geomloss" and geomloss_mmd(d) is None:
        pytest.skip("geomloss not installed")
    if impl == "reference" and n * n * d > REFERENCE_LIMIT:
        pytest.skip("the broadcast formula's n x n x d tensors do not fit")
    benchmark.group = f"n={n} d={d}"
    if impl == "bare matmuls":
        run = bare_matmuls(n, d)
    else:
        x, y = inputs(n, d)
        run = forward_backward(implementations(d)[impl], x, y)
    benchmark.pedantic(run, rounds=5, warmup_rounds=1)


@pytest.mark.parametrize("estimator", ["biased", "analytic"])
def test_prior_loss_sampled_vs_analytic(benchmark: Any, estimator: str) -> None:
    z, _ = inputs(4096, 64)
    loss = factorkit.MMDPriorLoss(estimator=estimator)  # type: ignore[arg-type]
    benchmark.group = "prior loss n=4096 d=64"
    benchmark.pedantic(forward_backward(lambda a, b: loss(a), z, z), rounds=5, warmup_rounds=1)


@pytest.mark.parametrize(
    ("impl", "n", "d", "limit_gib"),
    [("factorkit", 8192, 256, 1.3), ("chunked", 32768, 64, 1.0), ("geomloss", 8192, 256, None)],
)
def test_peak_memory(impl: str, n: int, d: int, limit_gib: float | None) -> None:
    if impl == "geomloss" and geomloss_mmd(d) is None:
        pytest.skip("geomloss not installed")
    cmd = [sys.executable, "-m", "benchmarks.common", impl, str(n), str(d)]
    peak = int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    print(f"{impl} n={n} d={d}: peak RSS {peak / 2**30:.2f} GiB")
    if limit_gib is not None:
        assert peak <= limit_gib * 2**30
