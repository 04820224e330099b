"""Tests for factorkit.metrics against naive float64 numpy references (and sklearn)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from factorkit.metrics import (
    accuracy,
    accuracy_2,
    accuracy_7,
    f1,
    mae,
    pearson_corr,
    per_target_corr,
    per_target_mae,
    weighted_f1,
)


@pytest.fixture
def scores() -> tuple[np.ndarray, np.ndarray]:
    """Sentiment-like scores in [-3, 3] with exact zeros and exact halves in the labels."""
    rng = np.random.default_rng(0)
    y = np.round(rng.uniform(-3.4, 3.4, 200) * 2) / 2
    y[:20] = 0.0
    y_hat = y + rng.normal(0, 1.0, 200)
    y_hat[20:25] = 0.0
    return y_hat, y


def _scalar(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def _naive_weighted_f1(pred: np.ndarray, true: np.ndarray) -> float:
    total = 0.0
    for c in np.unique(np.concatenate([pred, true])):
        tp = np.sum((pred == c) & (true == c))
        fp = np.sum((pred == c) & (true != c))
        fn = np.sum((pred != c) & (true == c))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        score = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        total += score * np.sum(true == c)
    return total / len(true)


def test_mae_and_corr_match_numpy(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y_hat, y = scores
    assert_close(mae(y_hat, y), _scalar(np.mean(np.abs(y_hat - y))))
    assert_close(pearson_corr(y_hat, y), _scalar(np.corrcoef(y_hat, y)[0, 1]))
    # torch float32 tensors give the same float64 result as their float64 values.
    t_hat, t = torch.from_numpy(y_hat).float(), torch.from_numpy(y).float()
    expected = np.corrcoef(t_hat.double().numpy(), t.double().numpy())[0, 1]
    assert_close(pearson_corr(t_hat, t), _scalar(expected))


def test_corr_closed_forms() -> None:
    y = torch.tensor([1.0, 2.0, 4.0, 8.0])
    assert_close(pearson_corr(3 * y + 1, y), _scalar(1.0))
    assert_close(pearson_corr(-y, y), _scalar(-1.0))
    assert torch.isnan(pearson_corr(torch.ones(4), y))


def test_per_target_metrics_match_numpy() -> None:
    rng = np.random.default_rng(1)
    y = rng.uniform(1, 7, (60, 17))
    y_hat = y + rng.normal(0, 1, (60, 17))
    expected_mae = np.abs(y_hat - y).mean(0)
    expected_corr = np.array([np.corrcoef(y_hat[:, k], y[:, k])[0, 1] for k in range(17)])
    got_mae, got_corr = per_target_mae(y_hat, y), per_target_corr(y_hat, y)
    assert got_mae.shape == got_corr.shape == (17,)
    assert_close(got_mae, torch.from_numpy(expected_mae))
    assert_close(got_corr, torch.from_numpy(expected_corr))
    assert_close(mae(y_hat, y), got_mae.mean())


def test_accuracy_2_both_conventions(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y_hat, y = scores
    non_negative = np.mean((y_hat >= 0) == (y >= 0))
    keep = y != 0
    non_zero = np.mean((y_hat[keep] > 0) == (y[keep] > 0))
    assert_close(accuracy_2(y_hat, y, exclude_zero=False), _scalar(non_negative))
    assert_close(accuracy_2(y_hat, y, exclude_zero=True), _scalar(non_zero))
    assert non_negative != non_zero  # the fixture tells the two conventions apart


def test_accuracy_2_conventions_on_hand_examples() -> None:
    y = torch.tensor([-1.0, 0.0, 0.0, 2.0])
    y_hat = torch.tensor([-0.5, 0.0, -0.1, 0.0])
    # Non-negative: 0 counts as positive; the pred 0.0 for label 2 is right.
    assert_close(accuracy_2(y_hat, y, exclude_zero=False), _scalar(3 / 4))
    # Excluding zeros: two samples left; a pred exactly 0 counts as negative.
    assert_close(accuracy_2(y_hat, y, exclude_zero=True), _scalar(1 / 2))
    # ICT-MMMO style threshold on 1..5 labels.
    mmmo = torch.tensor([1.0, 4.0, 5.0, 3.0])
    assert_close(
        accuracy_2(torch.tensor([3.6, 3.9, 4.2, 3.4]), mmmo, exclude_zero=False, threshold=3.5),
        _scalar(3 / 4),
    )


def test_weighted_f1_matches_naive_reference(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y_hat, y = scores
    for exclude_zero in (False, True):
        keep = y != 0 if exclude_zero else np.ones_like(y, dtype=bool)
        pred = y_hat[keep] > 0 if exclude_zero else y_hat >= 0
        true = y[keep] > 0 if exclude_zero else y >= 0
        expected = _naive_weighted_f1(pred.astype(int), true.astype(int))
        assert_close(weighted_f1(y_hat, y, exclude_zero=exclude_zero), _scalar(expected))


def test_accuracy_7_clips_then_rounds_half_to_even(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y_hat, y = scores
    expected = np.mean(np.round(np.clip(y_hat, -3, 3)) == np.round(np.clip(y, -3, 3)))
    assert_close(accuracy_7(y_hat, y), _scalar(expected))
    y_hand = torch.tensor([2.5, -3.0, 3.0, 0.5])
    # 2.5 -> 2, 5.0 -> 3, -9 -> -3, 0.5 -> 0, -0.4 -> 0
    pred = torch.tensor([2.0, -9.0, 5.0, -0.4])
    assert_close(accuracy_7(pred, y_hand), _scalar(1.0))


def _labels() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    true = rng.integers(0, 4, 150)
    pred = np.where(rng.random(150) < 0.6, true, rng.integers(0, 5, 150))  # class 4: no support
    return pred, true


def test_f1_and_accuracy_on_labels_match_naive_reference() -> None:
    pred, true = _labels()
    assert_close(f1(pred, true), _scalar(_naive_weighted_f1(pred, true)))
    assert_close(f1(torch.from_numpy(pred), torch.from_numpy(true), num_classes=6), f1(pred, true))
    assert_close(accuracy(pred, true), _scalar(np.mean(pred == true)))


def test_f1_agrees_with_sklearn(scores: tuple[np.ndarray, np.ndarray]) -> None:
    metrics = pytest.importorskip(
        "sklearn.metrics", reason="needs scikit-learn: pip install -e '.[examples]'"
    )
    pred, true = _labels()
    for average in ("weighted", "macro"):
        expected = metrics.f1_score(true, pred, average=average, zero_division=0)
        assert_close(f1(pred, true, average=average), _scalar(expected))  # type: ignore[arg-type]
    y_hat, y = scores
    keep = y != 0
    expected = metrics.f1_score(y[keep] > 0, y_hat[keep] > 0, average="weighted")
    assert_close(weighted_f1(y_hat, y, exclude_zero=True), _scalar(expected))
    expected = metrics.f1_score(y >= 0, y_hat >= 0, average="weighted")
    assert_close(weighted_f1(y_hat, y, exclude_zero=False), _scalar(expected))


def test_metrics_reject_bad_inputs() -> None:
    y = torch.zeros(4)
    with pytest.raises(ValueError, match=r"same shape, got \(4,\) and \(4, 1\)"):
        mae(y, y[:, None])
    with pytest.raises(ValueError, match=r"expected inputs of shape \(N,\)"):
        pearson_corr(y[:, None], y[:, None])
    with pytest.raises(ValueError, match=r"expected inputs of shape \(N, K\)"):
        per_target_corr(y, y)
    with pytest.raises(ValueError, match="y_hat holds 1 non-finite"):
        mae(torch.tensor([0.0, float("nan"), 1.0, 2.0]), y)
    with pytest.raises(ValueError, match="every label equals 0"):
        accuracy_2(y, y, exclude_zero=True)
    with pytest.raises(ValueError, match="integer class labels"):
        f1(y, y)
    with pytest.raises(ValueError, match="label 3 is out of range for num_classes=3"):
        f1(torch.tensor([0, 3]), torch.tensor([0, 1]), num_classes=3)
    with pytest.raises(ValueError, match="empty"):
        accuracy(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))


LONG = (torch.zeros(4, 2, dtype=torch.long), torch.zeros(4, 2, dtype=torch.long))
MATRIX, VECTOR, SHORT = torch.zeros(4, 2), torch.zeros(4), torch.zeros(3)
SHAPE_ERRORS: list[tuple[str, Callable[[], object]]] = [
    ("per_target_mae", lambda: per_target_mae(VECTOR, VECTOR)),
    ("per_target_corr", lambda: per_target_corr(VECTOR, VECTOR)),
    ("accuracy_7", lambda: accuracy_7(MATRIX, MATRIX)),
    ("accuracy_2", lambda: accuracy_2(MATRIX, MATRIX, exclude_zero=False)),
    ("weighted_f1", lambda: weighted_f1(SHORT, VECTOR, exclude_zero=True)),
    ("accuracy", lambda: accuracy(*LONG)),
    ("f1", lambda: f1(*LONG)),
    ("mae", lambda: mae(SHORT, VECTOR)),
    ("pearson_corr", lambda: pearson_corr(SHORT, VECTOR)),
]


@pytest.mark.parametrize(("name", "call"), SHAPE_ERRORS, ids=[n for n, _ in SHAPE_ERRORS])
def test_shape_errors_name_the_metric(name: str, call: Callable[[], object]) -> None:
    """Each metric checks the rank it needs and names itself in the message."""
    with pytest.raises(ValueError, match=rf"^{name}: "):
        call()


def exact_mae(a: list[float], b: list[float]) -> float:
    """Mean |a - b| in exact rational arithmetic, rounded once to float64."""
    from fractions import Fraction

    return float(sum(abs(Fraction(x) - Fraction(y)) for x, y in zip(a, b, strict=True)) / len(a))


def test_mae_near_the_float64_limit_is_the_exact_mean() -> None:
    def f64(values: object) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64)

    # The differences overflow (3e308 > max), their mean (1e308) does not.
    a, b = [1.5e308, 0.0, 0.0], [-1.5e308, 0.0, 0.0]
    assert float(mae(f64(a), f64(b))) == exact_mae(a, b) == 1e308
    cols = per_target_mae(
        f64([[1.5e308, 1.0], [0.0, -2.0], [0.0, 4.0]]),
        f64([[-1.5e308, 0.0], [0.0, 0.0], [0.0, 0.0]]),
    )
    assert cols.tolist() == [1e308, exact_mae([1.0, -2.0, 4.0], [0.0] * 3)]
    # A mean that really overflows stays inf.
    assert float(mae(f64([1.5e308, 1.5e308]), f64([-1.5e308] * 2))) == math.inf
    # One element is a valid input.
    assert float(mae(f64([2.0]), f64([5.5]))) == 3.5


def test_correlation_is_scale_free_per_column_at_extreme_scales() -> None:
    gen = np.random.default_rng(0)
    x, y = gen.normal(size=(50, 2)), gen.normal(size=(50, 2))
    y[:, 0] += x[:, 0]
    expected = [np.corrcoef(x[:, k], y[:, k])[0, 1] for k in range(2)]
    scale = np.array([1e200, 1e-200])
    got = per_target_corr(torch.from_numpy(x * scale), torch.from_numpy(y * scale[::-1]))
    assert_close(got, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)
    for k in range(2):
        single = pearson_corr(torch.from_numpy(x[:, k] * 1e200), torch.from_numpy(y[:, k] * 1e-200))
        assert float(single) == pytest.approx(expected[k], rel=1e-12)


def exact_f1(pred: list[int], true: list[int], average: str) -> float:
    """F1 from the definition 2 TP / (2 TP + FP + FN), in rationals."""
    from fractions import Fraction

    classes = sorted(set(pred) | set(true))
    scores, weights = [], []
    for c in classes:
        tp = sum(p == t == c for p, t in zip(pred, true, strict=True))
        fp = sum(p == c != t for p, t in zip(pred, true, strict=True))
        fn = sum(t == c != p for p, t in zip(pred, true, strict=True))
        scores.append(Fraction(2 * tp, 2 * tp + fp + fn))
        weights.append(true.count(c))
    if average == "macro":
        return float(sum(scores) / len(scores))
    return float(sum(s * w for s, w in zip(scores, weights, strict=True)) / sum(weights))


@pytest.mark.parametrize("average", ["weighted", "macro"])
def test_f1_when_the_largest_class_is_never_predicted_or_never_true(average: str) -> None:
    cases = [
        ([0, 0, 1, 1, 0, 1, 1], [0, 1, 2, 1, 0, 2, 1]),  # class 2 never predicted
        ([0, 5, 1, 5, 0, 1, 1], [0, 1, 1, 1, 0, 0, 1]),  # class 5 never true
        ([3, 3, 3], [3, 3, 3]),
    ]
    for pred, true in cases:
        got = float(f1(torch.tensor(pred), torch.tensor(true), average=average))  # type: ignore[arg-type]
        assert got == pytest.approx(exact_f1(pred, true, average), rel=1e-15)


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), True, "0"])
def test_binary_metrics_refuse_a_threshold_that_is_not_a_finite_real(threshold: object) -> None:
    y = torch.tensor([-1.0, 1.0])
    for metric, name in ((accuracy_2, "accuracy_2"), (weighted_f1, "weighted_f1")):
        with pytest.raises(ValueError, match=rf"^{name}: threshold must be a finite real number"):
            metric(y, y, exclude_zero=False, threshold=threshold)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=rf"^{name}: exclude_zero must be True or False"):
            metric(y, y, exclude_zero=1)  # type: ignore[arg-type]


def test_input_errors_name_the_argument() -> None:
    ok, ints = torch.zeros(3), torch.zeros(3, dtype=torch.long)
    nan = torch.tensor([0.0, float("nan"), 0.0])
    with pytest.raises(ValueError, match=r"^mae: y holds 1 non-finite value\(s\)"):
        mae(ok, nan)
    with pytest.raises(ValueError, match=r"^pearson_corr: y_hat holds 1 non-finite"):
        pearson_corr(nan, ok)
    with pytest.raises(ValueError, match=r"^mae: y_hat is not a numeric array"):
        mae(np.array(["a", "b", "c"], dtype=object), ok)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^mae: y is not a numeric array"):
        mae(ok, np.array(["a", "b", "c"], dtype=object))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^mae: y must be real, got torch.complex64"):
        mae(ok, torch.zeros(3, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"^accuracy: y_hat is not a numeric array"):
        accuracy(np.array(["a", "b", "c"], dtype=object), ints)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^accuracy: y must hold integer class labels"):
        accuracy(ints, ok)
    with pytest.raises(ValueError, match=r"^accuracy: y_hat must hold integer class labels"):
        accuracy(ok, ints)
    with pytest.raises(ValueError, match=r"^f1: class labels must be non-negative"):
        f1(torch.tensor([0, -1, 0]), ints)
    with pytest.raises(ValueError, match=r"^accuracy: class labels must be non-negative"):
        accuracy(ints, torch.tensor([0, -1, 0]))
    with pytest.raises(
        ValueError,
        match=r"^accuracy: expected two label vectors of shape \(N,\), got \(3,\) and \(2,\)",
    ):
        accuracy(ints, ints[:2])
    with pytest.raises(ValueError, match=r"^accuracy_7: got empty inputs"):
        accuracy_7(torch.zeros(0), torch.zeros(0))
