"""Modality decoders F_m(F_a_m, F_y) -> X_hat_m: reconstruct a modality from its factors."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
from einops import rearrange
from torch import Tensor, nn

from factorkit._layers import mlp
from factorkit._validation import check_modality_names, check_size, per_modality
from factorkit.grouped import GroupedMLP
from factorkit.latents import FactorizedLatents

__all__ = ["ImageDecoder", "ModalityDecoders", "VectorDecoder", "VectorDecoders"]


def _join_factors(private: Tensor, shared: Tensor, private_size: int, shared_size: int) -> Tensor:
    if private.dim() != 2 or private.shape[1] != private_size:
        raise ValueError(
            f"expected a private factor of shape (B, {private_size}), got {tuple(private.shape)}"
        )
    if shared.dim() != 2 or shared.shape != (private.shape[0], shared_size):
        raise ValueError(
            f"expected a shared factor of shape ({private.shape[0]}, {shared_size}), "
            f"got {tuple(shared.shape)}"
        )
    return torch.cat([private, shared], dim=1)


def _check_modalities(factors: FactorizedLatents, modalities: tuple[str, ...]) -> None:
    if factors.modalities != modalities:
        raise ValueError(
            f"factors have modalities {list(factors.modalities)}, "
            f"decoders were built for {list(modalities)}"
        )


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
        self.net = mlp([private_size + shared_size, *hidden, output_size], dropout=dropout)

    def forward(self, private: Tensor, shared: Tensor) -> Tensor:
        """Reconstruct the modality from its private and the shared factor."""
        out: Tensor = self.net(_join_factors(private, shared, self.private_size, self.shared_size))
        return out


class ImageDecoder(nn.Module):
    """Convolutional decoder for an image modality (B, C, H, W).

    concat(F_a, F_y) -> Linear -> a (channels[0], h0, w0) map -> one stride-2 transposed
    convolution per entry of ``channels`` (each doubles the size) -> 3x3 convolution to C
    channels -> centre crop to (H, W). h0 = ceil(H / 2^k), w0 = ceil(W / 2^k) for k
    upsampling stages, so any H, W is reached without interpolation.

    Args:
        private_size: size of the private factor F_a.
        shared_size: size of the shared factor F_y.
        output_shape: (C, H, W) of the modality.
        channels: channels before each upsampling stage (default ``(64, 32)``: two stages).

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

    def forward(self, private: Tensor, shared: Tensor) -> Tensor:
        """Reconstruct the image from its private and the shared factor."""
        x = self.project(_join_factors(private, shared, self.private_size, self.shared_size))
        c0, h0, w0 = self.base
        x = self.upsample(rearrange(x, "b (c h w) -> b c h w", c=c0, h=h0, w=w0))
        _, h, w = self.output_shape
        top, left = (x.shape[2] - h) // 2, (x.shape[3] - w) // 2
        image: Tensor = x[:, :, top : top + h, left : left + w]
        return image


class ModalityDecoders(nn.Module):
    """One decoder per modality, applied to factors: X_hat_m = F_m(F_a_m, F_y).

    Args:
        decoders: modality name -> a module called as ``decoder(private, shared)``
            (e.g. :class:`VectorDecoder`, :class:`ImageDecoder`).

    Shapes:
        factors.shared: (B, Fy), factors.private[m]: (B, Fa_m).
        Returns: modality name -> X_hat_m with that modality's shape.
    """

    def __init__(self, decoders: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.modalities = check_modality_names(decoders.keys())
        self.decoders = nn.ModuleDict({m: decoders[m] for m in self.modalities})

    def forward(self, factors: FactorizedLatents) -> dict[str, Tensor]:
        """Reconstruct every modality: X_hat_m = F_m(F_a_m, F_y), keyed by modality name."""
        _check_modalities(factors, self.modalities)
        out = {}
        for m in self.modalities:
            try:
                out[m] = self.decoders[m](factors.private[m], factors.shared)
            except ValueError as err:
                raise ValueError(f"modality {m!r}: {err}") from None
        return out


class VectorDecoders(nn.Module):
    """A :class:`VectorDecoder` for every vector modality, run together.

    X_hat_m = MLP_m(concat(F_a_m, F_y)), the same functions as
    ``ModalityDecoders({m: VectorDecoder(...)})``, held in one
    :class:`~factorkit.GroupedMLP`: the layers of equal size across modalities (all
    hidden layers when the widths agree) run as one batched matmul, so the cost stops
    growing with the number of modalities in kernel launches.

    Args:
        output_sizes: modality name -> D_m, its feature size.
        private_size: size of the private factors F_a_m, one for all or per modality.
        shared_size: size of the shared factor F_y.
        hidden_sizes: hidden widths of every decoder (default: one layer of
            ``max(64, D_m)``, as :class:`VectorDecoder`).
        dropout: dropout after every hidden activation.

    Shapes:
        factors.shared: (B, Fy), factors.private[m]: (B, Fa_m).
        Returns: modality name -> X_hat_m, (B, D_m).

    Examples:
        >>> decs = VectorDecoders({"a": 5, "b": 3}, private_size=4, shared_size=8)
        >>> private = {"a": torch.randn(2, 4), "b": torch.randn(2, 4)}
        >>> f = FactorizedLatents(torch.randn(2, 8), private)
        >>> {m: tuple(x.shape) for m, x in decs(f).items()}
        {'a': (2, 5), 'b': (2, 3)}
    """

    def __init__(
        self,
        output_sizes: Mapping[str, int],
        *,
        private_size: int | Mapping[str, int],
        shared_size: int,
        hidden_sizes: Sequence[int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.modalities = check_modality_names(output_sizes.keys())
        self.output_sizes = per_modality(dict(output_sizes), self.modalities, "output_sizes")
        self.private_sizes = per_modality(private_size, self.modalities, "private_size")
        self.shared_size = check_size(shared_size, "shared_size")
        widths = {}
        for m in self.modalities:
            hidden = [
                check_size(w, "hidden size")
                for w in hidden_sizes or [max(64, self.output_sizes[m])]
            ]
            widths[m] = [self.private_sizes[m] + shared_size, *hidden, self.output_sizes[m]]
        self.mlps = GroupedMLP(widths, dropout=dropout)

    def forward(self, factors: FactorizedLatents) -> dict[str, Tensor]:
        """Reconstruct every modality from its private and the shared factor."""
        _check_modalities(factors, self.modalities)
        inputs = {}
        for m in self.modalities:
            try:
                inputs[m] = _join_factors(
                    factors.private[m], factors.shared, self.private_sizes[m], self.shared_size
                )
            except ValueError as err:
                raise ValueError(f"modality {m!r}: {err}") from None
        out: dict[str, Tensor] = self.mlps(inputs)
        return out

    def decode(self, name: str, private: Tensor, shared: Tensor) -> Tensor:
        """Reconstruct one modality alone (what :class:`VectorDecoder` does for one).

        Shapes:
            private: (B, Fa_m). shared: (B, Fy). Returns: (B, D_m).
        """
        if name not in self.output_sizes:
            raise ValueError(f"no decoder for modality {name!r}; have {list(self.modalities)}")
        joined = _join_factors(private, shared, self.private_sizes[name], self.shared_size)
        return self.mlps.forward_one(name, joined)
