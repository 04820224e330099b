"""The MFM recipe: the generic wiring of the Multimodal Factorization Model and its objective.

:class:`MFM` composes injected networks, the way the paper draws them::

    inputs -> encoder -> latents Z (Z_y shared, Z_a_m private)
           -> generators -> factors F = G(Z)
           -> predictor D(F_y) = Y_hat,  decoders F_m(F_a_m, F_y) = X_hat_m

and :func:`mfm_loss` / :class:`MFMLoss` is the paper's objective::

    label loss(Y_hat, Y) + sum_m lambda_x[m] * MSE(X_m, X_hat_m) + lambda_mmd * sum_Z MMD(Z, prior)

with the reconstruction over the present samples (and valid steps) only and one MMD term
per latent. Every network is the caller's choice; factorkit's blocks fit by default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from factorkit._validation import SHARED, check_names
from factorkit.latents import FactorizedLatents
from factorkit.mmd_loss import MMDPriorLoss
from factorkit.reconstruction import reconstruction_loss

__all__ = ["MFM", "MFMLoss", "MFMOutput", "mfm_loss"]

LabelLoss = Literal["cross_entropy", "l1"] | Callable[[Tensor, Tensor], Tensor]


class MFMOutput(NamedTuple):
    """Everything the objective and the diagnostics need from one pass of an :class:`MFM`.

    Attributes:
        latents: the codes Z (shared and private), with the presence mask.
        factors: the factors F = G(Z).
        reconstructions: modality name -> X_hat_m; ``None`` for a model without decoders.
        prediction: Y_hat = D(F_y): class logits or regression values.

    Shapes:
        latents.shared: (B, Dy), latents.private[m]: (B, Da_m). factors: (B, F) each.
        reconstructions[m]: the modality's shape. prediction: (B, K).
    """

    latents: FactorizedLatents
    factors: FactorizedLatents
    reconstructions: dict[str, Tensor] | None
    prediction: Tensor


class MFM(nn.Module):
    """The Multimodal Factorization Model, every network injected.

    Args:
        encoder: inputs -> latents: a module called as ``encoder(inputs, present)``
            (with ``mask=`` added when a per-step mask is given) that returns
            :class:`~factorkit.FactorizedLatents`, e.g. a
            :class:`~factorkit.FactorizedHead` over the user's ``encoders``, or a
            :class:`~factorkit.FactorizedEncoder` (separate shared and private networks,
            such as an MFN and sequence encoders).
        generators: latents -> factors, e.g. :class:`~factorkit.FactorGenerators`.
        decoders: factors -> reconstructions by modality, called as ``decoders(factors)``
            (with ``mask=`` when given), e.g. :class:`~factorkit.ModalityDecoders`;
            ``None`` for the discriminative baseline with the same encoder (no
            reconstructions; :func:`mfm_loss` is then the label loss alone).
        predictor: shared factor -> prediction, e.g. :class:`~factorkit.Predictor` (whose
            ``offset`` adds a regression label offset such as the mean training label).

    :meth:`predict` and :meth:`decode` take latents from anywhere: a surrogate's codes
    for missing modalities (``model.decode(complete_latents(z, surrogate(x, present)))``),
    recombined codes of a probe, or the user's own.

    Export: an MFM built from factorkit's blocks, and the inference path with a
    :class:`~factorkit.SurrogateInference` (encode, infer the missing codes, complete,
    decode), export with :func:`torch.export.export` and a dynamic batch size
    (``torch.export.Dim("batch", min=1)`` on dimension 0 of every input and mask); the
    exported program gives the eager outputs. The checks that read values on the host
    are left out of the exported program, as under :func:`torch.compile`: the
    surrogate's "every modality missing" error and the ``check_finite`` options (such
    rows then get the documented fallback values instead of an error). Shape, name and
    dtype checks run at export time and are fixed into the program's input guards.

    Shapes:
        inputs[m]: (B, ...) as the encoder takes them. present[m]: (B,) bool. mask: (B,
        T) bool. Returns: :class:`MFMOutput`.

    Examples:
        >>> head = FactorizedHead({"a": 6, "b": 3}, shared_size=4, private_size=2)
        >>> model = MFM(
        ...     head,
        ...     FactorGenerators.for_head(head, factor_size=8),
        ...     ModalityDecoders({"a": VectorDecoder(8, 8, 6), "b": VectorDecoder(8, 8, 3)}),
        ...     Predictor(8, 5),
        ... )
        >>> out = model({"a": torch.randn(2, 6), "b": torch.randn(2, 3)})
        >>> out.prediction.shape, out.reconstructions["b"].shape
        (torch.Size([2, 5]), torch.Size([2, 3]))
    """

    def __init__(
        self,
        encoder: nn.Module,
        generators: nn.Module,
        decoders: nn.Module | None,
        predictor: nn.Module,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.generators = generators
        self.decoders = decoders
        self.predictor = predictor

    @property
    def generative(self) -> bool:
        """Whether the model has decoders (``False``: the discriminative baseline)."""
        return self.decoders is not None

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        present: Mapping[str, Tensor] | None = None,
        *,
        mask: Tensor | None = None,
    ) -> MFMOutput:
        """Encode, generate, predict and decode: the full pass of the MFM."""
        return self.decode(self.encode(inputs, present, mask=mask), mask=mask)

    def encode(
        self,
        inputs: Mapping[str, Tensor],
        present: Mapping[str, Tensor] | None = None,
        *,
        mask: Tensor | None = None,
    ) -> FactorizedLatents:
        """The latents Z of the inputs (the encoder alone).

        Shapes:
            inputs[m]: (B, ...). present[m]: (B,) bool. mask: (B, T) bool.
            Returns: shared (B, Dy), private[m] (B, Da_m).
        """
        extra = {} if mask is None else {"mask": mask}
        latents = self.encoder(inputs, present, **extra)
        if not isinstance(latents, FactorizedLatents):
            raise TypeError(
                f"the encoder must return FactorizedLatents, got {type(latents).__name__}"
            )
        return latents

    def decode(self, latents: FactorizedLatents, *, mask: Tensor | None = None) -> MFMOutput:
        """Generators, predictor and decoders applied to given latents.

        Shapes:
            latents.shared: (B, Dy), latents.private[m]: (B, Da_m). mask: (B, T) bool.
            Returns: :class:`MFMOutput`.
        """
        factors: FactorizedLatents = self.generators(latents)
        prediction: Tensor = self.predictor(factors.shared)
        reconstructions = None
        if self.decoders is not None:
            extra = {} if mask is None else {"mask": mask}
            reconstructions = dict(self.decoders(factors, **extra))
        return MFMOutput(latents, factors, reconstructions, prediction)

    def predict(self, latents: FactorizedLatents) -> Tensor:
        """The prediction D(G_y(Z_y)) of given latents (the decoders are skipped).

        With generators that can generate one latent alone (``generate(name, z)``, as
        :class:`~factorkit.FactorGenerators`), only the shared factor is computed.

        Shapes:
            latents.shared: (B, Dy). Returns: (B, K).
        """
        generate = getattr(self.generators, "generate", None)
        if callable(generate):
            shared: Tensor = generate(SHARED, latents.shared)
        else:
            shared = self.generators(latents).shared
        out: Tensor = self.predictor(shared)
        return out


def mfm_loss(
    output: MFMOutput,
    targets: Mapping[str, Tensor],
    labels: Tensor,
    *,
    mask: Tensor | None = None,
    label_loss: LabelLoss = "cross_entropy",
    lambda_x: float | Mapping[str, float] = 1.0,
    lambda_mmd: float = 10.0,
    prior: MMDPriorLoss | None = None,
    check_finite: bool = True,
) -> dict[str, Tensor]:
    """The MFM objective and its terms, for a training loop to minimise and log.

    ``label loss + sum_m lambda_x[m] * reconstruction_m + lambda_mmd * sum_Z MMD(Z, prior)``:
    each reconstruction term is the MSE over the samples where modality m is present
    (``output.latents.present``) and, with ``mask``, the valid steps only
    (:func:`~factorkit.reconstruction_loss`); one MMD term per latent, each over the
    samples where that latent was inferred (:meth:`~factorkit.MMDPriorLoss.per_latent`).
    A term whose weight is 0 is left out. For the output of a model without decoders
    (the discriminative baseline) the objective is the label loss alone.

    The defaults are the paper's (cross-entropy for classes, L1 for regression;
    ``lambda_x = 1``, ``lambda_mmd = 10`` from the reference grid 10-200; the MMD with a
    Gaussian kernel exp(-||x - y||^2 / d^2) and the biased estimator against N(0, I)).

    Args:
        output: the :class:`MFMOutput` of the batch.
        targets: modality name -> X_m, what the decoders reconstruct (usually the
            inputs); absent rows may hold anything.
        labels: class indices for ``"cross_entropy"``; values shaped like the
            prediction (or with its trailing size-1 dimension dropped) for ``"l1"``.
        mask: (B, T) per-step mask of sequence modalities, passed to
            :func:`~factorkit.reconstruction_loss`.
        label_loss: ``"cross_entropy"``, ``"l1"`` or any ``(prediction, labels) ->
            scalar`` callable.
        lambda_x: weight of the reconstruction terms: one for all, or by modality.
        lambda_mmd: weight of the MMD terms.
        prior: the MMD prior loss (default ``MMDPriorLoss()``: the paper's).
        check_finite: raise on NaN/inf in present targets or reconstructions (one
            host sync; see :func:`~factorkit.reconstruction_loss`).

    Returns:
        ``"total"`` (the weighted sum), ``"label"``, and the unweighted terms
        ``"reconstruction/<modality>"`` and ``"mmd/<latent>"`` (``"mmd/shared"`` first).

    Shapes:
        targets[m]: like ``output.reconstructions[m]``. labels: (B,) or like the
        prediction. mask: (B, T) bool. Returns: () each.
    """
    terms = {"label": _label_term(label_loss, output.prediction, labels)}
    total = terms["label"]
    if output.reconstructions is None:
        return {"total": total, **terms}
    names = sorted(output.reconstructions)
    weights = _weights(lambda_x, names)
    if any(weights.values()):
        extra: dict[str, Any] = {} if mask is None else {"mask": mask}
        weighted, recon = reconstruction_loss(
            output.reconstructions,
            targets,
            output.latents.present,
            weights=weights,
            per_modality=True,
            check_finite=check_finite,
            **extra,
        )
        total = total + weighted
        terms.update({f"reconstruction/{m}": term for m, term in recon.items()})
    if lambda_mmd:
        mmd = (prior or MMDPriorLoss()).per_latent(output.latents)
        total = total + lambda_mmd * sum(mmd.values())
        terms.update({f"mmd/{name}": term for name, term in mmd.items()})
    return {"total": total, **terms}


def _label_term(label_loss: LabelLoss, prediction: Tensor, labels: Tensor) -> Tensor:
    if label_loss == "cross_entropy":
        return F.cross_entropy(prediction, labels)
    if label_loss == "l1":
        if labels.shape != prediction.shape and labels.numel() == prediction.numel():
            labels = labels.reshape(prediction.shape)
        if labels.shape != prediction.shape:
            raise ValueError(
                f"l1 label loss: labels of shape {tuple(labels.shape)} do not match the "
                f"prediction's {tuple(prediction.shape)}"
            )
        return F.l1_loss(prediction, labels.to(prediction.dtype))
    if isinstance(label_loss, str):
        raise ValueError(
            f'label_loss must be "cross_entropy", "l1" or a callable, got {label_loss!r}'
        )
    return label_loss(prediction, labels)


def _weights(lambda_x: float | Mapping[str, float], names: list[str]) -> dict[str, float]:
    if isinstance(lambda_x, Mapping):
        check_names(lambda_x.keys(), names, "lambda_x modalities")
        return {m: float(lambda_x[m]) for m in names}
    return dict.fromkeys(names, float(lambda_x))


class MFMLoss(nn.Module):
    """Module form of :func:`mfm_loss`, holding the weights and the MMD prior.

    Args:
        label_loss: ``"cross_entropy"``, ``"l1"`` or a ``(prediction, labels) -> scalar``
            callable.
        lambda_x: weight of the reconstruction terms: one for all, or by modality.
        lambda_mmd: weight of the MMD terms.
        prior: the MMD prior loss (default ``MMDPriorLoss()``); under DDP,
            ``MMDPriorLoss(gather=True)`` computes the MMD of the global batch.
        check_finite: raise on NaN/inf in present targets or reconstructions.

    Shapes:
        targets[m]: like ``output.reconstructions[m]``. labels: (B,) or like the
        prediction. mask: (B, T) bool. Returns: () each.
    """

    def __init__(
        self,
        label_loss: LabelLoss = "cross_entropy",
        *,
        lambda_x: float | Mapping[str, float] = 1.0,
        lambda_mmd: float = 10.0,
        prior: MMDPriorLoss | None = None,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(label_loss, str) and label_loss not in ("cross_entropy", "l1"):
            raise ValueError(
                f'label_loss must be "cross_entropy", "l1" or a callable, got {label_loss!r}'
            )
        self.label_loss = label_loss
        self.lambda_x = lambda_x if not isinstance(lambda_x, Mapping) else dict(lambda_x)
        self.lambda_mmd = lambda_mmd
        self.prior = prior or MMDPriorLoss()
        self.check_finite = check_finite

    def forward(
        self,
        output: MFMOutput,
        targets: Mapping[str, Tensor],
        labels: Tensor,
        *,
        mask: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The objective and its terms; see :func:`mfm_loss`."""
        return mfm_loss(
            output,
            targets,
            labels,
            mask=mask,
            label_loss=self.label_loss,
            lambda_x=self.lambda_x,
            lambda_mmd=self.lambda_mmd,
            prior=self.prior,
            check_finite=self.check_finite,
        )

    def extra_repr(self) -> str:
        weights = f"lambda_x={self.lambda_x}, lambda_mmd={self.lambda_mmd}"
        return f"label_loss={self.label_loss!r}, {weights}"
