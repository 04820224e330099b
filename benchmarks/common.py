"""Shared pieces of the MMD benchmarks: the implementations compared and how they are timed.

Run as a module to measure one configuration's peak memory in a fresh process:
``python -m benchmarks.common IMPL N D`` prints the peak RSS in bytes.
"""

from __future__ import annotations

import functools
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


def geomloss_mmd(d: int, backend: str = "tensorized") -> Fn | None:
    """geomloss's Gaussian MMD with the same kernel, scaled to the same value.

    ``backend="online"`` is geomloss's KeOps backend: ``None`` unless pykeops imports.
    """
    try:
        from geomloss import SamplesLoss

        if backend == "online":
            import pykeops  # noqa: F401
    except ImportError:
        return None
    # geomloss: exp(-r / (2 blur^2)) and half the MMD^2.
    loss = SamplesLoss("gaussian", blur=d / 2**0.5, backend=backend)
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


def inputs(n: int, d: int, seed: int = 0, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """x (requiring grad) and y, drawn on the CPU (the same values on every device)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(device).requires_grad_(True)
    return x, torch.randn(n, d, generator=g).to(device)


def forward_backward(fn: Fn, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        x.grad = None
        fn(x, y).backward()

    return run


def bare_matmuls(n: int, d: int, device: str = "cpu") -> Callable[[], None]:
    """The matmuls a one-Gram MMD needs: the pooled Gram and the gradient product.

    Their work is ``matmul_flops(n, d)``. On CUDA the (2n x 2n) Gram is written in row
    blocks of at most 2^28 entries (1 GiB), so n = 65,536 fits in memory.
    """
    w = torch.randn(2 * n, d, device=device)
    rhs = torch.randn(2 * n, d + 1, device=device)
    rows = 2 * n if device == "cpu" else max(1, min(2 * n, 2**28 // (2 * n)))
    gram = torch.empty(rows, 2 * n, device=device)

    def run() -> None:
        for start in range(0, 2 * n, rows):
            block = gram[: min(rows, 2 * n - start)]
            torch.mm(w[start : start + rows], w.T, out=block)
            if start < n:
                torch.mm(block[: min(rows, n - start)], rhs)

    return run


def matmul_flops(n: int, d: int) -> float:
    """FLOPs of ``bare_matmuls``: the full pooled Gram, 2 (2n)^2 d, and the gradient
    product of the n rows of x, 2 n (2n) (d + 1); forward and backward together."""
    return 2.0 * (2 * n) ** 2 * d + 2.0 * n * (2 * n) * (d + 1)


def median_times(
    runs: dict[str, Callable[[], None]], reps: int, device: str = "cpu", warmup: int = 1
) -> dict[str, float]:
    """Median seconds of each callable, runs alternated so that load drifts hit all alike.

    On CUDA each run is timed with CUDA events after ``warmup`` untimed runs.
    """
    if device != "cpu":
        return cuda_median_times(runs, reps, warmup)
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(reps):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def cuda_median_times(
    runs: dict[str, Callable[[], None]], reps: int, warmup: int = 3
) -> dict[str, float]:
    """Median seconds of each callable on the current CUDA stream (CUDA events)."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    torch.cuda.synchronize()
    events: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = {k: [] for k in runs}
    for _ in range(reps):
        for name, run in runs.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            run()
            end.record()
            events[name].append((start, end))
    torch.cuda.synchronize()
    return {k: statistics.median(s.elapsed_time(e) / 1e3 for s, e in v) for k, v in events.items()}


def gemm_tflops(device: str, size: int = 8192, reps: int = 10) -> dict[str, float]:
    """Measured matmul throughput, TFLOP/s: a float32 ``size``^3 GEMM with TF32 off and
    on, and in bf16."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    old = torch.backends.cuda.matmul.allow_tf32
    result = {}
    try:
        for name, tf32, dtype in (
            ("fp32", False, torch.float32),
            ("tf32", True, torch.float32),
            ("bf16", False, torch.bfloat16),
        ):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            x, y, o = a.to(dtype), b.to(dtype), out.to(dtype)
            gemm = functools.partial(torch.mm, x, y, out=o)
            t = median_times({"gemm": gemm}, reps, device)["gemm"]
            result[name] = 2.0 * size**3 / t / 1e12
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    return result


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
