"""The shared training loop of the examples (examples/training.py): its generic hooks."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor, nn

from examples.training import Split, fit


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
