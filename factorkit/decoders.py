"""Modality decoders F_m(F_a_m, F_y) -> X_hat_m: reconstruct a modality from its factors.

Every decoder is called as ``decoder(private, shared, *, mask=None)``: the modality's
private factor, the shared factor and, for sequence decoders, the (B, T) mask of the
steps to generate. :class:`ModalityDecoders` holds one decoder per modality, of any kind.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any, cast

import torch
from einops import rearrange
from torch import Tensor, nn

from factorkit._grouped import GroupedMLP
from factorkit._layers import mlp
from factorkit._validation import (
    RecordsModalities,
    check_modality_names,
    check_size,
    check_tensor,
)
from factorkit.latents import FactorizedLatents

__all__ = ["ImageDecoder", "ModalityDecoders", "VectorDecoder"]


def _join_factors(
    decoder: nn.Module, private: Tensor, shared: Tensor, private_size: int, shared_size: int
) -> Tensor:
    """Check both factors against the decoder (shape, dtype, device) and concatenate them."""
    if private.dim() != 2 or private.shape[1] != private_size:
        raise ValueError(
            f"expected a private factor of shape (B, {private_size}), got {tuple(private.shape)}"
        )
    if shared.dim() != 2 or shared.shape != (private.shape[0], shared_size):
        raise ValueError(
            f"expected a shared factor of shape ({private.shape[0]}, {shared_size}), "
            f"got {tuple(shared.shape)}"
        )
    check_tensor(private, decoder, "private factor")
    check_tensor(shared, decoder, "shared factor")
    return torch.cat([private, shared], dim=1)


class VectorDecoder(nn.Module):
    """MLP decoder for a vector modality: X_hat = MLP(concat(F_a, F_y)).

    Args:
        private_size: size of the private factor F_a.
        shared_size: size of the shared factor F_y.
        output_size: D, the modality's feature size.
        hidden_sizes: hidden widths (default: one layer of ``max(64, output_size)``).
        dropout: dropout after every hidden activation.

    Shapes:
        private: (B, Fa). shared: (B, Fy). Returns: (B, D).

    Examples:
        >>> dec = VectorDecoder(private_size=4, shared_size=8, output_size=10)
        >>> dec(torch.randn(3, 4), torch.randn(3, 8)).shape
        torch.Size([3, 10])
    """

    def __init__(
        self,
        private_size: int,
        shared_size: int,
        output_size: int,
        *,
        hidden_sizes: Sequence[int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.private_size = check_size(private_size, "private_size")
        self.shared_size = check_size(shared_size, "shared_size")
        self.output_size = check_size(output_size, "output_size")
        hidden = [check_size(w, "hidden size") for w in hidden_sizes or [max(64, output_size)]]
        self.dropout = dropout
        self.net = mlp([private_size + shared_size, *hidden, output_size], dropout=dropout)

    def forward(self, private: Tensor, shared: Tensor, *, mask: Tensor | None = None) -> Tensor:
        """Reconstruct the modality from its private and the shared factor.

        ``mask`` (per-step, for sequence decoders) is accepted for the common decoder
        interface and unused: a vector has no steps.
        """
        joined = _join_factors(self, private, shared, self.private_size, self.shared_size)
        out: Tensor = self.net(joined)
        return out

    def linears(self) -> list[nn.Linear]:
        """The MLP's linear layers, input first (what :class:`ModalityDecoders` groups)."""
        return [layer for layer in self.net if isinstance(layer, nn.Linear)]


