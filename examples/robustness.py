"""Robustness curves: test accuracy as views go missing at test time.

For each missing rate r in :data:`RATES`, each view of each test sample is dropped with
probability r, and where a sample lost every view one of them, chosen uniformly, is
restored (:func:`factorkit.random_presence`): every sample keeps at least one view, so
the realised fraction of missing views is ``r - r^M / M`` for M views (0.81 rather than
0.9 with six views). Every method sees the same masks: they depend only on the seed and
the rate, and the same uniform draws serve every rate, so a view dropped at rate r is
dropped at every higher rate too unless it is the one restored.

A method is a callable ``predict(views, present) -> logits``; its curve is its accuracy
at every rate, and its summary number the area under the curve, the mean accuracy over
the rates (the rates are evenly spaced). :func:`robustness_curves` gives one seed's
curves as :data:`examples.seeds.Metrics` (method -> ``rate_0.0`` ... ``rate_0.9``,
``area``), so that :func:`examples.seeds.summarise` reduces several seeds, and
:func:`plot_curves` draws the summary: the mean over seeds with a band of one standard
deviation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from examples.training import Split, accuracy
from factorkit import random_presence

__all__ = [
    "RATES",
    "at_every_rate",
    "expected_missing_fraction",
    "imputed",
    "mixed_rate_presence",
    "plot_curves",
    "rate_key",
    "rate_masks",
    "robustness_curves",
]

RATES: tuple[float, ...] = tuple(i / 10 for i in range(10))
"""Test-time missing rates 0, 0.1, ..., 0.9."""

Presence = dict[str, Tensor]
Predict = Callable[[Mapping[str, Tensor], Mapping[str, Tensor] | None], Tensor]


def rate_key(rate: float) -> str:
    """The metric name of a rate's accuracy: ``"rate_0.3"``."""
    return f"rate_{rate:.1f}"


def rate_masks(
    names: Sequence[str],
    batch_size: int,
    *,
    seed: int,
    rates: Sequence[float] = RATES,
    device: torch.device | str | None = None,
) -> dict[float, Presence]:
    """The presence masks of every rate (see the module docstring).

    Args:
        names: view names.
        batch_size: test samples B.
        seed: the masks' seed (each rate restarts from it: the same draws at every rate).
        rates: missing rates in [0, 1).
        device: where the masks live.

    Shapes:
        Returns: rate -> view name -> (B,) bool, at least one True per sample.
    """
    masks = {}
    for rate in rates:
        generator = torch.Generator().manual_seed(seed)
        present = random_presence(names, batch_size, rate, generator=generator)
        masks[rate] = {m: p.to(device) for m, p in present.items()}
    return masks


def at_every_rate(split: Split, *, seed: int, rates: Sequence[float] = RATES) -> Split:
    """``split`` repeated once per rate, each copy with that rate's :func:`rate_masks`.

    A validation set for a model meant for every rate (its accuracy is the mean over the
    rates: the area under its curve).

    Shapes:
        split.views[m]: (N, ...). Returns: views (len(rates) * N, ...), the copies in the
        order of ``rates``.
    """
    device = split.labels.device
    masks = rate_masks(sorted(split.views), len(split), seed=seed, rates=rates, device=device)
    index = torch.arange(len(split), device=device).repeat(len(rates))
    present = {m: torch.cat([masks[r][m] for r in rates]) for m in split.views}
    return Split({m: v[index] for m, v in split.views.items()}, split.labels[index], present)


def expected_missing_fraction(rate: float, num_views: int) -> float:
    """Expected fraction of missing (sample, view) slots: ``r - r^M / M``.

    A view is dropped with probability r and restored when every view was dropped
    (probability r^M) and it is the one picked (1 / M).
    """
    return rate - rate**num_views / num_views


def mixed_rate_presence(
    names: Sequence[str], rates: Sequence[float] = RATES
) -> Callable[[int, torch.Generator], Presence]:
    """A training mask for every batch at a rate drawn uniformly from ``rates``.

    For :func:`examples.training.fit`'s ``train_presence``: one model trained on it
    has seen every rate of the curve (an observed-only baseline for all rates at once).

    Shapes:
        The callable's result: view name -> (batch,) bool.
    """

    def draw(batch: int, generator: torch.Generator) -> Presence:
        rate = rates[int(torch.randint(len(rates), (), generator=generator))]
        return random_presence(names, batch, rate, generator=generator)

    return draw


def imputed(predict: Predict, fill: Mapping[str, Tensor]) -> Predict:
    """``predict`` on complete views, the absent ones replaced by ``fill`` first.

    Zero-filling and mean imputation are this, with the fill value of each view.

    Shapes:
        fill[m]: view m's per-sample shape (broadcast over the batch).
    """

    def fill_in(views: Mapping[str, Tensor], present: Mapping[str, Tensor] | None) -> Tensor:
        if present is not None:
            views = {
                m: torch.where(
                    present[m].reshape((-1,) + (1,) * (x.dim() - 1)),
                    x,
                    fill[m].to(device=x.device, dtype=x.dtype),
                )
                for m, x in views.items()
            }
        return predict(views, None)

    return fill_in


def robustness_curves(
    methods: Mapping[str, Predict],
    test: Split,
    *,
    seed: int,
    rates: Sequence[float] = RATES,
) -> dict[str, dict[str, float]]:
    """Every method's accuracy at every missing rate, on the same masks, and its area.

    Args:
        methods: method name -> ``predict(views, present) -> logits``.
        test: the complete test split.
        seed: seeds the masks.
        rates: the missing rates, evenly spaced.

    Returns:
        method -> ``{rate_key(r): accuracy for r in rates, "area": mean accuracy}``.

    Shapes:
        test.views[m]: (N, ...). predict returns (B, K) logits for a batch of B.
    """
    names = sorted(test.views)
    masks = rate_masks(names, len(test), seed=seed, rates=rates, device=test.labels.device)
    curves: dict[str, dict[str, float]] = {}
    for method, predict in methods.items():
        curve = {
            rate_key(r): accuracy(predict, Split(test.views, test.labels, masks[r]))  # type: ignore[arg-type]
            for r in rates
        }
        curves[method] = {**curve, "area": sum(curve.values()) / len(curve)}
    return curves


def plot_curves(
    summary: Mapping[str, Any], path: Path, *, rates: Sequence[float] = RATES, title: str = ""
) -> Path:
    """Accuracy against the missing rate: the mean over seeds and a +-1 std band.

    Args:
        summary: an :func:`examples.seeds.summarise` summary of
            :func:`robustness_curves` runs.
        path: the PNG to write.
        rates: the rates of the curves.
        title: the figure's title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    x = [100 * r for r in rates]
    for method, metrics in summary["models"].items():
        mean = [100 * metrics[rate_key(r)]["mean"] for r in rates]
        area = 100 * metrics["area"]["mean"]
        (line,) = ax.plot(x, mean, marker="o", markersize=3, label=f"{method} (area {area:.1f})")
        if all(metrics[rate_key(r)]["std"] is not None for r in rates):
            std = [100 * metrics[rate_key(r)]["std"] for r in rates]
            low = [m - s for m, s in zip(mean, std, strict=True)]
            high = [m + s for m, s in zip(mean, std, strict=True)]
            ax.fill_between(x, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    seeds = len(summary["seeds"])
    ax.set_xlabel("test-time missing rate r (%), each view dropped with probability r")
    ax.set_ylabel("test accuracy (%)")
    band = f"mean ± std over {seeds} seeds" if seeds > 1 else "one seed"
    ax.set_title(f"{title} ({band})" if title else band, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
