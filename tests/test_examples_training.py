"""The examples' training loop (weights kept) and the surrogate's distillation term."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.missing import distillation_loss
from examples.training import FitResult, Split, cross_entropy_loss, fit


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
