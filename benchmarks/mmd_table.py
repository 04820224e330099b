"""Print the MMD benchmark tables (ratios measured within one run).

    python -m benchmarks.mmd_table                 # everything (long on 2 cores)
    python -m benchmarks.mmd_table speed --n 1024 4096 --d 64
    python -m benchmarks.mmd_table analytic memory rff
    python -m benchmarks.mmd_table speed --device cuda    # GPU table (CUDA events)

Times are medians of alternated forward + backward runs in this one process, so load from
other processes shifts all columns alike; memory is the peak RSS of a fresh process.
On CUDA: CUDA-event times after warm-up, the GEMM peak measured in the same run, and
the peak allocated memory of each implementation.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Callable

import torch

import factorkit
from benchmarks.common import (
    bare_matmuls,
    forward_backward,
    gemm_tflops,
    geomloss_mmd,
    implementations,
    inputs,
    matmul_flops,
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


# geomloss's tensorized backend holds several n x n float32 matrices (and their
# gradients): beyond this n it would need tens of GiB, so it is left out.
GEOMLOSS_CUDA_LIMIT = 16384
# On CUDA the dense mode runs up to this n; beyond it the chunked mode with CUDA_CHUNK.
DENSE_CUDA_LIMIT = 16384
CUDA_CHUNK = 4096


def cuda_speed(ns: list[int], ds: list[int], reps: int, device: str) -> None:
    """The GPU table: factorkit vs geomloss and the bare matmuls, with the FLOP bound."""
    peak = gemm_tflops(device)
    print(
        f"{torch.cuda.get_device_name()}: 8192^3 GEMM {peak['fp32']:.1f} TFLOP/s fp32, "
        f"{peak['tf32']:.1f} tf32, {peak['bf16']:.1f} bf16 "
        f"(MMD matmuls run in {'tf32' if torch.backends.cuda.matmul.allow_tf32 else 'fp32'})"
    )
    print(
        "\nBound: matmul GFLOP = 2 (2n)^2 d (pooled Gram) + 2 n (2n) (d + 1) (gradient "
        "product), forward + backward; bare ms = those matmuls alone.\n"
    )
    print(
        "| n | d | mode | factorkit ms | chunked ms | matmul GFLOP | bare ms | bare TFLOP/s "
        "| fk / bare | fk TFLOP/s | fk % of fp32 peak | geomloss ms | geomloss / fk | keops ms "
        "| keops / fk | fk peak GiB | geomloss peak GiB |"
    )
    print("|---:|---:|---|" + "---:|" * 14)
    for n in ns:
        for d in ds:
            x, y = inputs(n, d, device=device)
            mode = "dense" if n <= DENSE_CUDA_LIMIT else "chunked"
            fns = {"factorkit": lambda a, b, mode=mode: factorkit.mmd(
                a, b, mode=mode, chunk_size=CUDA_CHUNK, check_finite=False
            )}  # fmt: skip
            if mode == "dense":  # the chunked mode too: fewer, larger blocks
                fns["chunked"] = lambda a, b: factorkit.mmd(
                    a, b, mode="chunked", chunk_size=CUDA_CHUNK, check_finite=False
                )
            geo = geomloss_mmd(d) if n <= GEOMLOSS_CUDA_LIMIT else None
            keops = geomloss_mmd(d, backend="online")
            if geo is not None:
                fns["geomloss"] = geo
            if keops is not None:
                fns["keops"] = keops
            mem = {k: _cuda_peak(forward_backward(f, x, y)) for k, f in fns.items()}
            runs = {k: forward_backward(f, x, y) for k, f in fns.items()}
            runs["bare"] = bare_matmuls(n, d, device)
            t = {k: v * 1e3 for k, v in median_times(runs, reps, device).items()}
            fk, flops = t["factorkit"], matmul_flops(n, d)
            rate = flops / (fk / 1e3) / 1e12
            g, k = t.get("geomloss"), t.get("keops")
            chunked = t.get("chunked", fk)
            print(
                f"| {n} | {d} | {mode} | {fk:.3f} | {chunked:.3f} | {flops / 1e9:.1f} "
                f"| {t['bare']:.3f} "
                f"| {flops / t['bare'] / 1e9:.1f} | {fk / t['bare']:.2f} | {rate:.1f} "
                f"| {100 * rate / peak['fp32']:.0f} "
                f"| {_fmt(g)} | {_fmt(g and g / fk)} | {_fmt(k)} | {_fmt(k and k / fk)} "
                f"| {_gib(mem['factorkit'])} | {_gib(mem['geomloss']) if g else '-'} |",
                flush=True,
            )
            del x, y, runs, fns
            torch.cuda.empty_cache()


def _cuda_peak(run: Callable[[], None]) -> int:
    """Peak bytes allocated during one call, above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


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
    p.add_argument("--n", type=int, nargs="+", default=None)
    p.add_argument("--d", type=int, nargs="+", default=[16, 64, 256])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda: the GPU table")
    a = p.parse_args()
    if a.device != "cpu":
        # The GPU table only: analytic, memory and rff are the CPU tables.
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {a.device}\n")
        cuda_speed(a.n or [1024, 4096, 16384, 65536], a.d, a.reps, a.device)
        return
    a.n = a.n or [256, 1024, 4096, 8192]
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
