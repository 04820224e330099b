"""The baselines: logistic regression is scikit-learn's solution, tuning picks the
validation argmax, and everything is deterministic given the seed."""

from __future__ import annotations

import functools
import itertools
import math

import pytest
import torch

from examples.baselines import (
    ConcatMLP,
    concatenate,
    fit_logistic_regression,
    grid_configs,
    per_view,
    tune_logistic_regression,
    tune_mlp,
)
from examples.training import Split, accuracy, evaluate
from factorkit.testing import make_synthetic_views

FIT = {"epochs": 6, "patience": 3, "batch_size": 32, "lr": 3e-3}


def splits(n: int = 300, seed: int = 0) -> tuple[Split, Split, Split]:
    data = make_synthetic_views(n, view_sizes={"b": 5, "a": 4}, noise=0.5, seed=seed)
    cut = [0, n // 2, 3 * n // 4, n]
    return tuple(  # type: ignore[return-value]
        Split({m: v[i:j] for m, v in data.views.items()}, data.labels[i:j])
        for i, j in itertools.pairwise(cut)
    )


def test_concatenate_flattens_in_sorted_view_order() -> None:
    views = {"z": torch.arange(4.0).reshape(2, 2), "a": torch.arange(8.0).reshape(2, 1, 2, 2)}
    out = concatenate(views)
    assert torch.equal(out[:, :4], views["a"].reshape(2, 4))
    assert torch.equal(out[:, 4:], views["z"])


def test_logistic_regression_is_sklearns_solution() -> None:
    linear_model = pytest.importorskip("sklearn.linear_model")
    train, _, _ = splits()
    x = concatenate(train.views).double()
    x = (x - x.mean(0)) / x.std(0, unbiased=False)  # StandardScaler
    for c in (0.05, 1.0):
        ours = fit_logistic_regression(train, C=c, tolerance=1e-10)
        ref = linear_model.LogisticRegression(C=c, tol=1e-12, max_iter=10_000)
        ref.fit(x.numpy(), train.labels.numpy())
        torch.testing.assert_close(ours.weight, torch.from_numpy(ref.coef_), atol=2e-6, rtol=0)
        probabilities = torch.softmax(ours.predict(train.views), dim=1)
        expected = torch.from_numpy(ref.predict_proba(x.numpy()))
        torch.testing.assert_close(probabilities, expected, atol=1e-6, rtol=0)


def test_logistic_regression_closed_form_on_two_separable_points() -> None:
    """x = -1 (class 0), x = +1 (class 1): by symmetry W = (-a, a), b = 0, and the
    objective log(1 + exp(-2a)) + a^2 / (2C) is stationary where a = 2C / (1 + exp(2a))."""
    views = {"v": torch.tensor([[-1.0], [1.0]])}
    previous = None
    for c in (10.0, 0.1, 1.0):
        low, high = 0.0, 2 * c  # the root lies in (0, 2C): the right side is below 2C
        for _ in range(100):
            mid = (low + high) / 2
            low, high = (mid, high) if mid < 2 * c / (1 + math.exp(2 * mid)) else (low, mid)
        model = fit_logistic_regression(Split(views, torch.tensor([0, 1])), C=c, tolerance=1e-12)
        expected = torch.tensor([[-low], [low]], dtype=torch.float64)
        torch.testing.assert_close(model.weight, expected, atol=1e-8, rtol=0)
        torch.testing.assert_close(
            model.bias, torch.zeros(2, dtype=torch.float64), atol=1e-8, rtol=0
        )
        # A warm start from another C's solution reaches the same minimiser.
        warm = fit_logistic_regression(
            Split(views, torch.tensor([0, 1])), C=c, tolerance=1e-12, start=previous
        )
        torch.testing.assert_close(warm.weight, expected, atol=1e-8, rtol=0)
        previous = model


def test_logistic_regression_tuning_keeps_the_validation_argmax() -> None:
    train, validation, _ = splits()
    grid = (1e-4, 1e-2, 1.0, 100.0)
    tuned = tune_logistic_regression(train, validation, grid=grid)
    assert [s["C"] for s in tuned.scores] == list(grid)
    best = max(tuned.scores, key=lambda s: (s["val_accuracy"], -s["val_loss"]))
    assert tuned.config == {"C": best["C"]}
    assert evaluate(tuned.model.predict, validation) == (best["val_accuracy"], best["val_loss"])
    # The strongest penalty cannot fit these classes: the choice is not the first entry.
    assert tuned.scores[0]["val_accuracy"] < best["val_accuracy"]


def test_mlp_tuning_keeps_the_validation_argmax_and_is_deterministic() -> None:
    train, validation, _ = splits()
    grid = {"width": (4, 64), "dropout": (0.0,), "weight_decay": (1e-4, 1e-1)}
    tuned = tune_mlp(train, validation, seed=3, grid=grid, **FIT)
    assert [{k: s[k] for k in grid} for s in tuned.scores] == grid_configs(grid)
    best = max(tuned.scores, key=lambda s: (s["val_accuracy"], -s["val_loss"]))
    assert tuned.config == {k: best[k] for k in grid}
    assert isinstance(tuned.model, ConcatMLP)
    assert not tuned.model.training
    # The kept weights are those of the recorded validation score.
    val_accuracy, val_loss = evaluate(tuned.model.predict, validation)
    assert val_accuracy == best["val_accuracy"]
    assert val_loss == pytest.approx(best["val_loss"], rel=1e-6)
    again = tune_mlp(train, validation, seed=3, grid=grid, **FIT)
    assert again.scores == tuned.scores
    for (name, a), b in zip(
        tuned.model.state_dict().items(), again.model.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name
    other = tune_mlp(train, validation, seed=4, grid={k: v[:1] for k, v in grid.items()}, **FIT)
    assert not torch.equal(other.model.net[0].weight, again.model.net[0].weight)


def test_per_view_fits_each_view_alone() -> None:
    train, validation, test = splits()
    out = per_view(tune_logistic_regression, train, validation, test)
    assert list(out) == ["a", "b"]
    alone = Split({"b": train.views["b"]}, train.labels)
    model = tune_logistic_regression(alone, Split({"b": validation.views["b"]}, validation.labels))
    assert out["b"] == accuracy(model.model.predict, Split({"b": test.views["b"]}, test.labels))
    mlp = functools.partial(
        tune_mlp, seed=0, grid={"width": (8,), "dropout": (0.0,), "weight_decay": (0.0,)}, **FIT
    )
    assert set(per_view(mlp, train, validation, test)) == {"a", "b"}


def test_baselines_name_absent_views_and_wrong_shapes() -> None:
    train, _, _ = splits()
    model = fit_logistic_regression(train)
    present = {
        "a": torch.ones(len(train), dtype=torch.bool),
        "b": torch.zeros(len(train), dtype=torch.bool),
    }
    with pytest.raises(ValueError, match="view 'b' is absent"):
        model.predict(train.views, present)
    with pytest.raises(
        ValueError, match=r"expected 9 concatenated features, got 4 .*'a': \(150, 4\)"
    ):
        model.predict({"a": train.views["a"]})
