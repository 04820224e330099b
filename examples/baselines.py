"""Strong baselines for vector views: what a practitioner would try before an MFM.

On the same splits as the MFM, each on the views flattened and concatenated (in sorted
view order) and standardised with the training split's statistics:

- :func:`fit_logistic_regression`: multinomial logistic regression with an L2 penalty
  on the weights (not the biases), solved to convergence by L-BFGS in float64. The
  objective is scikit-learn's ``LogisticRegression(C=C)`` divided by ``C * N``, so the
  solution is the same; :func:`tune_logistic_regression` picks ``C`` on validation.
- :func:`tune_mlp`: a one-hidden-layer MLP (:class:`ConcatMLP`) for every configuration
  of a small grid over width, dropout and weight decay, trained with the examples' loop
  (Adam, early stopping with patience on validation accuracy); the configuration of the
  best validation score is kept.
- :func:`per_view`: either baseline on each view alone, for the one-view rows.

Everything is deterministic given the seed: each model is initialised right after
``torch.manual_seed(seed)``, and L-BFGS starts from zero.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.training import Split, accuracy, cross_entropy_loss, evaluate, fit

__all__ = [
    "LOGISTIC_C_GRID",
    "MLP_GRID",
    "ConcatMLP",
    "LinearClassifier",
    "Tuned",
    "concatenate",
    "fit_logistic_regression",
    "grid_configs",
    "per_view",
    "tune_logistic_regression",
    "tune_mlp",
]

LOGISTIC_C_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
"""Inverse L2 strengths tried by :func:`tune_logistic_regression` (scikit-learn's ``C``)."""

MLP_GRID: dict[str, tuple[Any, ...]] = {
    "width": (128, 512),
    "dropout": (0.2, 0.5),
    "weight_decay": (1e-4, 1e-2),
}
"""The grid of :func:`tune_mlp`: 8 configurations."""

Views = Mapping[str, Tensor]


def concatenate(views: Views) -> Tensor:
    """Every view flattened per sample and concatenated in sorted view order.

    Shapes:
        views[m]: (B, ...). Returns: (B, sum_m D_m) with D_m the product of view m's
        per-sample dimensions.
    """
    return torch.cat([views[m].flatten(1) for m in sorted(views)], dim=1)


def _check_complete(views: Views, present: Mapping[str, Tensor] | None, model: str) -> None:
    if present is None:
        return
    for m in sorted(views):
        if m in present and not bool(present[m].all()):
            raise ValueError(f"{model} needs every view; view {m!r} is absent for some samples")


class _Standardised(nn.Module):
    """Concatenates the views and standardises them with stored training statistics."""

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def features(self, views: Views) -> Tensor:
        x = concatenate(views).to(self.mean.dtype)
        if x.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"expected {self.mean.shape[0]} concatenated features, got {x.shape[1]} "
                f"from views {sorted(views)} with shapes "
                f"{ {m: tuple(v.shape) for m, v in sorted(views.items())} }"
            )
        return (x - self.mean) / self.std


def _statistics(x: Tensor, min_std: float = 1e-6) -> tuple[Tensor, Tensor]:
    return x.mean(0), x.std(0, unbiased=False).clamp_min(min_std)


class LinearClassifier(_Standardised):
    """Logistic regression on the standardised concatenated views.

    Shapes:
        views[m]: (B, ...). Returns: (B, K) logits.
    """

    def __init__(self, mean: Tensor, std: Tensor, weight: Tensor, bias: Tensor) -> None:
        super().__init__(mean, std)
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def predict(self, views: Views, present: Mapping[str, Tensor] | None = None) -> Tensor:
        """Class logits, (B, K); every view must be present."""
        _check_complete(views, present, "logistic regression")
        return self.features(views) @ self.weight.T + self.bias

    forward = predict


def fit_logistic_regression(
    train: Split,
    *,
    C: float = 1.0,  # noqa: N803 (scikit-learn's name)
    max_iter: int = 1000,
    tolerance: float = 1e-6,
    start: LinearClassifier | None = None,
) -> LinearClassifier:
    """Multinomial logistic regression, L2 penalty ``1 / (2 C)`` on the weights.

    Minimises ``mean_i CE(x_i W^T + b, y_i) + ||W||^2 / (2 C N)`` in float64 with
    L-BFGS (strong Wolfe line search) from zero: scikit-learn's objective divided by
    ``C N``, hence its solution.

    Args:
        train: training views and labels (complete).
        C: inverse penalty strength, as in scikit-learn.
        max_iter: L-BFGS iterations.
        tolerance: stop when the gradient's largest entry is below it (scikit-learn's
            ``tol`` on the same objective; its default is 1e-4).
        start: a solution to start from (a warm start, e.g. the solution for a
            neighbouring ``C``); zero by default. The minimiser does not depend on it.

    Shapes:
        train.views[m]: (N, ...). train.labels: (N,).
    """
    _check_complete(train.views, train.present, "logistic regression")
    x = concatenate(train.views).double()
    mean, std = _statistics(x)
    x = (x - mean) / std
    n, classes = x.shape[0], int(train.labels.max()) + 1
    weight = torch.zeros(classes, x.shape[1], dtype=torch.float64, device=x.device)
    bias = torch.zeros(classes, dtype=torch.float64, device=x.device)
    if start is not None:
        weight.copy_(start.weight)
        bias.copy_(start.bias)
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        lr=1.0,
        max_iter=max_iter,
        tolerance_grad=tolerance,
        tolerance_change=0.0,
        history_size=20,
        line_search_fn="strong_wolfe",
    )

    def objective() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(x @ weight.T + bias, train.labels)
        loss = loss + weight.square().sum() / (2 * C * n)
        loss.backward()
        return loss

    optimizer.step(objective)
    model = LinearClassifier(mean, std, weight.detach(), bias.detach())
    return model.requires_grad_(False).eval()