class ImageDecoder(nn.Module):
    """Convolutional decoder for an image modality (B, C, H, W).

    concat(F_a, F_y) -> Linear -> a (channels[0], h0, w0) map -> one stride-2 transposed
    convolution per entry of ``channels`` (each doubles the size) -> 3x3 convolution to C
    channels -> centre crop to (H, W). h0 = ceil(H / 2^k), w0 = ceil(W / 2^k) for k
    upsampling stages, so any H, W is reached without interpolation. Stage i maps
    ``channels[i]`` to ``channels[i + 1]`` channels (the last stage keeps its width);
    every convolution is preceded by a ReLU.

    Args:
        private_size: size of the private factor F_a.
        shared_size: size of the shared factor F_y.
        output_shape: (C, H, W) of the modality.
        channels: channels before each upsampling stage, positive (default ``(64, 32)``:
            two stages).

    Shapes:
        private: (B, Fa). shared: (B, Fy). Returns: (B, C, H, W).

    Examples:
        >>> dec = ImageDecoder(private_size=4, shared_size=8, output_shape=(1, 16, 15))
        >>> dec(torch.randn(2, 4), torch.randn(2, 8)).shape
        torch.Size([2, 1, 16, 15])
    """

    def __init__(
        self,
        private_size: int,
        shared_size: int,
        output_shape: tuple[int, int, int],
        *,
        channels: Sequence[int] = (64, 32),
    ) -> None:
        super().__init__()
        if len(output_shape) != 3:
            raise ValueError(f"output_shape must be (C, H, W), got {tuple(output_shape)}")
        if not channels:
            raise ValueError("channels needs at least one entry")
        channels = [
            check_size(width, f"channels entries (got {list(channels)})") for width in channels
        ]
        self.private_size = check_size(private_size, "private_size")
        self.shared_size = check_size(shared_size, "shared_size")
        c, h, w = (check_size(v, "output_shape entries") for v in output_shape)
        self.output_shape = (c, h, w)
        scale = 2 ** len(channels)
        self.base = (channels[0], math.ceil(h / scale), math.ceil(w / scale))
        self.project = nn.Linear(private_size + shared_size, math.prod(self.base))
        stages: list[nn.Module] = []
        widths = [*channels, channels[-1]]
        for width_in, width_out in itertools.pairwise(widths):
            stages += [nn.ReLU(), nn.ConvTranspose2d(width_in, width_out, 4, stride=2, padding=1)]
        stages += [nn.ReLU(), nn.Conv2d(widths[-1], c, 3, padding=1)]
        self.upsample = nn.Sequential(*stages)

    def forward(self, private: Tensor, shared: Tensor, *, mask: Tensor | None = None) -> Tensor:
        """Reconstruct the image from its private and the shared factor.

        ``mask`` (per-step, for sequence decoders) is accepted for the common decoder
        interface and unused: an image has no steps.
        """
        joined = _join_factors(self, private, shared, self.private_size, self.shared_size)
        x = self.project(joined)
        c0, h0, w0 = self.base
        x = self.upsample(rearrange(x, "b (c h w) -> b c h w", c=c0, h=h0, w=w0))
        _, h, w = self.output_shape
        top, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
        image: Tensor = x[:, :, top : top + h, left : left + w]
        return image


