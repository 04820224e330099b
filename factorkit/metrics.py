"""Sentiment and classification metrics, in plain torch (no scikit-learn).

The definitions follow the multimodal sentiment literature (MFN, MFM, MulT, MISA):

- Regression: MAE and Pearson correlation, also per target for multi-target labels
  (POM's 17 personality traits).
- Binary sentiment from scores, two conventions (always say which one you report):

  - ``exclude_zero=False``: negative vs non-negative. Every sample counts; a score
    ``s`` is positive when ``s >= threshold``.
  - ``exclude_zero=True``: the MulT/MISA convention. Samples whose label equals the
    threshold (neutral, 0 for MOSI/MOSEI) are dropped; a score is positive when
    ``s > threshold`` (a prediction exactly at the threshold counts as negative).

  ``threshold`` defaults to 0 (labels in [-3, 3]); use e.g. 3.5 for ICT-MMMO (1..5).
- Acc-7: scores clipped to [-3, 3], then rounded to the nearest integer (half to even,
  as ``numpy.round``), accuracy over the seven classes.
- F1: per-class F1 = 2 TP / (2 TP + FP + FN), averaged with weights equal to each
  class's support (``"weighted"``, as scikit-learn's ``average="weighted"``) or
  uniformly over the classes present in the labels or predictions (``"macro"``).

Inputs are torch tensors, numpy arrays or lists; they are compared in float64 and each
metric returns a 0-d float64 tensor (per-target metrics: a (K,) tensor) on the input's
device. Results do not depend on the scale of the data: scores of 1e-200 or 1e200 give
the same correlation as scores near 1. Non-finite, complex or empty inputs, and NaN or
infinite thresholds, raise a ValueError instead of being averaged.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Literal, TypeAlias

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "accuracy",
    "accuracy_2",
    "accuracy_7",
    "f1",
    "mae",
    "pearson_corr",
    "per_target_corr",
    "per_target_mae",
    "weighted_f1",
]

ArrayLike: TypeAlias = "Tensor | np.ndarray"


def _as_tensor(name: str, arg: str, value: ArrayLike) -> Tensor:
    """``torch.as_tensor`` with its conversion errors (strings, objects, huge Python
    integers) reported as a ValueError naming the metric and the argument."""
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name}: {arg} is not a numeric array ({error})") from error
    if t.is_complex():
        raise ValueError(f"{name}: {arg} must be real, got {t.dtype}")
    return t


def _pair(name: str, y_hat: ArrayLike, y: ArrayLike, ndim: int | None) -> tuple[Tensor, Tensor]:
    """Both inputs as float64 tensors of one shape, checked."""
    a, b = _as_tensor(name, "y_hat", y_hat), _as_tensor(name, "y", y)
    if a.shape != b.shape:
        raise ValueError(
            f"{name}: y_hat and y must have the same shape, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    if ndim is not None and a.ndim != ndim:
        want = "(N,)" if ndim == 1 else "(N, K)"
        raise ValueError(f"{name}: expected inputs of shape {want}, got {tuple(a.shape)}")
    if a.numel() == 0:
        raise ValueError(f"{name}: got empty inputs")
    a, b = a.to(torch.float64), b.to(torch.float64)
    for arg, t in (("y_hat", a), ("y", b)):
        bad = int((~torch.isfinite(t)).sum())
        if bad:
            raise ValueError(f"{name}: {arg} holds {bad} non-finite value(s)")
    return a, b


def mae(y_hat: ArrayLike, y: ArrayLike) -> Tensor:
    """Mean absolute error, ``mean |y_hat - y|`` over all elements.

    Shapes:
        y_hat, y: any shape, the same for both. Output: () float64.
    """
    a, b = _pair("mae", y_hat, y, None)
    return _mae_columns(a.reshape(-1, 1), b.reshape(-1, 1))[0]


def _mae_columns(a: Tensor, b: Tensor) -> Tensor:
    """Mean of ``|a - b|`` down each column, also where finite values near float64's
    limit make a difference or the running sum overflow (inf only if the mean does)."""
    out = (a - b).abs().mean(0)
    if bool(out.isinf().any()):
        half = (a / 2 - b / 2).abs()
        peak = half.amax(0).clamp_min(torch.finfo(half.dtype).tiny)
        out = torch.where(out.isinf(), (half / peak).mean(0) * peak * 2, out)
    return out


def _unit_centred(x: Tensor) -> Tensor:
    """Each column divided by its largest magnitude, then centred.

    The correlation does not depend on the scale, and after the division the sums of
    squares can neither overflow (data near 1e200) nor underflow (near 1e-200). A
    constant column becomes exactly 0, so its correlation is 0/0 = NaN.
    """
    x = x / x.abs().amax(0).clamp_min(torch.finfo(x.dtype).tiny)
    return x - x.mean(0)


def _corr_columns(a: Tensor, b: Tensor) -> Tensor:
    a, b = _unit_centred(a), _unit_centred(b)
    return (a * b).sum(0) / ((a * a).sum(0).sqrt() * (b * b).sum(0).sqrt())


def pearson_corr(y_hat: ArrayLike, y: ArrayLike) -> Tensor:
    """Pearson correlation ``cov(y_hat, y) / (std(y_hat) std(y))``.

    NaN when either input is constant (zero variance), as ``numpy.corrcoef``. For
    multi-target labels use :func:`per_target_corr`.

    Shapes:
        y_hat, y: (N,). Output: () float64.
    """
    a, b = _pair("pearson_corr", y_hat, y, 1)
    return _corr_columns(a, b)


def per_target_mae(y_hat: ArrayLike, y: ArrayLike) -> Tensor:
    """Mean absolute error of each target (column) of a multi-target regression.

    Shapes:
        y_hat, y: (N, K). Output: (K,) float64; ``.mean()`` is the usual summary.
    """
    a, b = _pair("per_target_mae", y_hat, y, 2)
    return _mae_columns(a, b)


def per_target_corr(y_hat: ArrayLike, y: ArrayLike) -> Tensor:
    """Pearson correlation of each target (column) of a multi-target regression.

    A constant column gives NaN for that target.

    Shapes:
        y_hat, y: (N, K). Output: (K,) float64; ``.mean()`` is the usual summary.
    """
    a, b = _pair("per_target_corr", y_hat, y, 2)
    return _corr_columns(a, b)


def _binarize(
    name: str, y_hat: ArrayLike, y: ArrayLike, exclude_zero: bool, threshold: float
) -> tuple[Tensor, Tensor]:
    if not isinstance(exclude_zero, bool | np.bool_):
        raise ValueError(f"{name}: exclude_zero must be True or False, got {exclude_zero!r}")
    if not _is_real(threshold) or not math.isfinite(threshold):
        raise ValueError(f"{name}: threshold must be a finite real number, got {threshold!r}")
    a, b = _pair(name, y_hat, y, 1)
    if not exclude_zero:
        return (a >= threshold).long(), (b >= threshold).long()
    keep = b != threshold
    if not bool(keep.any()):
        raise ValueError(f"{name}: exclude_zero=True but every label equals {threshold}")
    return (a[keep] > threshold).long(), (b[keep] > threshold).long()


def accuracy_2(
    y_hat: ArrayLike, y: ArrayLike, *, exclude_zero: bool, threshold: float = 0.0
) -> Tensor:
    """Binary accuracy of sentiment scores (Acc-2).

    Args:
        y_hat: Predicted scores.
        y: True scores.
        exclude_zero: False: negative (``< threshold``) vs non-negative, all samples.
            True: drop samples whose label equals ``threshold``, then negative vs
            positive (``> threshold``), the MulT/MISA convention.
        threshold: Class boundary (0 for MOSI/MOSEI; 3.5 for ICT-MMMO).

    Shapes:
        y_hat, y: (N,). Output: () float64 in [0, 1].
    """
    pred, true = _binarize("accuracy_2", y_hat, y, exclude_zero, threshold)
    return (pred == true).to(torch.float64).mean()


def weighted_f1(
    y_hat: ArrayLike, y: ArrayLike, *, exclude_zero: bool, threshold: float = 0.0
) -> Tensor:
    """Support-weighted F1 of sentiment scores binarized as in :func:`accuracy_2`.

    This is the "F1" reported next to Acc-2 in MFN, MFM, MulT and MISA
    (``f1_score(..., average="weighted")`` on the binarized labels).

    Shapes:
        y_hat, y: (N,). Output: () float64 in [0, 1].
    """
    pred, true = _binarize("weighted_f1", y_hat, y, exclude_zero, threshold)
    return _f1_from_labels(pred, true, 2, "weighted")


def accuracy_7(y_hat: ArrayLike, y: ArrayLike) -> Tensor:
    """Seven-class accuracy (Acc-7) of sentiment scores in [-3, 3].

    Both inputs are clipped to [-3, 3] and rounded (half to even), then compared.

    Shapes:
        y_hat, y: (N,). Output: () float64 in [0, 1].
    """
    a, b = _pair("accuracy_7", y_hat, y, 1)
    pred, true = a.clamp(-3.0, 3.0).round(), b.clamp(-3.0, 3.0).round()
    return (pred == true).to(torch.float64).mean()


def _is_real(value: Any) -> bool:
    """A real number (Python or numpy scalar), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def _labels(name: str, y_hat: ArrayLike, y: ArrayLike) -> tuple[Tensor, Tensor]:
    a, b = _as_tensor(name, "y_hat", y_hat), _as_tensor(name, "y", y)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"{name}: expected two label vectors of shape (N,), got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    if a.numel() == 0:
        raise ValueError(f"{name}: got empty inputs")
    for arg, t in (("y_hat", a), ("y", b)):
        if t.is_floating_point():
            raise ValueError(f"{name}: {arg} must hold integer class labels, got {t.dtype}")
    a, b = a.long(), b.long()
    if bool((a < 0).any() or (b < 0).any()):
        raise ValueError(f"{name}: class labels must be non-negative")
    return a, b


