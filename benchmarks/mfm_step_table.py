"""Print the time of one MFM training step relative to the discriminative baseline.

Both steps are timed alternately in one process (median of many rounds), on the
digits example's shapes and defaults, one CPU thread (the example's default).

    python benchmarks/mfm_step_table.py
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.test_mfm_step import make_steps


def main(rounds: int = 200) -> None:
    torch.set_num_threads(1)
    steps = make_steps()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(20):
        for step in steps.values():
            step()
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    for name, value in medians.items():
        print(f"{name:<15} {1000 * value:7.2f} ms per step")
    print(f"MFM / discriminative: {medians['mfm'] / medians['discriminative']:.2f}x")


if __name__ == "__main__":
    main()