class ModalityDecoders(RecordsModalities):
    """One decoder per modality, of any kind: X_hat_m = F_m(F_a_m, F_y).

    Each decoder is called as ``decoder(private, shared)``, with ``mask=`` added when a
    per-step mask is given (sequence decoders). Vector decoders
    (:class:`VectorDecoder`) of equal dropout are merged into one batched MLP: the layers
    of equal size across modalities run as one matmul, so the cost stops growing with the
    number of modalities in kernel launches. The merged MLP takes over their weights at
    construction (the same functions; the given :class:`VectorDecoder` objects are no
    longer used). Every other decoder (:class:`ImageDecoder`,
    :class:`~factorkit.SequenceDecoder`, the user's own) runs as given.

    Args:
        decoders: modality name -> a module called as ``decoder(private, shared, *,
            mask=None)``.

    Shapes:
        factors.shared: (B, Fy), factors.private[m]: (B, Fa_m). mask: (B, T) bool.
        Returns: modality name -> X_hat_m with that modality's shape.

    Examples:
        >>> decs = ModalityDecoders({"a": VectorDecoder(4, 8, 5), "b": VectorDecoder(4, 8, 3)})
        >>> private = {"a": torch.randn(2, 4), "b": torch.randn(2, 4)}
        >>> f = FactorizedLatents(torch.randn(2, 8), private)
        >>> {m: tuple(x.shape) for m, x in decs(f).items()}
        {'a': (2, 5), 'b': (2, 3)}
    """

    def __init__(self, decoders: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.modalities = check_modality_names(decoders.keys())
        by_dropout: dict[float, list[str]] = {}
        for m in self.modalities:
            if type(decoders[m]) is VectorDecoder:
                by_dropout.setdefault(cast(VectorDecoder, decoders[m]).dropout, []).append(m)
        groups = [names for names in by_dropout.values() if len(names) > 1]
        grouped = {m for names in groups for m in names}
        self.decoders = nn.ModuleDict({m: decoders[m] for m in self.modalities if m not in grouped})
        self.vector_groups = nn.ModuleList(
            GroupedMLP.from_linears(
                {m: cast(VectorDecoder, decoders[m]).linears() for m in names},
                dropout=cast(VectorDecoder, decoders[names[0]]).dropout,
            )
            for names in groups
        )
        self._factor_sizes = {
            m: (
                cast(VectorDecoder, decoders[m]).private_size,
                cast(VectorDecoder, decoders[m]).shared_size,
            )
            for m in grouped
        }
        self._record = {m: _describe(decoders[m]) for m in self.modalities}

    def modality_record(self) -> dict[str, Any]:
        """Each modality's decoder kind and sizes (checked when a checkpoint loads)."""
        return self._record

    def forward(
        self, factors: FactorizedLatents, *, mask: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Reconstruct every modality: X_hat_m = F_m(F_a_m, F_y), keyed by modality name."""
        if factors.modalities != self.modalities:
            raise ValueError(
                f"factors have modalities {list(factors.modalities)}, "
                f"decoders were built for {list(self.modalities)}"
            )
        out: dict[str, Tensor] = {}
        for group in self.vector_groups:
            mlps = cast(GroupedMLP, group)
            inputs = {
                m: self._join(m, mlps, factors.private[m], factors.shared) for m in mlps.widths
            }
            out.update(mlps(inputs))
        for m in self.decoders:
            out[m] = self.decode(m, factors.private[m], factors.shared, mask=mask)
        return {m: out[m] for m in self.modalities}

    def decode(
        self, name: str, private: Tensor, shared: Tensor, *, mask: Tensor | None = None
    ) -> Tensor:
        """Reconstruct one modality alone, e.g. for its Jacobian.

        Shapes:
            private: (B, Fa_m). shared: (B, Fy). mask: (B, T) bool.
            Returns: X_hat_m with that modality's shape.
        """
        if name not in self.modalities:
            raise ValueError(f"no decoder for modality {name!r}; have {list(self.modalities)}")
        for group in self.vector_groups:
            mlps = cast(GroupedMLP, group)
            if name in mlps.widths:
                return mlps.forward_one(name, self._join(name, mlps, private, shared))
        extra = {} if mask is None else {"mask": mask}
        try:
            out: Tensor = self.decoders[name](private, shared, **extra)
        except ValueError as err:
            raise ValueError(f"modality {name!r}: {err}") from None
        return out

    def _join(self, name: str, mlps: GroupedMLP, private: Tensor, shared: Tensor) -> Tensor:
        private_size, shared_size = self._factor_sizes[name]
        try:
            return _join_factors(mlps, private, shared, private_size, shared_size)
        except ValueError as err:
            raise ValueError(f"modality {name!r}: {err}") from None


def _describe(decoder: nn.Module) -> dict[str, Any]:
    """A decoder's kind and the sizes a checkpoint of it must match."""
    record: dict[str, Any] = {"kind": type(decoder).__name__}
    for attribute in ("private_size", "shared_size", "output_size", "output_shape"):
        value = getattr(decoder, attribute, None)
        if isinstance(value, int | tuple):
            record[attribute] = list(value) if isinstance(value, tuple) else value
    return record