def accuracy(y_hat: ArrayLike, y: ArrayLike) -> Tensor:
    """Fraction of predicted class labels equal to the true ones.

    Shapes:
        y_hat, y: (N,) integer labels. Output: () float64 in [0, 1].
    """
    pred, true = _labels("accuracy", y_hat, y)
    return (pred == true).to(torch.float64).mean()


def _f1_from_labels(pred: Tensor, true: Tensor, num_classes: int, average: str) -> Tensor:
    support = torch.bincount(true, minlength=num_classes).to(torch.float64)
    predicted = torch.bincount(pred, minlength=num_classes).to(torch.float64)
    hits = torch.bincount(true[pred == true], minlength=num_classes).to(torch.float64)
    seen = (support + predicted) > 0
    per_class = torch.where(seen, 2 * hits / (support + predicted).clamp_min(1), 0.0)
    if average == "weighted":
        return (per_class * support).sum() / support.sum()
    return per_class.sum() / seen.sum()


def f1(
    y_hat: ArrayLike,
    y: ArrayLike,
    *,
    num_classes: int | None = None,
    average: Literal["weighted", "macro"] = "weighted",
) -> Tensor:
    """Multiclass F1 of class labels.

    Per class, F1 = 2 TP / (2 TP + FP + FN) (0 when the class has no hit).
    ``"weighted"`` averages with weights equal to the class support (the number of true
    samples of the class), as scikit-learn's ``average="weighted"``; ``"macro"`` averages
    uniformly over the classes present in ``y`` or ``y_hat``, as scikit-learn does.
    Classes absent from both inputs change neither average, so only the label values
    present are counted: memory grows with N, not with the largest label.

    Args:
        y_hat: Predicted labels, non-negative integers (below ``num_classes`` if given).
        y: True labels, likewise.
        num_classes: Number of classes, only to check the labels; None: any label value.
        average: ``"weighted"`` or ``"macro"``.

    Shapes:
        y_hat, y: (N,) integer labels. Output: () float64 in [0, 1].
    """
    if average not in ("weighted", "macro"):
        raise ValueError(f"f1: average must be 'weighted' or 'macro', got {average!r}")
    if num_classes is not None and (
        not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1
    ):
        raise ValueError(f"f1: num_classes must be a positive int or None, got {num_classes!r}")
    pred, true = _labels("f1", y_hat, y)
    largest = int(torch.maximum(pred.max(), true.max()))
    if num_classes is not None and largest >= num_classes:
        raise ValueError(f"f1: label {largest} is out of range for num_classes={num_classes}")
    classes, index = torch.unique(torch.cat([pred, true]), return_inverse=True)
    n = pred.shape[0]
    return _f1_from_labels(index[:n], index[n:], classes.shape[0], average)
