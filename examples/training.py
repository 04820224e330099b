"""A small, generic training loop for the examples: mini-batches on one device, Adam,
validation-based best checkpoint and early stopping, optional bf16 autocast and
torch.compile.

The whole dataset lives on the device as tensors (the example datasets are small), so a
mini-batch is an index into it: no DataLoader workers, no host-device copies per step.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from examples.cli import UsageError

__all__ = ["FitResult", "Split", "accuracy", "autocast", "evaluate", "fit", "resolve_device"]

Views = dict[str, Tensor]
Presence = dict[str, Tensor] | None
LossFn = Callable[[nn.Module, Views, Tensor, Presence], dict[str, Tensor]]
BatchLossFn = Callable[[nn.Module, Any, Presence], dict[str, Tensor]]
PredictFn = Callable[[Views, Presence], Tensor]


class Samples(Protocol):
    """Training data :func:`fit` can batch: a :class:`Split`, or any type with these."""

    @property
    def labels(self) -> Tensor: ...

    @property
    def present(self) -> Mapping[str, Tensor] | None: ...

    def __len__(self) -> int: ...

    def take(self, index: Tensor) -> Samples: ...


@dataclass
class Split:
    """Views, labels and an optional presence mask of one data split (on the device)."""

    views: Views
    labels: Tensor
    present: Presence = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: Tensor) -> Split:
        """The samples at ``index``."""
        present = None if self.present is None else {m: p[index] for m, p in self.present.items()}
        return Split({m: v[index] for m, v in self.views.items()}, self.labels[index], present)


@dataclass
class FitResult:
    """Outcome of :func:`fit`.

    Attributes:
        best_epoch: epoch (1-based) whose weights are loaded: the best validation
            score, or the last epoch with ``keep="last"``.
        best_accuracy: validation accuracy at that epoch (NaN with ``validate``).
        best_loss: validation loss at that epoch (cross-entropy, or ``validate``'s).
        history: one dict per epoch: the mean of every loss term over the epoch's
            batches, and ``"val_accuracy"`` (``"val_loss"`` with ``validate``).
        seconds: wall time of the training.
        step_seconds: mean wall time of one optimisation step.
    """

    best_epoch: int
    best_accuracy: float
    best_loss: float = math.inf
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    step_seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU.

    Raises:
        examples.cli.UsageError: ``"cuda"`` without CUDA (the examples report it in one
            line, exit status 2).
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("argument --device: cuda was requested but CUDA is not available")
    return torch.device(name)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; a disabled context elsewhere (CPU runs stay in float32)."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(predict: PredictFn, split: Split, *, batch_size: int = 1024) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``predict(views, present)`` logits on ``split``."""
    correct, loss = 0, 0.0
    for start in range(0, len(split), batch_size):
        part = split.take(torch.arange(start, min(start + batch_size, len(split))))
        logits = predict(part.views, part.present).float()
        correct += int((logits.argmax(1) == part.labels).sum())
        loss += float(F.cross_entropy(logits, part.labels, reduction="sum"))
    return correct / len(split), loss / len(split)


def accuracy(predict: PredictFn, split: Split) -> float:
    """Classification accuracy of ``predict(views, present)`` logits on ``split``."""
    return evaluate(predict, split)[0]


def fit(
    model: nn.Module,
    loss_fn: LossFn | BatchLossFn,
    train: Samples,
    validation: Split | None,
    *,
    predict: PredictFn | None = None,
    validate: Callable[[], Tensor | float] | None = None,
    epochs: int = 60,
    batch_size: int = 64,
    lr: float = 1e-3,
    weight_decay: float = 1e-2,
    patience: int = 15,
    lr_patience: int | None = 5,
    seed: int = 0,
    compile: bool = False,
    drop_last: bool = True,
    train_presence: Callable[[int, torch.Generator], Presence] | None = None,
    progress: Callable[[Any], Any] | None = None,
    description: str = "",
    distributed: bool = False,
    keep: Literal["best", "last"] = "best",
) -> FitResult:
    """Train ``model`` with Adam; keep the weights of the best validation epoch.

    Args:
        model: the network; its parameters are optimised.
        loss_fn: ``(model, views, labels, present) -> {"total": ..., term: ...}`` for a
            :class:`Split`; for other training data, ``(model, batch, present)`` with
            ``batch = train.take(index)``.
        train: training data (a :class:`Split` or any :class:`Samples`); batches are
            drawn from it without replacement.
        validation: validation split; selects the best epoch and stops early. ``None``
            with ``validate``.
        predict: ``(views, present) -> logits`` for validation accuracy
            (default ``model.predict``).
        validate: instead of ``validation``, a validation loss (lower is better),
            called in eval mode without gradients under the training autocast; the best
            epoch is the one of the lowest value.
        epochs: maximum number of epochs.
        batch_size: samples per step.
        lr: Adam learning rate (the MFM reference uses 1e-3).
        weight_decay: decoupled weight decay (AdamW).
        patience: stop after this many epochs without a better validation score
            (accuracy, ties broken by the lower cross-entropy).
        lr_patience: halve the learning rate after this many epochs without a lower
            validation loss (``ReduceLROnPlateau``, as in the MFM reference); ``None``
            keeps it constant.
        seed: seeds the batch order (and the model's dropout through the global RNG).
        compile: run ``loss_fn`` under ``torch.compile`` (static shapes: with
            ``drop_last=False`` the smaller last batch gets its own graph).
        drop_last: drop each epoch's last incomplete batch (default) or train on it.
        train_presence: optional ``(batch_size, generator) -> presence`` drawing a fresh
            per-sample mask for each batch (training on incomplete data).
        progress: a tqdm-like factory wrapping the epoch range, or ``None``.
        description: label for the progress bar.
        distributed: train with DistributedDataParallel in an initialised process
            group of W ranks. The loss sees the DDP-wrapped model, so gradients are
            averaged over the ranks and the replicas stay bitwise equal. Each epoch a
            ``DistributedSampler`` shuffle gives every rank its own equal share of the
            training set, and every rank takes ``batch_size // W`` samples per step
            (the global batch stays ``batch_size``, which W must divide), so all ranks
            run the same number of steps. ``train_presence`` is drawn for the global
            batch (the same on every rank) and each rank keeps the rows of its samples.
            The global RNG (dropout) is seeded with ``seed + rank``. Validation runs on
            every rank and its numbers, like the history's loss terms, are averaged over
            the ranks, so every rank takes the same early-stopping and learning-rate
            decisions.
        keep: ``"best"`` keeps the weights of the best validation epoch and stops
            early after ``patience``; ``"last"`` trains all ``epochs`` and keeps the
            final weights (validation still drives the learning-rate schedule).

    Returns:
        A :class:`FitResult`; the model holds the kept weights.
    """
    if (validation is None) == (validate is None):
        raise ValueError("give exactly one of validation and validate")
    device = train.labels.device
    rank, world = 0, 1
    if distributed:
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError(
                "fit(distributed=True) needs an initialised process group "
                "(torch.distributed.init_process_group, e.g. under torchrun)"
            )
        rank, world = dist.get_rank(), dist.get_world_size()
        if batch_size % world:
            raise ValueError(
                f"fit(distributed=True): batch_size {batch_size} is the global batch and "
                f"must be divisible by the world size {world}"
            )
    per_step = batch_size // world
    generator = torch.Generator(device="cpu").manual_seed(seed)
    torch.manual_seed(seed + rank)
    # One fused kernel for all parameters: the per-tensor loop dominates small models.
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    scheduler = None
    if lr_patience is not None:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=lr_patience
        )
    step: Any = torch.compile(loss_fn, dynamic=False) if compile else loss_fn
    # DDP starts every rank from rank 0's weights and averages the gradients in backward.
    net = nn.parallel.DistributedDataParallel(model) if distributed else model
    if validate is None:
        predict = predict or model.predict  # type: ignore[assignment]
    result = FitResult(best_epoch=0, best_accuracy=-1.0)
    best_state: dict[str, Tensor] = {}
    best_score: tuple[float, ...] = (-math.inf,)
    steps, start = 0, time.perf_counter()
    epoch_range = range(1, epochs + 1)
    bar = progress(epoch_range) if progress is not None else epoch_range
    if progress is not None and hasattr(bar, "set_description"):
        bar.set_description(description)
    for epoch in bar:
        net.train()
        # Summed on the device and read once per epoch: no host sync per step and term.
        sums: dict[str, Tensor] = {}
        order = epoch_order(len(train), generator, seed, epoch, distributed).to(device)
        end = len(order) - per_step + 1 if drop_last else len(order)
        batches = [order[i : i + per_step] for i in range(0, end, per_step)]
        if not batches:
            raise ValueError(
                f"fit: {len(order)} training samples (per rank) give no batch of {per_step}"
            )
        for index in batches:
            batch = train.take(index)
            present = batch.present
            if train_presence is not None:
                # The sampler deals the epoch's order to the ranks in turn, so rank r's
                # j-th sample is row j * world + r of the global batch.
                present = train_presence(len(index) * world, generator)
                present = (
                    {m: p[rank::world].to(device) for m, p in present.items()} if present else None
                )
            with autocast(device):
                if isinstance(batch, Split):
                    terms = step(net, batch.views, batch.labels, present)
                else:
                    terms = step(net, batch, present)
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            for name, value in terms.items():
                sums[name] = sums[name] + value.detach() if name in sums else value.detach()
            steps += 1
        model.eval()
        with autocast(device):
            if validate is None:
                assert validation is not None
                assert predict is not None
                val_accuracy, val_loss = evaluate(predict, validation)
            else:
                with torch.no_grad():
                    val_accuracy, val_loss = math.nan, float(validate())
        mean_terms = torch.stack([value.double() for value in sums.values()]) / len(batches)
        if distributed:
            # Averaged over the ranks: the terms of the global batch, and validation
            # numbers that are the same on every rank by construction, so no rank can
            # stop at another epoch (and leave its peers waiting in a collective).
            val = torch.tensor([val_accuracy, val_loss], dtype=torch.float64, device=device)
            shared = torch.cat([mean_terms, val])
            dist.all_reduce(shared)
            shared /= world
            mean_terms, (val_accuracy, val_loss) = shared[:-2], shared[-2:].tolist()
        means = dict(zip(sums, mean_terms.tolist(), strict=True))
        shown = {"val_accuracy": val_accuracy} if validate is None else {"val_loss": val_loss}
        result.history.append({**means, **shown})
        if scheduler is not None:
            scheduler.step(val_loss)
        # Validation accuracy saturates on easy data; its ties go to the lower loss.
        score = (val_accuracy, -val_loss) if validate is None else (-val_loss,)
        if keep == "last" or score > best_score:
            best_score = score
            result.best_epoch, result.best_accuracy = epoch, val_accuracy
            result.best_loss = val_loss
            best_state = copy.deepcopy(model.state_dict())
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(
                loss=f"{means['total']:.3f}",
                **{k.replace("accuracy", "acc"): f"{v:.3f}" for k, v in shown.items()},
            )
        if keep == "best" and epoch - result.best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - start
    result.step_seconds = result.seconds / max(steps, 1)
    return result


def epoch_order(
    size: int, generator: torch.Generator, seed: int, epoch: int, distributed: bool
) -> Tensor:
    """This process's sample order for one epoch (its DistributedSampler shard under DDP)."""
    if not distributed:
        return torch.randperm(size, generator=generator)
    sampler = DistributedSampler(range(size), shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler))


def cross_entropy_loss(
    model: nn.Module, views: Views, labels: Tensor, present: Presence
) -> dict[str, Tensor]:
    """Loss function of a purely discriminative model: cross-entropy of its logits."""
    loss = F.cross_entropy(model(views, present), labels)
    return {"total": loss, "label": loss}
