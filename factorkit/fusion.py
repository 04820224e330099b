"""Fusion modules: how the shared code sees all modalities at once.

A fusion module maps features by modality name (and an optional presence mask) to one
(B, D_out) tensor. :class:`ConcatFusion` is the MFM default; any ``nn.Module`` with the
same ``forward(features, present)`` signature can replace it in
:class:`~factorkit.FactorizedHead`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from factorkit._layers import mlp
from factorkit._validation import (
    RecordsModalities,
    check_modality_names,
    check_size,
    check_vectors,
)
from factorkit.masks import check_presence, fill_absent

__all__ = ["ConcatFusion"]


class ConcatFusion(RecordsModalities):
    """Concatenate every modality's features and map them through an MLP.

    With a presence mask, an absent modality's features are replaced by zeros (with
    :func:`torch.where`, so NaN in an absent slot cannot leak) and one presence indicator
    per modality is appended, so the MLP can tell "absent" from "all-zero features".
    Without a mask the indicators are ones; the parameters are the same either way.

    Args:
        input_sizes: modality name -> feature size D_m.
        output_size: D_out.
        hidden_size: width of the hidden layer (default: ``max(output_size, 64)``).
        dropout: dropout after the hidden activation.

    Shapes:
        features[m]: (B, D_m). present[m]: (B,) bool. Returns: (B, D_out).

    Examples:
        >>> fusion = ConcatFusion({"audio": 5, "video": 3}, output_size=4)
        >>> fusion({"audio": torch.randn(2, 5), "video": torch.randn(2, 3)}).shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        input_sizes: Mapping[str, int],
        output_size: int,
        *,
        hidden_size: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.modalities = check_modality_names(input_sizes.keys())
        self.input_sizes = {
            m: check_size(input_sizes[m], f"input_sizes[{m!r}]") for m in self.modalities
        }
        self.output_size = check_size(output_size, "output_size")
        hidden = check_size(hidden_size or max(output_size, 64), "hidden_size")
        width = sum(self.input_sizes.values()) + len(self.modalities)
        self.mlp = mlp([width, hidden, output_size], dropout=dropout)

    def modality_record(self) -> dict[str, Any]:
        """Input sizes by modality and the output size (checked when a checkpoint loads)."""
        return {"input_sizes": self.input_sizes, "output_size": self.output_size}

    def forward(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> Tensor:
        """Fuse the (present) features of every modality into one vector."""
        batch = check_vectors(features, self.input_sizes, module=self)
        first = features[self.modalities[0]]
        if present is None:
            parts = [features[m] for m in self.modalities]
            parts.append(first.new_ones(batch, len(self.modalities)))
        else:
            present = check_presence(present, self.modalities, batch)
            parts = [fill_absent(features[m], present[m]) for m in self.modalities]
            parts.append(torch.stack([present[m] for m in self.modalities], dim=1).to(first.dtype))
        fused: Tensor = self.mlp(torch.cat(parts, dim=1))
        return fused
