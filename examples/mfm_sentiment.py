"""The sequence MFM on multimodal sentiment data (POM, ICT-MMMO, YouTube, CMU-MOSI).

Composed from factorkit's blocks, as in the paper's sentiment experiments:

- private encoders E_a_m: one :class:`~factorkit.SequenceEncoder` (LSTM) per modality,
  last valid state -> Z_a_m;
- shared encoder E_y: a :class:`~factorkit.MemoryFusionEncoder` (MFN) over all
  modalities -> Z_y;
- generators G: :class:`~factorkit.FactorGenerators`, F = G(Z);
- predictor D: :class:`~factorkit.Predictor`, Y_hat = D(F_y) (L1 loss for regression,
  cross-entropy for classes);
- decoders F_m: one :class:`~factorkit.SequenceDecoder` (LSTM) per modality from
  (F_a_m, F_y), with the masked :func:`~factorkit.reconstruction_loss` (step masks);
- the MMD prior (:class:`~factorkit.MMDPriorLoss`) on every latent.

Padding and missing modalities are handled with masks: the valid steps (B, T) of each
sample and the per-modality presence (B,) from the loader. Absent modalities are zero
for the encoders, their private codes are marked absent, and they count in no loss.
Samples with no data at all (length 0, e.g. most of YouTube) are dropped.

After training, :func:`contributions_over_time` measures by gradient flow
(:func:`~factorkit.factor_contributions`) how much each reconstruction X_hat_m draws on
the shared factor F_y vs its private factor F_a_m at every time step of the test set;
``--out`` draws it as a heat map (``contributions_over_time.png``).

The discriminative baseline uses the same MFN encoder, generator and predictor and no
generative part. With a modality missing at test time the trained MFM is evaluated
through :class:`~factorkit.SurrogateInference` (trained afterwards, main model frozen)
and, for comparison, by zero-filling the missing modality.

Run from the repository root::

    python -m examples.mfm_sentiment --data ../shared/data/mfn-sentiment/pom --dataset pom
    python -m examples.mfm_sentiment --data mosi_data.pkl --dataset mosi
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples.sentiment_data import (
    SequenceDataset,
    SequenceSplit,
    load_mfn_h5,
    load_multibench_pickle,
)
from examples.training import FitResult, autocast, fit, resolve_device
from factorkit import (
    FactorContributions,
    FactorGenerators,
    FactorizedLatents,
    MemoryFusionEncoder,
    MMDPriorLoss,
    Predictor,
    SequenceDecoder,
    SequenceEncoder,
    SurrogateInference,
    accuracy,
    accuracy_2,
    accuracy_7,
    complete_latents,
    f1,
    factor_contributions,
    fill_absent,
    mae,
    pearson_corr,
    per_target_corr,
    per_target_mae,
    reconstruction_loss,
    surrogate_loss,
    weighted_f1,
)

__all__ = [
    "Batch",
    "SentimentDiscriminative",
    "SentimentMFM",
    "SentimentOutput",
    "SequenceSurrogate",
    "contributions_over_time",
    "keep_at_random",
    "main",
    "mfm_objective",
    "pooled_share",
    "prepare",
    "sentiment_metrics",
    "surrogate_objective",
]

DATASETS = ("pom", "mmmo", "youtube", "mosi")
MMMO_THRESHOLD = 3.5
"""ICT-MMMO labels are 1..5: positive when >= 3.5 (the MFN/MFM convention)."""


# ---------------------------------------------------------------- data


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


def prepare(data: SequenceDataset, device: torch.device) -> tuple[dict[str, Batch], Tensor | None]:
    """Drop empty samples, standardise with training statistics, move to ``device``.

    Returns:
        ``{"train": Batch, "valid": Batch, "test": Batch}`` and, for regression, the
        (K,) mean training label (the predictor's offset), else ``None``.
    """
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
    return batches, offset


def load(path: str, dataset: str) -> SequenceDataset:
    """The MFN h5 folder (pom, mmmo, youtube) or a MultiBench pickle (mosi)."""
    data = load_multibench_pickle(path) if dataset == "mosi" else load_mfn_h5(path, dataset)
    if data.task == "multilabel":
        raise SystemExit(f"{path}: multilabel data (IEMOCAP) is not supported by this example")
    return data


# ---------------------------------------------------------------- models


class SentimentOutput(NamedTuple):
    """One forward pass of :class:`SentimentMFM`.

    Attributes:
        latents: the codes Z (shared and private, absent modalities marked).
        factors: F = G(Z).
        prediction: regression values (B, K) or class logits (B, C).
        reconstructions: modality name -> X_hat (B, T, D_m), zero on padded steps.
    """

    latents: FactorizedLatents
    factors: FactorizedLatents
    prediction: Tensor
    reconstructions: dict[str, Tensor]


def _zero_absent(x: Mapping[str, Tensor], present: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {m: fill_absent(x[m], present[m]) for m in sorted(x)}


class SentimentMFM(nn.Module):
    """The MFM for sequences: LSTM private encoders, MFN shared encoder, LSTM decoders.

    Args:
        feature_sizes: modality name -> D_m.
        output_size: regression targets K or classes C.
        label_offset: (K,) added to the regression output (the mean training label), so
            training starts from the mean; ``None`` for classification.
        hidden_size: LSTM state size of every encoder and decoder.
        memory_size: size of the MFN multi-view memory.
        shared_size: size of Z_y.
        private_size: size of each Z_a_m.
        factor_size: size of every factor F.
        dropout: dropout in the encoders, generators and predictor.

    Shapes:
        x[m]: (B, T, D_m). mask: (B, T) bool. present[m]: (B,) bool.
    """

    label_offset: Tensor | None

    def __init__(
        self,
        feature_sizes: Mapping[str, int],
        output_size: int,
        *,
        label_offset: Tensor | None = None,
        hidden_size: int = 32,
        memory_size: int = 32,
        shared_size: int = 32,
        private_size: int = 16,
        factor_size: int = 32,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        names = sorted(feature_sizes)
        self.shared_size, self.private_size = shared_size, private_size
        self.private_encoders = nn.ModuleDict(
            {
                m: SequenceEncoder(feature_sizes[m], hidden_size, private_size, dropout=dropout)
                for m in names
            }
        )
        self.shared_encoder = MemoryFusionEncoder(
            {m: feature_sizes[m] for m in names},
            hidden_size,
            memory_size,
            shared_size,
            dropout=dropout,
        )
        self.generators = FactorGenerators(
            shared_size,
            dict.fromkeys(names, private_size),
            factor_size=factor_size,
            dropout=dropout,
        )
        self.decoders = nn.ModuleDict(
            {
                m: SequenceDecoder(
                    factor_size, factor_size, feature_sizes[m], hidden_size=hidden_size
                )
                for m in names
            }
        )
        self.predictor = Predictor(factor_size, output_size, dropout=dropout)
        self.register_buffer("label_offset", label_offset, persistent=label_offset is not None)

    def encode(
        self, x: Mapping[str, Tensor], mask: Tensor, present: Mapping[str, Tensor]
    ) -> FactorizedLatents:
        """Z_y from the MFN over all modalities, Z_a_m from modality m alone."""
        x = _zero_absent(x, present)
        shared = self.shared_encoder(x, mask=mask)
        private = {
            m: fill_absent(enc(x[m], mask=mask), present[m])
            for m, enc in self.private_encoders.items()
        }
        return FactorizedLatents(shared, private, present)

    def predict_from(self, shared_factor: Tensor) -> Tensor:
        """Y_hat = D(F_y), plus the label offset for regression."""
        out: Tensor = self.predictor(shared_factor)
        return out if self.label_offset is None else out + self.label_offset

    def reconstruct(
        self, name: str, private_factor: Tensor, shared_factor: Tensor, mask: Tensor
    ) -> Tensor:
        """X_hat_m = F_m(concat(F_a_m, F_y)) on the valid steps of ``mask``.

        An explicit function of the two factors, for gradient-flow interpretation
        (:func:`contributions_over_time`): dX_hat_m/dF_y vs dX_hat_m/dF_a_m.

        Shapes:
            private_factor, shared_factor: (B, F). mask: (B, T). Returns: (B, T, D_m).
        """
        out: Tensor = self.decoders[name](private_factor, shared_factor, mask=mask)
        return out

    def decode(self, latents: FactorizedLatents, mask: Tensor) -> SentimentOutput:
        """Generators, predictor and decoders applied to given codes (e.g. surrogate ones)."""
        factors = self.generators(latents)
        reconstructions = {
            m: self.reconstruct(m, factors.private[m], factors.shared, mask)
            for m in factors.modalities
        }
        return SentimentOutput(latents, factors, self.predict_from(factors.shared), reconstructions)

    def forward(
        self, x: Mapping[str, Tensor], mask: Tensor, present: Mapping[str, Tensor]
    ) -> SentimentOutput:
        return self.decode(self.encode(x, mask, present), mask)

    def predict(
        self, x: Mapping[str, Tensor], mask: Tensor, present: Mapping[str, Tensor]
    ) -> Tensor:
        """Predictions only: the private encoders and decoders are skipped."""
        shared = self.shared_encoder(_zero_absent(x, present), mask=mask)
        return self.predict_from(self.generators.generate("shared", shared))


class SentimentDiscriminative(nn.Module):
    """The discriminative baseline: MFN encoder -> generator -> predictor, nothing else.

    Same arguments as :class:`SentimentMFM` (without the private and decoder parts).
    """

    label_offset: Tensor | None

    def __init__(
        self,
        feature_sizes: Mapping[str, int],
        output_size: int,
        *,
        label_offset: Tensor | None = None,
        hidden_size: int = 32,
        memory_size: int = 32,
        shared_size: int = 32,
        factor_size: int = 32,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.shared_encoder = MemoryFusionEncoder(
            dict(feature_sizes), hidden_size, memory_size, shared_size, dropout=dropout
        )
        self.generator = FactorGenerators(shared_size, {}, factor_size=factor_size, dropout=dropout)
        self.predictor = Predictor(factor_size, output_size, dropout=dropout)
        self.register_buffer("label_offset", label_offset, persistent=label_offset is not None)

    def predict(
        self, x: Mapping[str, Tensor], mask: Tensor, present: Mapping[str, Tensor]
    ) -> Tensor:
        """Regression values (B, K) or class logits (B, C)."""
        shared = self.shared_encoder(_zero_absent(x, present), mask=mask)
        out: Tensor = self.predictor(self.generator.generate("shared", shared))
        return out if self.label_offset is None else out + self.label_offset

    forward = predict


class SequenceSurrogate(nn.Module):
    """Surrogate inference for sequences: a small LSTM per modality, then
    :class:`~factorkit.SurrogateInference` on those features.

    Args:
        feature_sizes: modality name -> D_m.
        shared_size: size of Z_y; private_size: size of each Z_a_m (the MFM's).
        hidden_size: LSTM state size and feature size per modality.
        dropout: dropout of the surrogate network.

    Shapes:
        x[m]: (B, T, D_m). mask: (B, T). observed[m]: (B,) bool.
        Returns: latents with shared (B, Dy) and private[m] (B, Da).
    """

    def __init__(
        self,
        feature_sizes: Mapping[str, int],
        *,
        shared_size: int,
        private_size: int,
        hidden_size: int = 32,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        names = sorted(feature_sizes)
        self.encoders = nn.ModuleDict(
            {m: SequenceEncoder(feature_sizes[m], hidden_size, hidden_size) for m in names}
        )
        self.inference = SurrogateInference(
            dict.fromkeys(names, hidden_size),
            shared_size=shared_size,
            private_size=private_size,
            dropout=dropout,
        )

    def forward(
        self, x: Mapping[str, Tensor], mask: Tensor, observed: Mapping[str, Tensor]
    ) -> FactorizedLatents:
        features = {
            m: enc(fill_absent(x[m], observed[m]), mask=mask) for m, enc in self.encoders.items()
        }
        latents: FactorizedLatents = self.inference(features, observed)
        return latents


# ---------------------------------------------------------------- objectives


def label_loss(prediction: Tensor, labels: Tensor) -> Tensor:
    """L1 for regression (float labels), cross-entropy for class indices."""
    if labels.is_floating_point():
        return F.l1_loss(prediction.float(), labels.reshape(prediction.shape))
    return F.cross_entropy(prediction.float(), labels)


def mfm_objective(
    out: SentimentOutput,
    batch: Batch,
    *,
    lambda_x: float,
    lambda_mmd: float,
    prior: nn.Module,
) -> dict[str, Tensor]:
    """The MFM loss and its terms:

        ell_Y(Y, Y_hat) + lambda_x * sum_m MSE_valid(X_m, X_hat_m)
                        + lambda_mmd * sum_{Z in Z_y, Z_a_m} MMD(Z, N(0, I))

    Reconstruction counts the valid steps of the samples that have the modality; the MMD
    of Z_a_m only the samples that have modality m.

    Returns:
        ``"total"``, ``"label"``, ``"recon/<m>"`` and ``"mmd/<latent>"`` (unweighted).
    """
    label = label_loss(out.prediction, batch.labels)
    _, recon = reconstruction_loss(
        out.reconstructions, batch.x, batch.present, mask=batch.mask, per_modality=True
    )
    mmd = prior.per_latent(out.latents)
    total = label + lambda_x * sum(recon.values()) + lambda_mmd * sum(mmd.values())
    return {
        "total": total,
        "label": label,
        **{f"recon/{m}": term for m, term in recon.items()},
        **{f"mmd/{name}": term for name, term in mmd.items()},
    }


def keep_at_random(
    names: Collection[str], batch_size: int, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Keep each modality of each sample with probability 1/2 (on the CPU, sorted names)."""
    draw = torch.rand(len(names), batch_size, generator=generator) < 0.5
    return {m: draw[i] for i, m in enumerate(sorted(names))}


def simulate_missing(
    present: Mapping[str, Tensor], keep: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """The present modalities that ``keep`` keeps; a sample left with none keeps them all.

    With ``keep`` from :func:`keep_at_random`: each present modality removed with
    probability 1/2, at least one kept per sample.
    """
    kept = {m: present[m] & keep[m] for m in sorted(present)}
    nothing = ~torch.stack(list(kept.values())).any(0)
    return {m: torch.where(nothing, present[m], kept[m]) for m in kept}


def surrogate_objective(
    model: SentimentMFM,
    surrogate: SequenceSurrogate,
    batch: Batch,
    observed: Mapping[str, Tensor],
    *,
    lambda_x: float,
) -> dict[str, Tensor]:
    """Surrogate training with the MFM frozen: code matching, the label through the
    trained predictor, and the reconstruction of the missing modalities through the
    trained decoders.
    """
    with torch.no_grad():
        full = model.encode(batch.x, batch.mask, batch.present)
    inferred = surrogate(batch.x, batch.mask, observed)
    out = model.decode(complete_latents(full, inferred, observed), batch.mask)
    codes = surrogate_loss(inferred, full)
    label = label_loss(out.prediction, batch.labels)
    missing = {m: batch.present[m] & ~observed[m] for m in observed}
    recon = reconstruction_loss(out.reconstructions, batch.x, missing, mask=batch.mask)
    total = codes + label + lambda_x * recon
    return {"total": total, "codes": codes, "label": label, "recon": recon}


def predict_with_surrogate(
    model: SentimentMFM, surrogate: SequenceSurrogate, batch: Batch
) -> Tensor:
    """Predictions where ``batch.present`` marks the observed modalities."""
    latents = model.encode(batch.x, batch.mask, batch.present)
    completed = complete_latents(latents, surrogate(batch.x, batch.mask, batch.present))
    return model.predict_from(model.generators(completed).shared)


# ---------------------------------------------------------------- interpretation


def contributions_over_time(
    model: SentimentMFM, batch: Batch, *, batch_size: int = 256
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

    def decoder(name: str) -> Callable[[Tensor, Tensor], Tensor]:
        def run(private: Tensor, shared: Tensor) -> Tensor:
            every = torch.ones(private.shape[0], steps, dtype=torch.bool, device=private.device)
            return model.reconstruct(name, private, shared, every)

        return run

    def factorize(part: Batch) -> tuple[FactorizedLatents, dict[str, Tensor]]:
        factors = model.generators(model.encode(part.x, part.mask, part.present))
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


# ---------------------------------------------------------------- training


# ---------------------------------------------------------------- metrics


def _finite_or_none(value: Tensor) -> float | None:
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
            "corr": _finite_or_none(per_target_corr(y_hat, y).mean()),
        }
    y_hat = y_hat.reshape(y.shape)
    out: dict[str, Any] = {
        "mae": float(mae(y_hat, y)),
        "corr": _finite_or_none(pearson_corr(y_hat, y)),
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


@torch.no_grad()
def _predict(fn: Callable[[Batch], Tensor], batch: Batch, device: torch.device) -> Tensor:
    with autocast(device):
        return fn(batch).float()


def without(batch: Batch, name: str) -> Batch:
    """The samples that keep some modality once ``name`` is removed, with it removed."""
    rest = [batch.present[m] for m in batch.present if m != name]
    keep = torch.stack(rest).any(0) if rest else torch.zeros_like(batch.present[name])
    part = batch.take(keep.nonzero().flatten())
    present = {m: p & (m != name) for m, p in part.present.items()}
    return part.with_present(present)


# ---------------------------------------------------------------- one seed


@dataclass
class Settings:
    """Hyper-parameters and options of one run (see the command-line help)."""

    dataset: str
    epochs: int = 50
    patience: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    lambda_x: float = 1.0
    lambda_mmd: float = 10.0
    hidden_size: int = 32
    dropout: float = 0.2
    surrogate_epochs: int = 30
    compile: bool = False

    def fit(
        self,
        module: nn.Module,
        loss_fn: Callable[[nn.Module, Batch, dict[str, Tensor] | None], dict[str, Tensor]],
        train: Batch,
        val_loss: Callable[[], Tensor],
        *,
        seed: int,
        epochs: int | None = None,
        compile: bool | None = None,
        train_presence: Callable[[int, torch.Generator], dict[str, Tensor]] | None = None,
    ) -> FitResult:
        """:func:`examples.training.fit` with these settings: Adam (no weight decay), a
        constant learning rate, every sample each epoch (the last batch may be smaller),
        the weights of the lowest ``val_loss``; ``epochs`` and ``compile`` override the
        settings."""
        return fit(
            module,
            loss_fn,
            train,
            None,
            validate=val_loss,
            epochs=self.epochs if epochs is None else epochs,
            patience=self.patience,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=0.0,
            lr_patience=None,
            drop_last=False,
            seed=seed,
            compile=self.compile if compile is None else compile,
            train_presence=train_presence,
        )


def run_seed(
    batches: Mapping[str, Batch],
    offset: Tensor | None,
    output_size: int,
    settings: Settings,
    seed: int,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the MFM, the discriminative baseline and the surrogate; test metrics."""
    train, valid, test = batches["train"], batches["valid"], batches["test"]
    device = train.labels.device
    sizes = {m: int(x.shape[2]) for m, x in train.x.items()}
    hidden, dropout = settings.hidden_size, settings.dropout
    torch.manual_seed(seed)
    mfm = SentimentMFM(
        sizes, output_size, label_offset=offset, hidden_size=hidden, dropout=dropout
    ).to(device)
    # The codes are finite by construction (the loader zeroes non-finite features); the
    # finiteness check would cost a host sync per latent and step.
    prior = MMDPriorLoss(check_finite=False)

    def mfm_step(model: nn.Module, batch: Batch, _: object) -> dict[str, Tensor]:
        out = model(batch.x, batch.mask, batch.present)
        return mfm_objective(
            out, batch, lambda_x=settings.lambda_x, lambda_mmd=settings.lambda_mmd, prior=prior
        )

    def mfm_val() -> Tensor:
        return label_loss(mfm.predict(valid.x, valid.mask, valid.present), valid.labels)

    mfm_fit = settings.fit(mfm, mfm_step, train, mfm_val, seed=seed)
    log(f"  mfm: best epoch {mfm_fit.best_epoch}, {_epoch_seconds(mfm_fit):.2f} s/epoch")
    contributions = contributions_over_time(mfm, test)

    torch.manual_seed(seed)
    disc = SentimentDiscriminative(
        sizes, output_size, label_offset=offset, hidden_size=hidden, dropout=dropout
    ).to(device)

    def disc_step(model: nn.Module, batch: Batch, _: object) -> dict[str, Tensor]:
        loss = label_loss(model(batch.x, batch.mask, batch.present), batch.labels)
        return {"total": loss, "label": loss}

    def disc_val() -> Tensor:
        return label_loss(disc(valid.x, valid.mask, valid.present), valid.labels)

    disc_fit = settings.fit(disc, disc_step, train, disc_val, seed=seed)
    log(
        f"  discriminative: best epoch {disc_fit.best_epoch}, "
        f"{_epoch_seconds(disc_fit):.2f} s/epoch"
    )

    result: dict[str, Any] = {
        "seed": seed,
        "mfm": {
            **_score(lambda b: mfm.predict(b.x, b.mask, b.present), test, settings, device),
            "shared_contribution_share": pooled_share(contributions),
        },
        "shared_contribution_share_per_step": {
            m: [_finite_or_none(v) for v in share] for m, share in contributions.share.items()
        },
        "contribution_steps_n": {m: n.tolist() for m, n in contributions.counts.items()},
        "discriminative": _score(lambda b: disc(b.x, b.mask, b.present), test, settings, device),
        "epochs": {"mfm": mfm_fit.best_epoch, "discriminative": disc_fit.best_epoch},
        "epoch_seconds": {
            "mfm": _epoch_seconds(mfm_fit),
            "discriminative": _epoch_seconds(disc_fit),
        },
        "history": {"mfm": mfm_fit.history, "discriminative": disc_fit.history},
    }
    if len(sizes) > 1:
        result.update(_missing(mfm, batches, settings, seed, log))
    return result


def _epoch_seconds(result: FitResult) -> float:
    return result.seconds / len(result.history)


def _score(
    fn: Callable[[Batch], Tensor], batch: Batch, settings: Settings, device: torch.device
) -> dict[str, Any]:
    return sentiment_metrics(_predict(fn, batch, device), batch.labels, settings.dataset)


def _missing(
    mfm: SentimentMFM,
    batches: Mapping[str, Batch],
    settings: Settings,
    seed: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train the surrogate on the frozen MFM; test with each modality removed."""
    train, valid, test = batches["train"], batches["valid"], batches["test"]
    names = sorted(train.x)
    mfm.requires_grad_(False)
    torch.manual_seed(seed)
    surrogate = SequenceSurrogate(
        {m: int(x.shape[2]) for m, x in train.x.items()},
        shared_size=mfm.shared_size,
        private_size=mfm.private_size,
        hidden_size=settings.hidden_size,
        dropout=settings.dropout,
    ).to(train.labels.device)
    valid_parts = [without(valid, m) for m in names]

    def step(model: nn.Module, batch: Batch, keep: dict[str, Tensor]) -> dict[str, Tensor]:
        observed = simulate_missing(batch.present, keep)
        assert isinstance(model, SequenceSurrogate)
        return surrogate_objective(mfm, model, batch, observed, lambda_x=settings.lambda_x)

    def val() -> Tensor:
        losses = [
            label_loss(predict_with_surrogate(mfm, surrogate, part), part.labels)
            for part in valid_parts
            if len(part)
        ]
        return torch.stack(losses).mean()

    # Eager: compiling this step (a random mask per batch, complete_latents) did not
    # finish within 10 minutes on a 2-core CPU, and the surrogate is a short phase.
    found = settings.fit(
        surrogate, step, train, val, seed=seed, epochs=settings.surrogate_epochs, compile=False,
        train_presence=lambda size, generator: keep_at_random(names, size, generator),
    )  # fmt: skip
    log(f"  surrogate: best epoch {found.best_epoch}, {_epoch_seconds(found):.2f} s/epoch")
    device = train.labels.device
    surrogate_scores, zero_fill = {}, {}
    for m in names:
        part = without(test, m)
        if len(part) == 0:
            continue
        key = f"without_{m}"
        surrogate_scores[key] = {
            **_score(lambda b: predict_with_surrogate(mfm, surrogate, b), part, settings, device),
            "n": len(part),
        }
        zero_fill[key] = {
            **_score(lambda b: mfm.predict(b.x, b.mask, b.present), part, settings, device),
            "n": len(part),
        }
    return {"missing": surrogate_scores, "missing_zero_fill": zero_fill}


# ---------------------------------------------------------------- seeds and output


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
    keys = [k for k in ("mfm", "discriminative", "missing", "missing_zero_fill") if k in runs[0]]
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


def plot_history(runs: Sequence[Mapping[str, Any]], out: Path) -> None:
    """Training curves of the MFM terms and the validation losses, one figure per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    for r in runs:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        history = r["history"]["mfm"]
        for term in history[0]:
            if term != "total":
                axes[0].semilogy([h[term] for h in history], label=term)
        axes[0].set(title="MFM training terms", xlabel="epoch")
        axes[0].legend(fontsize=7)
        for name, hist in r["history"].items():
            axes[1].plot([h["val_loss"] for h in hist], label=name)
        axes[1].set(title="validation label loss", xlabel="epoch")
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(out / f"curves_seed{r['seed']}.png", dpi=100)
        plt.close(fig)


def plot_contributions(summary: Mapping[str, Any], out: Path) -> Path:
    """Heat map (modalities x time steps) of F_y's share of each reconstruction.

    Reads ``shared_contribution_share_per_step`` and ``contribution_steps_n`` of the
    summary. Each cell is written out; the colours are centred on 0.5 (both factors
    equal) and stretched to the largest distance from it, so that small differences
    between steps stay visible. Steps that no test sample reaches are left blank.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_step = summary["shared_contribution_share_per_step"]
    names = sorted(per_step)
    grid = torch.tensor(
        [[math.nan if v is None else v for v in per_step[m]] for m in names], dtype=torch.float64
    )
    steps = grid.shape[1]
    reached = grid[~grid.isnan()]
    half = max(float((reached - 0.5).abs().max()), 0.01) if reached.numel() else 0.5
    fig, (ax, counts) = plt.subplots(
        2, 1, figsize=(max(6.0, 0.45 * steps + 2.5), 1.6 + 0.5 * len(names) + 1.4),
        sharex=True, layout="constrained",
        gridspec_kw={"height_ratios": [max(len(names), 1), 1.4]},
    )  # fmt: skip
    image = ax.imshow(
        grid.numpy(),
        aspect="auto",
        cmap="coolwarm",
        vmin=0.5 - half,
        vmax=0.5 + half,
        interpolation="nearest",
    )
    for row, col in (~grid.isnan()).nonzero().tolist():
        ax.text(col, row, f"{grid[row, col]:.2f}".lstrip("0"), ha="center", va="center", fontsize=7)
    shares = summary["mfm"]["shared_contribution_share"]
    ax.set_yticks(range(len(names)), [f"{m} ({shares[m]:.2f})" for m in names])
    seeds = len(summary["seeds"])
    ax.set_title(
        f"{summary['dataset']}: share a / (a + b) of the shared factor F_y in X_hat per step\n"
        f"(test set, {seeds} seed{'s' if seeds > 1 else ''}; over all steps in brackets)",
        fontsize=9,
    )
    fig.colorbar(image, ax=[ax, counts], label="share of F_y (0.5: equal)")
    for m in names:
        counts.plot(summary["contribution_steps_n"][m], marker=".", label=m)
    counts.set(xlabel="time step k (the k-th valid step of a sequence)", ylabel="test samples")
    counts.set_xticks(range(steps))
    counts.tick_params(labelsize=7)
    counts.legend(fontsize=7)
    path = out / "contributions_over_time.png"
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="MFN h5 folder, or a MultiBench .pkl (mosi)")
    p.add_argument("--dataset", required=True, choices=DATASETS)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--num-seeds", type=int, default=1, help="seeds seed, seed+1, ...")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--surrogate-epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lambda-x", type=float, default=1.0, help="reconstruction weight")
    p.add_argument("--lambda-mmd", type=float, default=10.0, help="MMD prior weight")
    p.add_argument("--hidden-size", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--threads", type=int, default=1, help="CPU threads (1 is fastest here)")
    p.add_argument("--metrics-out", type=Path, help="write the metrics JSON here")
    p.add_argument("--out", type=Path, help="folder for plots")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns the metrics dictionary it prints."""
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    data = load(args.data, args.dataset)
    batches, offset = prepare(data, device)
    settings = Settings(
        dataset=args.dataset,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        lambda_x=args.lambda_x,
        lambda_mmd=args.lambda_mmd,
        hidden_size=args.hidden_size,
        dropout=args.dropout,
        surrogate_epochs=args.surrogate_epochs,
        compile=args.compile,
    )
    print(
        f"{args.dataset}: {dict(data.feature_sizes)}, "
        + ", ".join(f"{k} {len(b)}" for k, b in batches.items())
        + f" samples with data, on {device}"
    )
    runs = []
    for seed in range(args.seed, args.seed + args.num_seeds):
        print(f"seed {seed}")
        runs.append(run_seed(batches, offset, data.output_size, settings, seed))
    summary = summarise(args.dataset, runs)
    print(json.dumps({k: summary[k] for k in summary if k != "runs"}, indent=1))
    if args.metrics_out is not None:
        args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
        args.metrics_out.write_text(json.dumps(summary, indent=1))
    if args.out is not None:
        plot_history(runs, args.out)
        plot_contributions(summary, args.out)
    return summary


if __name__ == "__main__":
    main()
