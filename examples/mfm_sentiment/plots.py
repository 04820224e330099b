"""Figures of the sentiment example: training curves and the contributions over time."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["plot_contributions", "plot_history"]


def plot_history(runs: Sequence[Mapping[str, Any]], out: Path) -> None:
    """Training curves of the MFM terms and the validation losses, one figure per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    for r in runs:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        history = r["history"]["mfm"]
        for term in history[0]:
            if term != "total":
                axes[0].semilogy([h[term] for h in history], label=term)
        axes[0].set(title="MFM training terms", xlabel="epoch", ylabel="loss term (log scale)")
        axes[0].legend(fontsize=7)
        for name, hist in r["history"].items():
            axes[1].plot([h["val_loss"] for h in hist], label=name)
        loss = "L1" if "mae" in r["mfm"] else "cross-entropy"  # regression or YouTube's classes
        axes[1].set(title="validation label loss", xlabel="epoch", ylabel=loss)
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(out / f"curves_seed{r['seed']}.png", dpi=100)
        plt.close(fig)


def plot_contributions(summary: Mapping[str, Any], out: Path) -> Path:
    """Heat map (modalities x time steps) of F_y's share of each reconstruction.

    Reads ``shared_contribution_share_per_step`` and ``contribution_steps_n`` of the
    summary. Each cell is written out; the colours are centred on 0.5 (both factors
    equal) and stretched to the largest distance from it, so that small differences
    between steps stay visible. Steps that no test sample reaches are left blank.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_step = summary["shared_contribution_share_per_step"]
    names = sorted(per_step)
    grid = torch.tensor(
        [[math.nan if v is None else v for v in per_step[m]] for m in names], dtype=torch.float64
    )
    steps = grid.shape[1]
    reached = grid[~grid.isnan()]
    half = max(float((reached - 0.5).abs().max()), 0.01) if reached.numel() else 0.5
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(max(6.0, 0.45 * steps + 2.5), 1.6 + 0.5 * len(names) + 1.4),
        sharex=True, layout="constrained",
        gridspec_kw={"height_ratios": [max(len(names), 1), 1.4]},
    )  # fmt: skip
    image = ax.imshow(
        grid.numpy(),
        aspect="auto",
        cmap="coolwarm",
        vmin=0.5 - half,
        vmax=0.5 + half,
        interpolation="nearest",
    )
    for row, col in (~grid.isnan()).nonzero().tolist():
        ax.text(col, row, f"{grid[row, col]:.2f}".lstrip("0"), ha="center", va="center", fontsize=7)
    shares = summary["mfm"]["shared_contribution_share"]
    ax.set_yticks(range(len(names)), [f"{m} ({shares[m]:.2f})" for m in names])
    seeds = len(summary["seeds"])
    ax.set_title(
        f"{summary['dataset']}: share a / (a + b) of the shared factor F_y in X_hat per step\n"
        f"(test set, {seeds} seed{'s' if seeds > 1 else ''}; over all steps in brackets)",
        fontsize=9,
    )
    fig.colorbar(image, ax=[ax, counts], label="share of F_y (0.5: equal)")
    for m in names:
        counts.plot(summary["contribution_steps_n"][m], marker=".", label=m)
    counts.set(xlabel="time step k (the k-th valid step of a sequence)", ylabel="test samples")
    counts.set_xticks(range(steps))
    counts.tick_params(labelsize=7)
    counts.legend(fontsize=7)
    path = out / "contributions_over_time.png"
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
