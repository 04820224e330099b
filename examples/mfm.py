"""The full Multimodal Factorization Model (MFM), composed from factorkit's blocks.

Per-modality encoders -> :class:`~factorkit.FactorizedHead` (shared code Z_y from all
modalities, private code Z_a_m from modality m) -> :class:`~factorkit.FactorGenerators`
(F = G(Z)) -> :class:`~factorkit.Predictor` (Y_hat = D(F_y)) and one decoder per modality
(X_hat_m = F_m(F_a_m, F_y)). The objective, :func:`mfm_objective`, reads like the paper:

    label loss + sum_m lambda_m * reconstruction_m + lambda_mmd * sum_Z MMD(Z, prior)

:class:`Discriminative` is the baseline with the same encoders and no generative part.
Vector views are (B, D); image views (B, C, H, W) get a small CNN encoder and an
:class:`~factorkit.ImageDecoder`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from factorkit import (
    ConcatFusion,
    FactorGenerator,
    FactorGenerators,
    FactorizedHead,
    FactorizedLatents,
    ImageDecoder,
    MMDPriorLoss,
    ModalityDecoders,
    Predictor,
    VectorDecoder,
    VectorDecoders,
    fill_absent,
    reconstruction_loss,
)

__all__ = ["MFM", "Discriminative", "MFMOutput", "ViewEncoder", "encode_views", "mfm_objective"]

ViewShape = tuple[int, ...]


class ViewEncoder(nn.Module):
    """Encoder of one view: an MLP for vectors (D,), a small CNN for images (C, H, W).

    Shapes:
        x: (B, D) or (B, C, H, W). Returns: (B, output_size).
    """

    def __init__(self, shape: ViewShape, output_size: int, *, dropout: float = 0.0) -> None:
        super().__init__()
        if len(shape) == 1:
            self.net: nn.Module = nn.Sequential(
                nn.Linear(shape[0], output_size), nn.ReLU(), nn.Dropout(dropout)
            )
        elif len(shape) == 3:
            c, h, w = shape
            self.net = nn.Sequential(
                nn.Conv2d(c, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.Flatten(),
                nn.Linear(32 * h * w, output_size),
                nn.ReLU(),
                nn.Dropout(dropout),
            )
        else:
            raise ValueError(f"view shape must be (D,) or (C, H, W), got {shape}")

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net(x)
        return out


def view_encoders(
    view_shapes: Mapping[str, ViewShape], output_size: int, *, dropout: float
) -> nn.ModuleDict:
    """One :class:`ViewEncoder` per view, keyed (and ordered) by view name."""
    return nn.ModuleDict(
        {m: ViewEncoder(view_shapes[m], output_size, dropout=dropout) for m in sorted(view_shapes)}
    )


def encode_views(
    encoders: nn.ModuleDict, views: Mapping[str, Tensor], present: Mapping[str, Tensor] | None
) -> dict[str, Tensor]:
    """Each view through its own encoder (absent samples as zeros).

    Shapes:
        views[m]: (B, D_m) or (B, C, H, W). present[m]: (B,) bool. Returns: (B, E) each.
    """
    # Absent inputs are zeroed before the encoder so NaN placeholders cannot reach any
    # gradient; the head then masks the encoder outputs as well.
    return {
        m: enc(views[m] if present is None else fill_absent(views[m], present[m]))
        for m, enc in encoders.items()
    }


class MFMOutput(NamedTuple):
    """Everything the MFM objective and the diagnostics need from one forward pass.

    Attributes:
        latents: the codes Z (shared and private).
        factors: the factors F = G(Z).
        logits: class logits from the shared factor, (B, K).
        reconstructions: view name -> X_hat with the view's shape.
    """

    latents: FactorizedLatents
    factors: FactorizedLatents
    logits: Tensor
    reconstructions: dict[str, Tensor]


class MFM(nn.Module):
    """The Multimodal Factorization Model for vector and image views.

    Args:
        view_shapes: view name -> per-sample shape, (D,) or (C, H, W).
        num_classes: K.
        encoder_size: output size of every view encoder.
        shared_size: size of the shared code Z_y.
        private_size: size of each private code Z_a_m.
        factor_size: size of every factor F (the generators' outputs).
        decoder_hidden: hidden width of the vector decoders.
        dropout: dropout in encoders, generators and predictor.
    """

    def __init__(
        self,
        view_shapes: Mapping[str, ViewShape],
        num_classes: int,
        *,
        encoder_size: int = 128,
        shared_size: int = 32,
        private_size: int = 8,
        factor_size: int = 64,
        decoder_hidden: int = 64,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        names = sorted(view_shapes)
        self.encoders = view_encoders(view_shapes, encoder_size, dropout=dropout)
        self.head = FactorizedHead(
            dict.fromkeys(names, encoder_size),
            shared_size=shared_size,
            private_size=private_size,
            dropout=dropout,
        )
        self.generators = FactorGenerators.for_head(
            self.head, factor_size=factor_size, dropout=dropout
        )
        self.decoders: VectorDecoders | ModalityDecoders
        if all(len(view_shapes[m]) == 1 for m in names):
            # All-vector data: one grouped module, the hidden layers batched across views.
            self.decoders = VectorDecoders(
                {m: view_shapes[m][0] for m in names},
                private_size=factor_size,
                shared_size=factor_size,
                hidden_sizes=[decoder_hidden],
            )
        else:
            self.decoders = ModalityDecoders(
                {m: _decoder(view_shapes[m], factor_size, decoder_hidden) for m in names}
            )
        self.predictor = Predictor(factor_size, num_classes, dropout=dropout)

    def forward(
        self, views: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> MFMOutput:
        latents = self.head(encode_views(self.encoders, views, present), present)
        return self.decode(latents)

    def decode(self, latents: FactorizedLatents) -> MFMOutput:
        """Generators, predictor and decoders applied to given codes (e.g. surrogate ones)."""
        factors = self.generators(latents)
        return MFMOutput(latents, factors, self.predictor(factors.shared), self.decoders(factors))

    def predict(
        self, views: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Class logits only (the decoders are skipped)."""
        latents = self.head(encode_views(self.encoders, views, present), present)
        return self.predictor(self.generators.generate("shared", latents.shared))


def _decoder(shape: ViewShape, factor_size: int, decoder_hidden: int) -> nn.Module:
    if len(shape) == 3:
        return ImageDecoder(factor_size, factor_size, (shape[0], shape[1], shape[2]))
    return VectorDecoder(factor_size, factor_size, shape[0], hidden_sizes=[decoder_hidden])


class Discriminative(nn.Module):
    """The purely discriminative baseline: the same encoders, fusion and predictor.

    No private codes, decoders or MMD: view encoders -> :class:`~factorkit.ConcatFusion`
    -> :class:`~factorkit.FactorGenerator` -> :class:`~factorkit.Predictor`. With one
    view it is that view's unimodal classifier.
    """

    def __init__(
        self,
        view_shapes: Mapping[str, ViewShape],
        num_classes: int,
        *,
        encoder_size: int = 128,
        shared_size: int = 32,
        factor_size: int = 64,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        names = sorted(view_shapes)
        self.encoders = view_encoders(view_shapes, encoder_size, dropout=dropout)
        self.fusion = ConcatFusion(dict.fromkeys(names, encoder_size), shared_size, dropout=dropout)
        self.generator = FactorGenerator(shared_size, factor_size, dropout=dropout)
        self.predictor = Predictor(factor_size, num_classes, dropout=dropout)

    def predict(
        self, views: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Class logits, (B, K)."""
        features = encode_views(self.encoders, views, present)
        out: Tensor = self.predictor(self.generator(self.fusion(features, present)))
        return out

    forward = predict


def mfm_objective(
    out: MFMOutput,
    views: Mapping[str, Tensor],
    labels: Tensor,
    present: Mapping[str, Tensor] | None,
    *,
    lambda_x: float | Mapping[str, float],
    lambda_mmd: float,
    prior: MMDPriorLoss,
) -> dict[str, Tensor]:
    """The MFM loss and its terms (the paper's objective, classification version).

    Returns:
        ``"total"`` (the weighted sum), ``"label"``, and the unweighted terms
        ``"recon/<view>"`` for every view and ``"mmd/<latent>"`` for every latent.
    """
    weights = lambda_x if isinstance(lambda_x, Mapping) else dict.fromkeys(views, lambda_x)
    label = F.cross_entropy(out.logits, labels)
    _, recon = reconstruction_loss(out.reconstructions, views, present, per_modality=True)
    mmd = prior.per_latent(out.latents)
    total = label + sum(weights[m] * recon[m] for m in recon) + lambda_mmd * sum(mmd.values())
    return {
        "total": total,
        "label": label,
        **{f"recon/{m}": term for m, term in recon.items()},
        **{f"mmd/{name}": term for name, term in mmd.items()},
    }
