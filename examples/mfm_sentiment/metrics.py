"""Scores of the sentiment example: the datasets' usual metrics, the factors' contributions
over time (gradient flow), and the summary over seeds."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from examples.mfm_sentiment.data import Batch
from factorkit import (
    MFM,
    FactorContributions,
    FactorizedLatents,
    ModalityDecoders,
    accuracy,
    accuracy_2,
    accuracy_7,
    f1,
    factor_contributions,
    mae,
    pearson_corr,
    per_target_corr,
    per_target_mae,
    weighted_f1,
)

__all__ = [
    "MMMO_THRESHOLD",
    "contributions_over_time",
    "finite_or_none",
    "pooled_share",
    "sentiment_metrics",
    "summarise",
]

MMMO_THRESHOLD = 3.5
"""ICT-MMMO labels are 1..5: positive when >= 3.5 (the MFN/MFM convention)."""


def finite_or_none(value: Tensor | float) -> float | None:
    """The value as a float, or ``None`` when it is not finite (JSON has no NaN)."""
    v = float(value)
    return v if math.isfinite(v) else None


def sentiment_metrics(prediction: Tensor, labels: Tensor, dataset: str) -> dict[str, Any]:
    """The dataset's usual metrics, named as in :mod:`factorkit.metrics`.

    - ``pom``: ``mae`` and ``corr``, each the mean over the 17 traits.
    - ``mmmo``: ``mae``, ``corr``, ``acc_2`` and ``f1`` (weighted) with positive = label
      >= 3.5 (labels are integers 1..5, so no label sits on the threshold).
    - ``youtube``: 3-class ``accuracy`` and support-weighted ``f1``.
    - ``mosi``: ``mae``, ``corr``, ``acc_7``, and ``acc_2``/``f1`` negative (< 0) vs
      non-negative (the MFN/MFM convention), plus ``acc_2_nonzero``/``f1_nonzero`` with
      zero labels excluded (the MulT/MISA convention).

    A correlation that is undefined (constant predictions) is ``None``.
    """
    y_hat, y = prediction.detach().float().cpu(), labels.cpu()
    if dataset == "youtube":
        pred = y_hat.argmax(1)
        return {
            "accuracy": float(accuracy(pred, y)),
            "f1": float(f1(pred, y, num_classes=y_hat.shape[1], average="weighted")),
        }
    if dataset == "pom":
        return {
            "mae": float(per_target_mae(y_hat, y).mean()),
            "corr": finite_or_none(per_target_corr(y_hat, y).mean()),
        }
    y_hat = y_hat.reshape(y.shape)
    out: dict[str, Any] = {
        "mae": float(mae(y_hat, y)),
        "corr": finite_or_none(pearson_corr(y_hat, y)),
    }
    if dataset == "mmmo":
        out["acc_2"] = float(accuracy_2(y_hat, y, exclude_zero=False, threshold=MMMO_THRESHOLD))
        out["f1"] = float(weighted_f1(y_hat, y, exclude_zero=False, threshold=MMMO_THRESHOLD))
        return out
    out["acc_2"] = float(accuracy_2(y_hat, y, exclude_zero=False))
    out["f1"] = float(weighted_f1(y_hat, y, exclude_zero=False))
    if bool((y != 0).any()):
        out["acc_2_nonzero"] = float(accuracy_2(y_hat, y, exclude_zero=True))
        out["f1_nonzero"] = float(weighted_f1(y_hat, y, exclude_zero=True))
    out["acc_7"] = float(accuracy_7(y_hat, y))
    return out


def contributions_over_time(
    model: MFM, batch: Batch, *, batch_size: int = 256
) -> FactorContributions:
    """Gradient flow from F_y and from F_a_m into each X_hat_m, per time step.

    :func:`~factorkit.factor_contributions` (per coordinate) over the samples of
    ``batch`` that have modality m. Step k is the k-th valid step of a sequence, the
    decoder's own step k whatever the padding layout: the decoder is unrolled over all
    T steps from the first one, and step k counts only the samples longer than k.

    Args:
        model: a trained model; put it in eval mode first.
        batch: the samples to average over (e.g. the test split).
        batch_size: samples per Jacobian pass.

    Returns:
        :class:`~factorkit.FactorContributions` with a (T,) tensor per modality (NaN at a
        step that no sample reaches).

    Shapes:
        batch.x[m]: (B, T, D_m). Returns: shared[m], private[m], share[m], counts[m]: (T,).
    """
    names = sorted(batch.x)
    steps = int(batch.mask.shape[1])

    decoders = model.decoders
    assert isinstance(decoders, ModalityDecoders), "the MFM's decoders are needed"

    def decoder(name: str) -> Callable[[Tensor, Tensor], Tensor]:
        def run(private: Tensor, shared: Tensor) -> Tensor:
            every = torch.ones(private.shape[0], steps, dtype=torch.bool, device=private.device)
            return decoders.decode(name, private, shared, mask=every)

        return run

    def factorize(part: Batch) -> tuple[FactorizedLatents, dict[str, Tensor]]:
        factors = model.generators(model.encode(part.x, part.present, mask=part.mask))
        return factors, dict.fromkeys(names, part.mask.sum(1))

    index = torch.arange(len(batch), device=batch.mask.device)
    return factor_contributions(
        {m: decoder(m) for m in names},
        (batch.take(rows) for rows in index.split(batch_size)),
        factorize=factorize,
        per_step=names,
        per_coordinate=True,
    )


def pooled_share(contributions: FactorContributions) -> dict[str, float]:
    """Each modality's share of F_y over all its valid steps: every (sample, step) pair
    weighs the same, shared / (shared + private) of the pooled norms."""
    out = {}
    for m, n in contributions.counts.items():
        reached = n > 0
        shared = (contributions.shared[m][reached] * n[reached]).sum()
        private = (contributions.private[m][reached] * n[reached]).sum()
        out[m] = float(shared / (shared + private))
    return out


def _mean_std(runs: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Mean and sample std of every numeric leaf over runs (None where any run has None)."""
    mean: dict[str, Any] = {}
    std: dict[str, Any] = {}
    for key, first in runs[0].items():
        if isinstance(first, Mapping):
            mean[key], std[key] = _mean_std([r[key] for r in runs])
            continue
        values = [r[key] for r in runs]
        if key == "n":  # the number of test samples, the same for every seed
            mean[key] = values[0]
            continue
        if any(v is None for v in values):
            mean[key] = std[key] = None
            continue
        t = torch.tensor(values, dtype=torch.float64)
        mean[key] = float(t.mean())
        std[key] = float(t.std()) if len(values) > 1 else 0.0
    return mean, std


