"""Missing views at test time: MFM + surrogate inference against simple alternatives.

After the MFM is trained on complete data, :class:`~factorkit.SurrogateInference` is
trained with the MFM frozen. Its product of per-view experts (``mode="experts"``) sees,
for each observed view, the MFM encoder's features and the raw view, and predicts a
correction to the MFM's codes under mean imputation (the missing views set to their
training mean): so the surrogate starts from mean imputation and learns what it misses.
For random missing patterns it learns from three terms (code matching, label, missing-view
reconstruction: the reference code's terms, here with the MFM frozen and the targets
detached, factorkit's choice) and a distillation term::

    MSE(surrogate codes, full-data codes) + 3 * label loss + reconstruction of the missing views
        + T^2 * KL(softmax(full-data logits / T) || softmax(surrogate logits / T)),  T = 2

where the last three run through the MFM's frozen generators, predictor and decoders. The
distillation term asks the surrogate's prediction to match the complete MFM's whole
predictive distribution, not only the label. Each batch is also trained with every
sample reduced to one of its observed views, so that every expert learns to stand alone
(the only-one-view patterns). The surrogate trains for the full ``epochs`` and keeps its
final weights: its validation accuracy on mixed patterns is too coarse a signal to pick
an epoch (on the digits' validation split, the final weights were better on average over
the patterns than the best-accuracy epoch, over three seeds).

Each evaluation pattern (every view missing in turn, only one view observed, 50% of the
views missing at random per sample) compares, on the test split:

- ``surrogate``: MFM + surrogate inference (missing codes inferred, then generated,
  predicted and decoded by the MFM);
- ``zero_fill``: the normally trained MFM with the raw features of the missing views set
  to 0 (i.e. ``-mean / std`` after standardisation), the paper's baseline;
- ``mean_impute``: the normally trained MFM with the missing views set to their training
  mean (0 after standardisation); its reconstruction of a missing view is that mean;
- ``observed_only``: a discriminative model trained on the observed views only (for the
  random pattern: trained with the same random masks, so it sees only observed views).

Reconstruction MSEs are on standardised features, averaged over the missing views.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from examples.mfm import digits_mfm, logits_of
from examples.multiview_data import Standardization
from examples.training import Split, accuracy, autocast, fit
from factorkit import (
    MFM,
    FactorizedHead,
    FactorizedLatents,
    SurrogateInference,
    complete_latents,
    fill_absent,
    mfm_loss,
    random_presence,
    reconstruction_loss,
    surrogate_loss,
)

__all__ = [
    "DISTILLATION_TEMPERATURE",
    "LABEL_WEIGHT",
    "MissingEvaluation",
    "distillation_loss",
    "evaluation_patterns",
    "infer_latents",
    "train_surrogate",
    "training_patterns",
]

LABEL_WEIGHT = 3.0
"""Weight of the label term of the surrogate objective (codes and reconstruction: 1)."""

DISTILLATION_TEMPERATURE = 2.0
"""Temperature T of the distillation term (weighted T^2, which keeps its gradients at the
scale of the label term's)."""

Presence = dict[str, Tensor]


def training_patterns(names: Sequence[str], batch: int, generator: torch.Generator) -> Presence:
    """A mix of the test patterns, per sample: one view missing, one view kept, or each
    view missing with probability 1/2 (at least one kept)."""
    order = sorted(names)
    kind = torch.randint(3, (batch,), generator=generator)
    pick = torch.randint(len(order), (batch,), generator=generator)
    onehot = F.one_hot(pick, len(order)).bool().T
    random = random_presence(order, batch, 0.5, generator=generator)
    out = {}
    for i, m in enumerate(order):
        out[m] = torch.where(kind == 0, ~onehot[i], torch.where(kind == 1, onehot[i], random[m]))
    return out


def evaluation_patterns(names: Sequence[str], batch: int, seed: int) -> dict[str, Presence]:
    """The named test patterns: ``without_<view>``, ``only_<view>``, ``random_50``."""
    order = sorted(names)
    ones = torch.ones(batch, dtype=torch.bool)
    patterns: dict[str, Presence] = {}
    for v in order:
        patterns[f"without_{v}"] = {m: ones & (m != v) for m in order}
    for v in order:
        patterns[f"only_{v}"] = {m: ones & (m == v) for m in order}
    generator = torch.Generator().manual_seed(seed)
    patterns["random_50"] = random_presence(order, batch, 0.5, generator=generator)
    return patterns


def train_surrogate(
    mfm: MFM, train: Split, validation: Split, *, seed: int, **fit_kwargs: Any
) -> SurrogateInference:
    """Train surrogate inference with the MFM frozen (see the module docstring)."""
    device = train.labels.device
    head = _head(mfm)
    sizes = {m: head.input_sizes[m] + math.prod(v.shape[1:]) for m, v in train.views.items()}
    torch.manual_seed(seed)
    surrogate = SurrogateInference(
        sizes,
        shared_size=head.shared_size,
        private_size=head.private_sizes,
        mode="experts",
        hidden_size=256,
    ).to(device)
    mfm.requires_grad_(False)
    mfm.eval()
    names = head.modalities

    def terms(
        model: SurrogateInference,
        views: dict,
        labels: Tensor,
        present: Presence,
        target: FactorizedLatents,
        teacher: Tensor,
    ) -> dict[str, Tensor]:
        latents, inferred = infer_latents(mfm, model, views, present, full=target)
        out = mfm.decode(latents)
        assert out.reconstructions is not None
        missing = {m: ~present[m] for m in names}
        return {
            "codes": surrogate_loss(inferred, target),
            "label": F.cross_entropy(out.prediction, labels),
            "distill": distillation_loss(out.prediction, teacher),
            "recon": reconstruction_loss(out.reconstructions, views, missing),
        }

    def loss(model: SurrogateInference, views: dict, labels: Tensor, present: Any) -> dict:
        with torch.no_grad():
            target = mfm.encode(views)
            teacher = mfm.predict(target)
        first = terms(model, views, labels, present, target, teacher)
        # Every sample again with one of its observed views alone (picked at random), so
        # that each expert also learns to stand alone: the only-one-view patterns.
        bits = torch.stack([present[m] for m in names], dim=1).float()
        pick = torch.multinomial(bits, 1).squeeze(1)
        alone = {m: pick == i for i, m in enumerate(names)}
        again = terms(model, views, labels, alone, target, teacher)
        total = sum(
            t["codes"] + LABEL_WEIGHT * t["label"] + t["distill"] + t["recon"]
            for t in (first, again)
        )
        return {"total": total, **first}

    def predict(views: dict, present: Any) -> Tensor:
        return surrogate_predict(mfm, surrogate, views, present)[0]

    generator = torch.Generator().manual_seed(seed + 1)
    patterns = training_patterns(names, len(validation), generator)
    fit(
        surrogate,
        loss,
        train,
        Split(validation.views, validation.labels, patterns),
        predict=predict,
        seed=seed,
        train_presence=lambda b, g: training_patterns(names, b, g),
        description="surrogate",
        **{**fit_kwargs, "keep": "last"},
    )
    surrogate.requires_grad_(False)
    return surrogate


def label_loss(model: MFM, views: dict, labels: Tensor, present: Any) -> dict[str, Tensor]:
    """The objective of a discriminative digits model (:func:`~factorkit.mfm_loss`: the label)."""
    return mfm_loss(model(views, present), views, labels)


def distillation_loss(
    logits: Tensor, teacher: Tensor, temperature: float = DISTILLATION_TEMPERATURE
) -> Tensor:
    """T^2 * KL(softmax(teacher / T) || softmax(logits / T)), averaged over the batch.

    Shapes:
        logits, teacher: (B, K). Returns: ().
    """
    return temperature**2 * F.kl_div(
        F.log_softmax(logits.float() / temperature, dim=1),
        F.log_softmax(teacher.float() / temperature, dim=1),
        log_target=True,
        reduction="batchmean",
    )


def _head(mfm: MFM) -> FactorizedHead:
    """The MFM's encoder: a :class:`~factorkit.FactorizedHead` over the view encoders."""
    if not isinstance(mfm.encoder, FactorizedHead) or mfm.encoder.encoders is None:
        raise TypeError("the missing-view evaluation needs an MFM whose encoder is a head")
    return mfm.encoder


def infer_latents(
    mfm: MFM,
    surrogate: SurrogateInference,
    views: Mapping[str, Tensor],
    present: Presence,
    *,
    full: FactorizedLatents | None = None,
) -> tuple[FactorizedLatents, FactorizedLatents]:
    """Every code of the MFM under a presence mask, the missing ones inferred.

    The surrogate sees each observed view's encoder features and raw values, and its
    codes are added to the MFM's codes of the mean-imputed views (0 after
    standardisation): it refines mean imputation.

    Args:
        full: the head's codes of the complete views, when known (training): their
            observed slots are the same and save a second head pass.

    Returns:
        The completed latents, and the surrogate's own (inferred slots marked present).
    """
    # Absent views are zeroed before the encoders: the features of mean imputation.
    head = _head(mfm)
    features = head.encode(views, present)
    inputs = {
        m: torch.cat([features[m], fill_absent(views[m], present[m]).flatten(1)], dim=1)
        for m in features
    }
    inferred = surrogate(inputs, present, base=head.factorize(features))
    observed = head.factorize(features, present) if full is None else full
    return complete_latents(observed, inferred, present), inferred


@torch.no_grad()
def surrogate_predict(
    mfm: MFM, surrogate: SurrogateInference, views: Mapping[str, Tensor], present: Presence
) -> tuple[Tensor, dict[str, Tensor]]:
    """Logits and reconstructions of MFM + surrogate inference under a presence mask."""
    out = mfm.decode(infer_latents(mfm, surrogate, views, present)[0])
    assert out.reconstructions is not None
    return out.prediction, out.reconstructions


class MissingEvaluation:
    """Runs every pattern of :func:`evaluation_patterns` and collects the metrics."""

    def __init__(
        self,
        mfm: MFM,
        surrogate: SurrogateInference,
        stats: Standardization,
        train: Split,
        validation: Split,
        test: Split,
        *,
        single_view: Mapping[str, float],
        seed: int,
        fit_kwargs: Mapping[str, Any],
    ) -> None:
        self.mfm, self.surrogate, self.stats = mfm, surrogate, stats
        self.train, self.validation, self.test = train, validation, test
        self.single_view, self.seed, self.fit_kwargs = single_view, seed, dict(fit_kwargs)
        self._rates: dict[str, float] = {}

    def run(self, random_rates: Mapping[str, float] | None = None) -> dict[str, dict[str, Any]]:
        """Metrics of every pattern, plus ``random_rates``: extra named random patterns."""
        device = self.test.labels.device
        names = _head(self.mfm).modalities
        patterns = evaluation_patterns(names, len(self.test), self.seed)
        for name, rate in (random_rates or {}).items():
            generator = torch.Generator().manual_seed(self.seed + 3)
            patterns[name] = random_presence(names, len(self.test), rate, generator=generator)
        self._rates = {"random_50": 0.5, **(random_rates or {})}
        results = {}
        for name, present in patterns.items():
            present = {m: p.to(device) for m, p in present.items()}
            results[name] = self.pattern(name, present)
        return results

    def pattern(self, name: str, present: Presence) -> dict[str, float]:
        test, names = self.test, _head(self.mfm).modalities
        missing = [m for m in names if not bool(present[m].all())]
        with autocast(device=test.labels.device):
            logits, recon = surrogate_predict(self.mfm, self.surrogate, test.views, present)
            zero = self._imputed(
                present,
                self.stats.apply({m: torch.zeros_like(v) for m, v in self.stats.mean.items()}),
            )
            mean = self._imputed(
                present, {m: torch.zeros_like(v) for m, v in self.stats.mean.items()}
            )
        absent = {m: ~present[m] for m in names}
        _, surrogate_mse = reconstruction_loss(recon, test.views, absent, per_modality=True)
        zeros = {m: torch.zeros_like(v) for m, v in test.views.items()}
        _, mean_mse = reconstruction_loss(zeros, test.views, absent, per_modality=True)
        return {
            "surrogate_accuracy": _accuracy(logits, test.labels),
            "zero_fill_accuracy": accuracy(logits_of(self.mfm), zero),
            "mean_impute_accuracy": accuracy(logits_of(self.mfm), mean),
            "observed_only_accuracy": self._observed_only(name, present),
            "surrogate_recon_mse": _mean(float(surrogate_mse[m]) for m in missing),
            "mean_impute_recon_mse": _mean(float(mean_mse[m]) for m in missing),
            "missing_views": missing,  # type: ignore[dict-item]
        }

    def _imputed(self, present: Presence, fill: Mapping[str, Tensor]) -> Split:
        views = {}
        for m, x in self.test.views.items():
            keep = present[m].reshape((-1,) + (1,) * (x.dim() - 1))
            views[m] = torch.where(keep, x, fill[m].to(x.device).expand_as(x))
        return Split(views, self.test.labels)

    def _observed_only(self, name: str, present: Presence) -> float:
        if name.startswith("only_"):
            return self.single_view[name.removeprefix("only_")]
        shapes = {m: tuple(v.shape[1:]) for m, v in self.train.views.items()}
        if name.startswith("without_"):
            kept = [m for m in shapes if m != name.removeprefix("without_")]
            torch.manual_seed(self.seed)
            model = digits_mfm(
                {m: shapes[m] for m in kept}, int(self.train.labels.max()) + 1, generative=False
            )
            model.to(self.test.labels.device)
            only = [
                Split({m: s.views[m] for m in kept}, s.labels)
                for s in (self.train, self.validation, self.test)
            ]
            fit(
                model,
                label_loss,
                only[0],
                only[1],
                predict=logits_of(model),
                description=f"{name} disc",
                **self.fit_kwargs,
            )
            return accuracy(logits_of(model), only[2])
        # random_<rate>: trained under random masks of that rate, evaluated on the test masks.
        names, rate = sorted(shapes), self._rates[name]
        torch.manual_seed(self.seed)
        model = digits_mfm(shapes, int(self.train.labels.max()) + 1, generative=False)
        model.to(self.test.labels.device)
        generator = torch.Generator().manual_seed(self.seed + 2)
        val_mask = random_presence(names, len(self.validation), rate, generator=generator)
        val_mask = {m: p.to(self.test.labels.device) for m, p in val_mask.items()}
        fit(
            model,
            label_loss,
            self.train,
            Split(self.validation.views, self.validation.labels, val_mask),
            train_presence=lambda b, g: random_presence(names, b, rate, generator=g),
            predict=logits_of(model),
            description=f"{name} disc",
            **self.fit_kwargs,
        )
        return accuracy(logits_of(model), Split(self.test.views, self.test.labels, present))


def _accuracy(logits: Tensor, labels: Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean())


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")