@dataclass
class Tuned:
    """A baseline chosen on validation.

    Attributes:
        model: the chosen model (eval mode); ``model.predict(views, present)`` gives logits.
        config: its configuration.
        scores: every configuration tried, with ``"val_accuracy"`` and ``"val_loss"``
            (cross-entropy), in the order tried.
    """

    model: nn.Module
    config: dict[str, Any]
    scores: list[dict[str, Any]]


def _best(scores: Sequence[Mapping[str, Any]]) -> int:
    """Index of the highest validation accuracy, ties to the lower loss, then the first."""
    keys = [(s["val_accuracy"], -s["val_loss"]) for s in scores]
    return max(range(len(keys)), key=lambda i: (keys[i], -i))


def tune_logistic_regression(
    train: Split, validation: Split, *, grid: Sequence[float] = LOGISTIC_C_GRID, **kwargs: Any
) -> Tuned:
    """:func:`fit_logistic_regression` for each ``C`` of ``grid``; the best on validation.

    Each fit starts from the solution of the previous ``C`` (a regularisation path), which
    cuts the L-BFGS iterations when ``grid`` is sorted.
    """
    models: list[LinearClassifier] = []
    scores = []
    for c in grid:
        start = models[-1] if models else None
        model = fit_logistic_regression(train, C=c, start=start, **kwargs)
        val_accuracy, val_loss = evaluate(model.predict, validation)
        models.append(model)
        scores.append({"C": c, "val_accuracy": val_accuracy, "val_loss": val_loss})
    best = _best(scores)
    return Tuned(models[best], {"C": grid[best]}, scores)


class ConcatMLP(_Standardised):
    """One hidden layer on the standardised concatenated views.

    Linear -> ReLU -> Dropout -> Linear.

    Shapes:
        views[m]: (B, ...). Returns: (B, K) logits.
    """

    def __init__(
        self, mean: Tensor, std: Tensor, num_classes: int, *, width: int, dropout: float
    ) -> None:
        super().__init__(mean, std)
        self.net = nn.Sequential(
            nn.Linear(mean.shape[0], width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, num_classes),
        )

    def predict(self, views: Views, present: Mapping[str, Tensor] | None = None) -> Tensor:
        """Class logits, (B, K); every view must be present."""
        _check_complete(views, present, "the concatenated-view MLP")
        out: Tensor = self.net(self.features(views))
        return out

    forward = predict


def grid_configs(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in row-major order of its keys."""
    keys = list(grid)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*grid.values())]


def tune_mlp(
    train: Split,
    validation: Split,
    *,
    seed: int,
    grid: Mapping[str, Sequence[Any]] = MLP_GRID,
    **fit_kwargs: Any,
) -> Tuned:
    """A :class:`ConcatMLP` per configuration of ``grid``; the best on validation.

    Args:
        train, validation: the splits (complete views).
        seed: seeds every configuration's initialisation and batches alike.
        grid: ``width``, ``dropout`` and ``weight_decay`` values (:data:`MLP_GRID`).
        fit_kwargs: passed to :func:`examples.training.fit` (epochs, patience, lr, ...).
    """
    mean, std = _statistics(concatenate(train.views).float())
    classes = int(train.labels.max()) + 1
    models, scores = [], []
    for config in grid_configs(grid):
        torch.manual_seed(seed)
        model = ConcatMLP(mean, std, classes, width=config["width"], dropout=config["dropout"]).to(
            train.labels.device
        )
        kwargs = {**fit_kwargs, "weight_decay": config["weight_decay"], "seed": seed}
        kwargs.setdefault("description", f"MLP {config}")
        result = fit(model, cross_entropy_loss, train, validation, **kwargs)
        models.append(model)
        scores.append(
            {**config, "val_accuracy": result.best_accuracy, "val_loss": result.best_loss}
        )
    best = _best(scores)
    return Tuned(models[best], grid_configs(grid)[best], scores)


def per_view(
    tune: Callable[[Split, Split], Tuned], train: Split, validation: Split, test: Split
) -> dict[str, float]:
    """Test accuracy of ``tune(train, validation)``'s model on each view alone.

    Shapes:
        split.views[m]: (N, ...). Returns: view name -> accuracy.
    """
    out = {}
    for m in sorted(train.views):
        alone = [Split({m: s.views[m]}, s.labels) for s in (train, validation, test)]
        out[m] = accuracy(tune(alone[0], alone[1]).model.predict, alone[2])  # type: ignore[operator]
    return out
