"""Data of the sentiment example: standardised batches, masks, missing-modality variants."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from examples.sentiment_data import (
    SequenceDataset,
    SequenceSplit,
    load_mfn_h5,
    load_multibench_pickle,
)

__all__ = [
    "DATASETS",
    "Batch",
    "Prepared",
    "load",
    "prepare",
    "simulate_missing",
    "without",
]

DATASETS = ("pom", "mmmo", "youtube", "mosi")


@dataclass
class Batch:
    """Standardised sequences of one split (or mini-batch), on the device.

    Attributes:
        x: modality name -> (B, T, D_m) float32, zero on padded steps and where absent.
        mask: (B, T) bool, True on valid steps (one contiguous run per row).
        present: modality name -> (B,) bool.
        labels: (B,) or (B, K) float32 for regression, (B,) int64 class indices.
    """

    x: dict[str, Tensor]
    mask: Tensor
    present: dict[str, Tensor]
    labels: Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, index: Tensor) -> Batch:
        """The samples at ``index``."""
        return Batch(
            {m: v[index] for m, v in self.x.items()},
            self.mask[index],
            {m: p[index] for m, p in self.present.items()},
            self.labels[index],
        )

    def with_present(self, present: Mapping[str, Tensor]) -> Batch:
        """The same samples with another presence mask (e.g. a modality removed)."""
        return Batch(dict(self.x), self.mask, dict(present), self.labels)

    def filled(self, name: str, value: Tensor) -> Batch:
        """The same samples with modality ``name`` observed everywhere and equal to
        ``value`` on every valid step (e.g. raw zeros, in standardised units)."""
        x = dict(self.x)
        x[name] = torch.where(self.mask[:, :, None], value.to(x[name]), 0.0).expand_as(x[name])
        present = dict(self.present)
        present[name] = torch.ones_like(present[name])
        return Batch(x, self.mask, present, self.labels)


@dataclass
class Prepared:
    """The three splits, ready for training.

    Attributes:
        batches: ``"train"``, ``"valid"``, ``"test"`` -> :class:`Batch`.
        offset: (K,) mean training label for regression (the predictor's offset), else
            ``None``.
        raw_zero: modality name -> (D_m,) the value a raw zero takes after
            standardisation, ``-mean / std`` (what zero-filling a modality feeds the
            model; a standardised 0 is the training mean, i.e. mean imputation).
    """

    batches: dict[str, Batch]
    offset: Tensor | None
    raw_zero: dict[str, Tensor]


def _feature_stats(split: SequenceSplit) -> dict[str, tuple[Tensor, Tensor]]:
    """Per-feature mean and std over the valid steps of the samples that have the modality."""
    steps = split.step_mask()
    stats = {}
    for m, x in split.modalities.items():
        rows = x[steps & split.present[m][:, None]].double()
        std = rows.std(0) if rows.shape[0] > 1 else torch.ones(x.shape[2], dtype=torch.float64)
        # A constant feature is only centred: dividing by ~0 would blow up its noise.
        std = torch.where(std < 1e-6, 1.0, std)
        stats[m] = (rows.mean(0).float(), std.float())
    return stats


def prepare(data: SequenceDataset, device: torch.device) -> Prepared:
    """Drop empty samples, standardise with training statistics, move to ``device``."""
    splits = {name: s.select(s.lengths > 0) for name, s in data.splits().items()}
    for name, split in splits.items():
        if len(split) == 0:
            raise ValueError(f"split {name!r} has no sample with data (every length is 0)")
    stats = _feature_stats(splits["train"])
    batches = {}
    for name, split in splits.items():
        mask = split.step_mask()
        x = {}
        for m, seq in split.modalities.items():
            keep = (mask & split.present[m][:, None])[:, :, None]
            mean, std = stats[m]
            x[m] = torch.where(keep, (seq - mean) / std, 0.0).to(device)
        labels = split.labels.long() if data.task == "classification" else split.labels
        batches[name] = Batch(
            x,
            mask.to(device),
            {m: p.to(device) for m, p in split.present.items()},
            labels.to(device),
        )
    offset = None
    if data.task == "regression":
        offset = splits["train"].labels.reshape(len(splits["train"]), -1).mean(0).to(device)
    raw_zero = {m: (-mean / std).to(device) for m, (mean, std) in stats.items()}
    return Prepared(batches, offset, raw_zero)


def load(path: str, dataset: str) -> SequenceDataset:
    """The MFN h5 folder (pom, mmmo, youtube) or a MultiBench pickle (mosi).

    Raises:
        ValueError: multilabel data (IEMOCAP), and the loaders' errors, naming the file.
    """
    data = load_multibench_pickle(path) if dataset == "mosi" else load_mfn_h5(path, dataset)
    if data.task == "multilabel":
        raise ValueError(f"{path}: multilabel data (IEMOCAP) is not supported by this example")
    return data


def without(batch: Batch, name: str) -> Batch:
    """The samples that keep some modality once ``name`` is removed, with it removed."""
    rest = [batch.present[m] for m in batch.present if m != name]
    keep = torch.stack(rest).any(0) if rest else torch.zeros_like(batch.present[name])
    part = batch.take(keep.nonzero().flatten())
    present = {m: p & (m != name) for m, p in part.present.items()}
    return part.with_present(present)


def simulate_missing(
    present: Mapping[str, Tensor], keep: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """The present modalities that ``keep`` keeps; a sample left with none keeps them all.

    With ``keep`` from :func:`~factorkit.random_presence` at rate 1/2: each present
    modality removed with probability about 1/2, at least one kept per sample.
    """
    kept = {m: present[m] & keep[m] for m in sorted(present)}
    nothing = ~torch.stack(list(kept.values())).any(0)
    return {m: torch.where(nothing, present[m], kept[m]) for m in kept}
