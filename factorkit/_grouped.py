"""Independent per-modality MLPs run together: one batched matmul per layer and size group.

Private: the blocks that hold per-modality MLPs (:class:`~factorkit.FactorizedHead`,
:class:`~factorkit.FactorGenerators`, :class:`~factorkit.ModalityDecoders`) group their
members with it internally; it is not part of the public API.

An MFM has one small network per latent or modality (private encoders, generators,
decoders). Run one by one, each costs a handful of tiny matmuls whose fixed per-call
overhead dominates at the batch sizes MFM trains with. :class:`GroupedMLP` keeps one
independent MLP per name but stores the weights of all MLPs with identical widths
stacked, ``(G, in, out)``, and evaluates such a group with one ``baddbmm`` per layer.
The result is the same function as separate MLPs; only the number of kernel launches
(and of optimizer parameters) changes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from factorkit._validation import check_size, check_vectors

__all__ = ["GroupedLinear", "GroupedMLP"]


class GroupedLinear(nn.Module):
    """G independent affine maps of the same size, applied with one batched matmul.

    Member g computes ``x_g @ weight[g] + bias[g]``; every member is initialised like a
    separate ``nn.Linear(in_features, out_features)`` (uniform in +-1/sqrt(in_features)).

    Args:
        groups: G, the number of members.
        in_features: input size of every member.
        out_features: output size of every member.
        initialize: draw the initial weights (``False``: left uninitialised, to be
            copied in).

    Shapes:
        x: (G, B, in_features). Returns: (G, B, out_features).

    Examples:
        >>> layer = GroupedLinear(3, 5, 2)
        >>> layer(torch.randn(3, 4, 5)).shape
        torch.Size([3, 4, 2])
    """

    def __init__(
        self, groups: int, in_features: int, out_features: int, *, initialize: bool = True
    ) -> None:
        super().__init__()
        self.groups = check_size(groups, "groups")
        self.in_features = check_size(in_features, "in_features")
        self.out_features = check_size(out_features, "out_features")
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(groups, in_features, out_features))
        self.bias = nn.Parameter(torch.empty(groups, out_features))
        if initialize:  # skipped when the weights are copied in (no random draws)
            nn.init.uniform_(self.weight, -bound, bound)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        """Apply member g to ``x[g]`` for every g."""
        if x.dim() != 3 or x.shape[0] != self.groups or x.shape[2] != self.in_features:
            raise ValueError(
                f"expected input of shape ({self.groups}, B, {self.in_features}), "
                f"got {tuple(x.shape)}"
            )
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight)

    def extra_repr(self) -> str:
        sizes = f"in_features={self.in_features}, out_features={self.out_features}"
        return f"groups={self.groups}, {sizes}"


class GroupedMLP(nn.Module):
    """One independent MLP per name, run layer by layer in batched groups.

    Each MLP is ``Linear(w0, w1)``, then ``ReLU, Dropout, Linear(w_i, w_i+1)`` for each
    next width (the layout of every factorkit MLP), optionally followed by a final ReLU.
    At every depth, the layers of equal size (and equally placed: hidden or last) of all
    MLPs form one :class:`GroupedLinear`: MLPs that differ only in their output size
    (decoders of modalities with different feature sizes) still share every layer but
    the last, and MLPs of identical widths run together from end to end.

    Args:
        widths: name -> layer widths ``[input, hidden..., output]`` (at least two).
        dropout: dropout after every hidden activation.
        output_activation: append a ReLU after the last layer.
        initialize: draw the initial weights (``False``: see :meth:`from_linears`).

    Shapes:
        inputs[name]: (B, D_in), D_in the first width of that MLP, one B for all.
        Returns: name -> (B, D_out), D_out its last width.

    Examples:
        >>> mlps = GroupedMLP({"a": [4, 8, 2], "b": [4, 8, 2], "c": [3, 2]})
        >>> out = mlps({"a": torch.randn(5, 4), "b": torch.randn(5, 4), "c": torch.randn(5, 3)})
        >>> {name: tuple(t.shape) for name, t in out.items()}
        {'a': (5, 2), 'b': (5, 2), 'c': (5, 2)}
    """

    def __init__(
        self,
        widths: Mapping[str, Sequence[int]],
        *,
        dropout: float = 0.0,
        output_activation: bool = False,
        initialize: bool = True,
    ) -> None:
        super().__init__()
        if not widths:
            raise ValueError("GroupedMLP needs at least one MLP")
        self.widths = {
            name: tuple(check_size(w, f"widths[{name!r}]") for w in sizes)
            for name, sizes in widths.items()
        }
        for name, w in self.widths.items():
            if len(w) < 2:
                raise ValueError(f"widths[{name!r}] needs at least two entries, got {list(w)}")
        self.dropout = dropout
        self.output_activation = output_activation
        depth = max(len(w) - 1 for w in self.widths.values())
        # groups[l]: tuples of names whose layer l has one (in, out, is_last) signature.
        self.groups: list[list[tuple[str, ...]]] = []
        self._where: dict[str, list[tuple[int, int]]] = {name: [] for name in self.widths}
        for layer in range(depth):
            by_size: dict[tuple[int, int, bool], list[str]] = {}
            for name, w in self.widths.items():
                if layer < len(w) - 1:
                    key = (w[layer], w[layer + 1], layer == len(w) - 2)
                    by_size.setdefault(key, []).append(name)
            self.groups.append([tuple(names) for names in by_size.values()])
            for g, names in enumerate(by_size.values()):
                for i, name in enumerate(names):
                    self._where[name].append((g, i))
        self.layers = nn.ModuleList(
            nn.ModuleList(
                GroupedLinear(
                    len(names), *self.widths[names[0]][layer : layer + 2], initialize=initialize
                )
                for names in self.groups[layer]
            )
            for layer in range(depth)
        )

    @classmethod
    def from_linears(
        cls, layers: Mapping[str, Sequence[nn.Linear]], *, dropout: float = 0.0
    ) -> GroupedMLP:
        """Group existing MLPs given as their ``nn.Linear`` layers; their weights are copied.

        The result computes the same functions as the given MLPs (laid out as
        :func:`~factorkit._layers.mlp` builds them), on the device and in the dtype of
        the first one, and draws no random numbers.

        Shapes:
            layers[name][i]: weight (out, in), bias (out,).
        """
        widths = {
            name: [linears[0].in_features, *(lin.out_features for lin in linears)]
            for name, linears in layers.items()
        }
        first = next(iter(layers.values()))[0].weight
        grouped = cls(widths, dropout=dropout, initialize=False).to(first.device, first.dtype)
        with torch.no_grad():
            for name, linears in layers.items():
                for (weight, bias), linear in zip(grouped.layers_of(name), linears, strict=True):
                    weight.copy_(linear.weight.T)
                    bias.copy_(linear.bias)
        return grouped

    def _layer(self, layer: int, group: int) -> GroupedLinear:
        return cast(GroupedLinear, cast(nn.ModuleList, self.layers[layer])[group])

    def _activate(self, x: Tensor, last: bool) -> Tensor:
        if not last:
            return F.dropout(F.relu(x), self.dropout, self.training)
        return F.relu(x) if self.output_activation else x

    def forward(self, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Run every named MLP on its input; the result is keyed like ``inputs``."""
        check_vectors(
            inputs, {name: w[0] for name, w in self.widths.items()}, "inputs", module=self
        )
        rows = dict(inputs)
        stacked: dict[tuple[str, ...], Tensor] = {}
        for layer, groups in enumerate(self.groups):
            # A group that continues unchanged from the previous layer stays stacked; the
            # others are split into per-name rows and regrouped.
            for names, h in stacked.items():
                if names not in groups:
                    rows.update(zip(names, h.unbind(0), strict=True))
            previous, stacked = stacked, {}
            for g, names in enumerate(groups):
                h = previous[names] if names in previous else torch.stack([rows[n] for n in names])
                last = layer == len(self.widths[names[0]]) - 2
                stacked[names] = self._activate(self._layer(layer, g)(h), last)
        for names, h in stacked.items():
            rows.update(zip(names, h.unbind(0), strict=True))
        return {name: rows[name] for name in inputs}

    def forward_one(self, name: str, x: Tensor) -> Tensor:
        """Run the MLP ``name`` alone on a (B, input) tensor (e.g. the shared one only)."""
        layers = self.layers_of(name)
        size = self.widths[name][0]
        if x.dim() != 2 or x.shape[1] != size:
            raise ValueError(f"input {name!r}: expected shape (B, {size}), got {tuple(x.shape)}")
        for i, (weight, bias) in enumerate(layers):
            x = self._activate(torch.addmm(bias, x, weight), i == len(layers) - 1)
        return x

    def layers_of(self, name: str) -> list[tuple[Tensor, Tensor]]:
        """``(weight, bias)`` of every layer of the MLP ``name``: views, (in, out) and (out,)."""
        if name not in self._where:
            raise ValueError(f"no MLP named {name!r}; have {list(self.widths)}")
        return [
            (self._layer(layer, g).weight[i], self._layer(layer, g).bias[i])
            for layer, (g, i) in enumerate(self._where[name])
        ]

    def extra_repr(self) -> str:
        sizes = ", ".join(f"{name}: {list(w)}" for name, w in self.widths.items())
        return f"{sizes}, dropout={self.dropout}, output_activation={self.output_activation}"
