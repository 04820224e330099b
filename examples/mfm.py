"""The digits' MFM: its view encoders and sizes, composed with factorkit's recipe.

Per-view encoders (an MLP for vector views, a small CNN for image views) ->
:class:`~factorkit.FactorizedHead` -> :class:`~factorkit.FactorGenerators` ->
:class:`~factorkit.Predictor` and one decoder per view in
:class:`~factorkit.ModalityDecoders`, wired by :class:`~factorkit.MFM` and trained with
:func:`~factorkit.mfm_loss`::

    label loss + sum_m lambda_m * reconstruction_m + lambda_mmd * sum_Z MMD(Z, prior)

``digits_mfm(..., generative=False)`` is the discriminative baseline: the same encoders
and fusion, no private codes, no decoders, no MMD.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from torch import Tensor, nn

from factorkit import (
    MFM,
    FactorGenerators,
    FactorizedHead,
    ImageDecoder,
    ModalityDecoders,
    Predictor,
    VectorDecoder,
)

__all__ = ["ViewEncoder", "digits_mfm", "logits_of"]

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


def digits_mfm(
    view_shapes: Mapping[str, ViewShape],
    num_classes: int,
    *,
    generative: bool = True,
    encoder_size: int = 128,
    shared_size: int = 32,
    private_size: int = 8,
    factor_size: int = 64,
    decoder_hidden: int = 64,
    dropout: float = 0.5,
) -> MFM:
    """The MFM of the digits example (``generative=False``: its discriminative baseline).

    Args:
        view_shapes: view name -> per-sample shape, (D,) or (C, H, W).
        num_classes: K.
        generative: build the private codes and decoders (the MFM) or not (the
            discriminative baseline with the same encoders, fusion and predictor).
        encoder_size: output size of every view encoder.
        shared_size: size of the shared code Z_y.
        private_size: size of each private code Z_a_m.
        factor_size: size of every factor F (the generators' outputs).
        decoder_hidden: hidden width of the vector decoders.
        dropout: dropout in encoders, fusion, generators and predictor.
    """
    names = sorted(view_shapes)
    encoders = {m: ViewEncoder(view_shapes[m], encoder_size, dropout=dropout) for m in names}
    head = FactorizedHead(
        dict.fromkeys(names, encoder_size),
        shared_size=shared_size,
        private_size=private_size if generative else None,
        encoders=encoders,
        dropout=dropout,
    )
    generators = FactorGenerators.for_head(head, factor_size=factor_size, dropout=dropout)
    decoders = None
    if generative:
        decoders = ModalityDecoders(
            {m: _decoder(view_shapes[m], factor_size, decoder_hidden) for m in names}
        )
    return MFM(head, generators, decoders, Predictor(factor_size, num_classes, dropout=dropout))


def _decoder(shape: ViewShape, factor_size: int, decoder_hidden: int) -> nn.Module:
    if len(shape) == 3:
        return ImageDecoder(factor_size, factor_size, (shape[0], shape[1], shape[2]))
    return VectorDecoder(factor_size, factor_size, shape[0], hidden_sizes=[decoder_hidden])


def logits_of(model: MFM) -> Callable[[Mapping[str, Tensor], Mapping[str, Tensor] | None], Tensor]:
    """``(views, present) -> class logits`` of a model (the decoders are skipped)."""
    return lambda views, present: model.predict(model.encode(views, present))
