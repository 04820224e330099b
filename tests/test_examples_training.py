"""The examples' shared training loop (examples/training.py): its generic hooks, the
weights it keeps, and the surrogate's distillation term."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.missing import distillation_loss
from examples.training import FitResult, Split, cross_entropy_loss, fit


@dataclass
class Rows:
    """Training data that is not a Split: fit passes whole batches to the loss."""

    x: Tensor
    labels: Tensor
    present: dict[str, Tensor] | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: Tensor) -> Rows:
        return Rows(self.x[index], self.labels[index])


def rows(n: int = 10) -> Rows:
    gen = torch.Generator().manual_seed(0)
    return Rows(torch.randn(n, 3, generator=gen), torch.arange(n))


@pytest.mark.parametrize(("drop_last", "sizes"), [(True, [4, 4]), (False, [4, 4, 2])])
def test_other_data_goes_to_the_loss_whole_and_drop_last_decides_the_last_batch(
    drop_last: bool, sizes: list[int]
) -> None:
    model = nn.Linear(3, 1)
    seen: list[Tensor] = []

    def loss(net: nn.Module, batch: Rows, present: object) -> dict[str, Tensor]:
        assert net is model and present is None
        seen.append(batch.labels)
        return {"total": net(batch.x).square().mean()}

    fit(
        model, loss, rows(), None, validate=lambda: 0.0, epochs=2, batch_size=4, drop_last=drop_last
    )
    assert [len(b) for b in seen] == sizes * 2
    if not drop_last:  # every sample exactly once per epoch
        for epoch in (seen[:3], seen[3:]):
            assert torch.equal(torch.cat(epoch).sort().values, torch.arange(10))


def test_validate_keeps_the_weights_of_the_lowest_loss_and_stops_on_patience() -> None:
    model = nn.Linear(3, 1)
    script = iter([3.0, 1.0, 2.0, 1.0, 4.0, 0.5])
    snapshots: list[Tensor] = []

    def validate() -> float:
        assert not model.training and not torch.is_grad_enabled()
        snapshots.append(model.weight.detach().clone())
        return next(script)

    def loss(net: nn.Module, batch: Rows, present: object) -> dict[str, Tensor]:
        return {"total": (net(batch.x) - 1.0).square().mean()}

    result = fit(model, loss, rows(), None, validate=validate, epochs=10, patience=3, batch_size=5)
    # Epoch 2 (1.0) is not beaten by the equal epoch 4; patience 3 stops after epoch 5.
    assert result.best_epoch == 2 and result.best_loss == 1.0
    assert [h["val_loss"] for h in result.history] == [3.0, 1.0, 2.0, 1.0, 4.0]
    assert "val_accuracy" not in result.history[0]
    assert math.isnan(result.best_accuracy)
    assert torch.equal(model.weight, snapshots[1])
    assert not torch.equal(snapshots[1], snapshots[-1])


def test_train_presence_reaches_a_whole_batch_loss_and_one_validation_is_required() -> None:
    model = nn.Linear(3, 1)
    masks: list[Tensor] = []

    def loss(net: nn.Module, batch: Rows, present: dict[str, Tensor]) -> dict[str, Tensor]:
        masks.append(present["a"])
        return {"total": net(batch.x).square().mean()}

    def draw(size: int, generator: torch.Generator) -> dict[str, Tensor]:
        return {"a": torch.rand(size, generator=generator) < 0.5}

    fit(
        model, loss, rows(), None, validate=lambda: 0.0, epochs=1, batch_size=5, train_presence=draw
    )
    assert [m.shape for m in masks] == [(5,), (5,)]
    split = Split({"a": torch.zeros(4, 3)}, torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="exactly one of validation and validate"):
        fit(model, loss, rows(), split, validate=lambda: 0.0)
    with pytest.raises(ValueError, match="exactly one of validation and validate"):
        fit(model, loss, rows(), None)


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, views: dict[str, Tensor], present: object = None) -> Tensor:
        out: Tensor = self.linear(views["x"])
        return out

    predict = forward


def scripted_accuracy(direction: int) -> Callable[[dict[str, Tensor], object], Tensor]:
    """A validation "predictor" whose accuracy rises (+1) or falls (-1) at every call."""
    calls = [0]

    def predict(views: dict[str, Tensor], present: object) -> Tensor:
        calls[0] += 1
        n = views["x"].shape[0]
        correct = calls[0] if direction > 0 else n - calls[0]
        logits = torch.zeros(n, 2)
        logits[:correct, 0] = 1.0  # every validation label is 0
        logits[correct:, 1] = 1.0
        return logits

    return predict


def train(
    keep: Literal["best", "last"], direction: int, *, epochs: int = 4, patience: int = 100
) -> tuple[FitResult, dict[str, Tensor]]:
    generator = torch.Generator().manual_seed(0)
    data = Split(
        {"x": torch.randn(32, 3, generator=generator)}, torch.randint(2, (32,), generator=generator)
    )
    validation = Split({"x": torch.zeros(8, 3)}, torch.zeros(8, dtype=torch.long))
    torch.manual_seed(0)
    model = Linear()
    result = fit(
        model, cross_entropy_loss, data, validation, predict=scripted_accuracy(direction),
        epochs=epochs, batch_size=8, lr=0.1, patience=patience, lr_patience=None, keep=keep,
    )  # fmt: skip
    return result, model.state_dict()


def test_keep_last_trains_every_epoch_and_ignores_validation() -> None:
    _, weights_up = train("last", +1)
    last_down, weights_down = train("last", -1, patience=1)
    assert len(last_down.history) == 4 and last_down.best_epoch == 4
    assert all(torch.equal(weights_up[k], weights_down[k]) for k in weights_up)
    # Rising accuracy: the best epoch is the last one, so "best" keeps the same weights.
    best_up, weights_best = train("best", +1)
    assert best_up.best_epoch == 4
    assert all(torch.equal(weights_up[k], weights_best[k]) for k in weights_up)
    # Falling accuracy: "best" goes back to epoch 1, the weights of a 1-epoch run.
    best_down, weights_first = train("best", -1)
    assert best_down.best_epoch == 1
    _, one_epoch = train("last", -1, epochs=1)
    assert all(torch.equal(weights_first[k], one_epoch[k]) for k in one_epoch)
    assert not all(torch.equal(weights_first[k], weights_up[k]) for k in weights_up)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_distillation_loss_is_scaled_kl_with_closed_form_gradient(temperature: float) -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=generator, dtype=torch.float64, requires_grad=True)
    teacher = 3 * torch.randn(5, 4, generator=generator, dtype=torch.float64)
    loss = distillation_loss(logits, teacher, temperature)
    p_t = torch.softmax(teacher / temperature, dim=1)
    p_s = torch.softmax(logits.detach() / temperature, dim=1)
    naive = temperature**2 * (p_t * (p_t.log() - p_s.log())).sum() / 5
    torch.testing.assert_close(loss.double(), naive, rtol=1e-5, atol=1e-7)
    # d/dz of T^2 KL(p_t || softmax(z / T)) is T (p_s - p_t) per sample, then / B.
    (grad,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(grad, temperature * (p_s - p_t) / 5, rtol=1e-5, atol=1e-7)


def test_distillation_loss_is_zero_at_the_teacher_and_shift_invariant() -> None:
    generator = torch.Generator().manual_seed(1)
    teacher = torch.randn(6, 10, generator=generator)
    assert float(distillation_loss(teacher.clone(), teacher)) == pytest.approx(0.0, abs=1e-6)
    logits = torch.randn(6, 10, generator=generator)
    shift = torch.randn(6, 1, generator=generator)
    torch.testing.assert_close(
        distillation_loss(logits + shift, teacher - shift), distillation_loss(logits, teacher)
    )
    assert float(distillation_loss(logits, teacher)) > 0
    # The default temperature is 2: weight 4 on torch's KL of the softened outputs.
    kl = F.kl_div(F.log_softmax(logits / 2, 1), F.softmax(teacher / 2, 1), reduction="batchmean")
    assert float(distillation_loss(logits, teacher)) == pytest.approx(4 * float(kl), rel=1e-5)


def test_a_training_set_smaller_than_one_batch_is_a_clear_error() -> None:
    def loss(net: nn.Module, batch: Rows, present: object) -> dict[str, Tensor]:
        return {"total": net(batch.x).square().mean()}

    with pytest.raises(ValueError, match="3 training samples \\(per rank\\) give no batch of 4"):
        fit(nn.Linear(3, 1), loss, rows(3), None, validate=lambda: 0.0, batch_size=4)