def _mean_per_step(runs: Sequence[Mapping[str, Any]], key: str) -> dict[str, list[float | None]]:
    """Mean over seeds of per-step lists; None where a step has no value (no sample)."""
    out = {}
    for m in runs[0][key]:
        columns = zip(*(r[key][m] for r in runs), strict=True)
        out[m] = [None if None in c else sum(c) / len(c) for c in columns]
    return out


def summarise(dataset: str, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The metrics JSON: means over seeds under the model names, spreads under ``std``.

    ``shared_contribution_share_per_step`` is the mean over seeds of F_y's share of each
    reconstruction at every time step of the test set; ``contribution_steps_n`` the
    number of test samples behind each step.
    """
    models = ("mfm", "discriminative", "missing", "missing_zero_fill", "missing_mean_imputation")
    keys = [k for k in models if k in runs[0]]
    mean, std = _mean_std([{k: r[k] for k in keys} for r in runs])
    return {
        "dataset": dataset,
        "seeds": [r["seed"] for r in runs],
        **mean,
        "std": std,
        "shared_contribution_share_per_step": _mean_per_step(
            runs, "shared_contribution_share_per_step"
        ),
        "contribution_steps_n": runs[0]["contribution_steps_n"],
        "runs": [{k: v for k, v in r.items() if k != "history"} for r in runs],
    }
