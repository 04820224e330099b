"""Shared pieces of the MMD benchmarks: the implementations compared and how they are timed.

Run as a module to measure one configuration's peak memory in a fresh process:
``python -m benchmarks.common IMPL N D`` prints the peak RSS in bytes.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable

import torch

import factorkit

Fn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def reference_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The MFM reference formula, from its definition: tiled n x m x d differences."""

    def kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n, m, d = a.shape[0], b.shape[0], a.shape[1]
        ta = a.unsqueeze(1).expand(n, m, d)
        tb = b.unsqueeze(0).expand(n, m, d)
        return torch.exp(-(ta - tb).pow(2).mean(2) / d)

    return kernel(x, x).mean() + kernel(y, y).mean() - 2 * kernel(x, y).mean()


def geomloss_mmd(d: int) -> Fn | None:
    """geomloss's dense Gaussian MMD with the same kernel, scaled to the same value."""
    try:
        from geomloss import SamplesLoss
    except ImportError:
        return None
    # geomloss: exp(-r / (2 blur^2)) and half the MMD^2.
    loss = SamplesLoss("gaussian", blur=d / 2**0.5, backend="tensorized")
    return lambda x, y: 2.0 * loss(x, y)


def implementations(d: int) -> dict[str, Fn]:
    impls: dict[str, Fn] = {
        "factorkit": lambda x, y: factorkit.mmd(x, y),
        "chunked": lambda x, y: factorkit.mmd(x, y, mode="chunked", chunk_size=1024),
        "reference": reference_mmd,
    }
    geo = geomloss_mmd(d)
    if geo is not None:
        impls["geomloss"] = geo
    return impls


def inputs(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).requires_grad_(True)
    return x, torch.randn(n, d, generator=g)


def forward_backward(fn: Fn, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        x.grad = None
        fn(x, y).backward()

    return run


def bare_matmuls(n: int, d: int) -> Callable[[], None]:
    """The matmuls a one-Gram MMD needs: the pooled Gram and the gradient product."""
    w = torch.randn(2 * n, d)
    rhs = torch.randn(2 * n, d + 1)
    gram = torch.empty(2 * n, 2 * n)

    def run() -> None:
        torch.mm(w, w.T, out=gram)
        torch.mm(gram[:n], rhs)

    return run


def median_times(runs: dict[str, Callable[[], None]], reps: int) -> dict[str, float]:
    """Median seconds of each callable, runs alternated so that load drifts hit all alike."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def peak_rss(impl: str, n: int, d: int) -> int:
    """Peak RSS in bytes of this process after one forward + backward of ``impl``."""
    x, y = inputs(n, d)
    fns = implementations(d)
    fns["analytic"] = lambda x, y: factorkit.gaussian_prior_mmd(x)
    forward_backward(fns[impl], x, y)()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


if __name__ == "__main__":
    impl, n, d = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if impl == "baseline":
        inputs(n, d)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    else:
        print(peak_rss(impl, n, d))
