"""Print the MMD benchmark tables (ratios measured within one run).

    python -m benchmarks.mmd_table                 # everything (long on 2 cores)
    python -m benchmarks.mmd_table speed --n 1024 4096 --d 64
    python -m benchmarks.mmd_table analytic memory rff

Times are medians of alternated forward + backward runs in this one process, so load from
other processes shifts all columns alike; memory is the peak RSS of a fresh process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

import torch

import factorkit
from benchmarks.common import (
    bare_matmuls,
    forward_backward,
    implementations,
    inputs,
    median_times,
)

# The broadcast formula materialises n x n x d tensors: skip it beyond this many elements.
REFERENCE_LIMIT = 1024 * 1024 * 64


def speed(ns: list[int], ds: list[int], reps: int) -> None:
    print(
        "| n | d | factorkit ms | bare matmuls ms | fk / bare | chunked ms "
        "| geomloss ms | geomloss / fk | reference ms | reference / fk |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in ns:
        for d in ds:
            x, y = inputs(n, d)
            fns = implementations(d)
            if n * n * d > REFERENCE_LIMIT:
                fns.pop("reference")
            runs = {k: forward_backward(f, x, y) for k, f in fns.items()}
            runs["bare"] = bare_matmuls(n, d)
            t = {k: v * 1e3 for k, v in median_times(runs, reps).items()}
            fk = t["factorkit"]
            geo = t.get("geomloss")
            ref = t.get("reference")
            print(
                f"| {n} | {d} | {fk:.2f} | {t['bare']:.2f} | {fk / t['bare']:.2f} "
                f"| {t['chunked']:.2f} "
                f"| {_fmt(geo)} | {_fmt(geo and geo / fk)} "
                f"| {_fmt(ref)} | {_fmt(ref and ref / fk)} |",
                flush=True,
            )


def analytic(n: int, d: int, reps: int, calls: int) -> None:
    z, _ = inputs(n, d)
    sampled = factorkit.MMDPriorLoss()
    closed = factorkit.MMDPriorLoss(estimator="analytic")
    runs = {
        "sampled": forward_backward(lambda a, b: sampled(a), z, z),
        "analytic": forward_backward(lambda a, b: closed(a), z, z),
    }
    t = median_times(runs, reps)
    with torch.no_grad():
        s = [sampled(z).item() for _ in range(calls)]
        a = [closed(z).item() for _ in range(calls)]
    print(
        f"n={n}, d={d}: sampled {t['sampled'] * 1e3:.2f} ms, analytic "
        f"{t['analytic'] * 1e3:.2f} ms, speed-up {t['sampled'] / t['analytic']:.2f}x; "
        f"std over {calls} calls at fixed z: sampled {statistics.stdev(s):.3e} "
        f"(mean {statistics.mean(s):.3e}), analytic {statistics.stdev(a):.3e} "
        f"(value {a[0]:.3e})"
    )


def memory(configs: list[tuple[str, int, int]]) -> None:
    print("| impl | n | d | peak RSS GiB | baseline GiB (torch + inputs) |")
    print("|---|---:|---:|---:|---:|")
    for impl, n, d in configs:
        base = _rss("baseline", n, d)
        peak = _rss(impl, n, d)
        print(f"| {impl} | {n} | {d} | {_gib(peak)} | {_gib(base)} |", flush=True)


def rff(n: int, ds: list[int], features: list[int], draws: int) -> None:
    print("| d | features | mean relative error of MMD^2 | mean gradient cosine |")
    print("|---:|---:|---:|---:|")
    g = torch.Generator().manual_seed(1)
    for d in ds:
        x, y = inputs(n, d)
        exact = factorkit.mmd(x, y)
        (g_exact,) = torch.autograd.grad(exact, x)
        for f in features:
            errs, cos = [], []
            for _ in range(draws):
                est = factorkit.mmd(x, y, mode="rff", features=f, generator=g)
                (g_est,) = torch.autograd.grad(est, x)
                errs.append(abs(est.item() - exact.item()) / exact.item())
                cos.append(
                    torch.nn.functional.cosine_similarity(
                        g_est.flatten(), g_exact.flatten(), dim=0
                    ).item()
                )
            print(
                f"| {d} | {f} | {statistics.mean(errs):.3f} | {statistics.mean(cos):.3f} |",
                flush=True,
            )


def _rss(impl: str, n: int, d: int) -> int:
    cmd = [sys.executable, "-m", "benchmarks.common", impl, str(n), str(d)]
    return int(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)


def _gib(b: int) -> str:
    return f"{b / 2**30:.2f}"


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("sections", nargs="*", default=["speed", "analytic", "memory", "rff"])
    p.add_argument("--n", type=int, nargs="+", default=[256, 1024, 4096, 8192])
    p.add_argument("--d", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--reps", type=int, default=5)
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    if "speed" in a.sections:
        speed(a.n, a.d, a.reps)
    if "analytic" in a.sections:
        print()
        analytic(4096, 64, a.reps, calls=100)
    if "memory" in a.sections:
        print()
        memory([("factorkit", 8192, 256), ("geomloss", 8192, 256), ("chunked", 32768, 64)])
    if "rff" in a.sections:
        print()
        rff(1024, [16, 64, 256], [256, 1024, 4096], draws=20)


if __name__ == "__main__":
    main()
