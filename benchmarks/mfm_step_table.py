"""Print the time of one MFM training step relative to the discriminative baseline.

Both steps are timed alternately in one process (median of many rounds), on the
digits example's shapes and defaults, one CPU thread (the example's default).

    python benchmarks/mfm_step_table.py
    python benchmarks/mfm_step_table.py --device cuda --compile    # CUDA events, bf16

With ``--compile`` the table has a second row with the loss functions under
``torch.compile`` (mode ``reduce-overhead``, i.e. CUDA graphs, on CUDA; the default mode
on the CPU).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cuda_median_times
from benchmarks.test_mfm_step import make_steps


def cpu_medians(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per step, steps alternated, after 20 warm-up rounds."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(20):
        for step in steps.values():
            step()
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu")
    p.add_argument("--compile", action="store_true", help="also time the compiled steps")
    p.add_argument("--rounds", type=int, default=200)
    a = p.parse_args(argv)
    if a.device == "cpu":
        torch.set_num_threads(1)
    modes: list[str | None] = [None]
    if a.compile:
        modes.append("reduce-overhead" if a.device != "cpu" else "default")
    for mode in modes:
        steps = make_steps(device=a.device, compile_mode=mode)
        if a.device == "cpu":
            medians = cpu_medians(steps, a.rounds)
        else:
            medians = cuda_median_times(steps, a.rounds, warmup=20)
        if len(modes) > 1:
            print(f"torch.compile: {mode or 'off'}")
        for name, value in medians.items():
            print(f"{name:<15} {1000 * value:7.2f} ms per step")
        print(f"MFM / discriminative: {medians['mfm'] / medians['discriminative']:.2f}x")


if __name__ == "__main__":
    main()
