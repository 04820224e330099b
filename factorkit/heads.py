"""The factorized head: features from the user's encoders -> shared and private codes."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from factorkit._validation import check_modality_names, check_size, check_vectors, per_modality
from factorkit.fusion import ConcatFusion
from factorkit.grouped import GroupedMLP
from factorkit.latents import FactorizedLatents
from factorkit.masks import check_presence, fill_absent

__all__ = ["FactorizedHead"]


class FactorizedHead(nn.Module):
    """Split per-modality features into a shared code and one private code per modality.

    The shared (multimodal discriminative) code Z_y is inferred from all modalities
    through a fusion module (:class:`~factorkit.ConcatFusion` by default); each private
    (modality-specific generative) code Z_a_m is a linear map of modality m's features
    alone, so it can never depend on another modality.

    With a presence mask, an absent modality's values never reach the shared code (the
    fusion masks them) and its private code is set to zeros and marked absent in the
    returned :class:`~factorkit.FactorizedLatents`.

    Args:
        input_sizes: modality name -> feature size D_m of the user's encoder output.
        shared_size: Dy, size of the shared code.
        private_size: Da, size of each private code: one int for all, or per modality.
        fusion: module computing the shared code from ``(features, present)``; default
            ``ConcatFusion(input_sizes, shared_size, hidden_size=hidden_size,
            dropout=dropout)``.
        hidden_size: hidden width of the default fusion MLP.
        dropout: dropout of the default fusion MLP.

    Shapes:
        features[m]: (B, D_m). present[m]: (B,) bool.
        Returns: shared (B, Dy), private[m] (B, Da_m).

    Examples:
        >>> head = FactorizedHead({"audio": 32, "video": 16}, shared_size=8, private_size=4)
        >>> z = head({"audio": torch.randn(5, 32), "video": torch.randn(5, 16)})
        >>> z.shared.shape, z.private["video"].shape
        (torch.Size([5, 8]), torch.Size([5, 4]))
    """

    def __init__(
        self,
        input_sizes: Mapping[str, int],
        *,
        shared_size: int,
        private_size: int | Mapping[str, int],
        fusion: nn.Module | None = None,
        hidden_size: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.modalities = check_modality_names(input_sizes.keys())
        self.input_sizes = per_modality(dict(input_sizes), self.modalities, "input_sizes")
        self.shared_size = check_size(shared_size, "shared_size")
        self.private_sizes = per_modality(private_size, self.modalities, "private_size")
        self.fusion = fusion or ConcatFusion(
            self.input_sizes, shared_size, hidden_size=hidden_size, dropout=dropout
        )
        # One linear map per modality; modalities of equal sizes run as one batched matmul.
        self.private_encoders = GroupedMLP(
            {m: [self.input_sizes[m], self.private_sizes[m]] for m in self.modalities}
        )

    def forward(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> FactorizedLatents:
        """Infer the shared code and the private codes (zeros where a modality is absent)."""
        batch = check_vectors(features, self.input_sizes, module=self)
        if present is not None:
            present = check_presence(present, self.modalities, batch)
        shared = self.fusion(features, present)
        if shared.shape != (batch, self.shared_size):
            raise ValueError(
                f"fusion returned shape {tuple(shared.shape)}, "
                f"expected ({batch}, {self.shared_size})"
            )
        if present is None:
            return FactorizedLatents(shared, self.private_encoders(features), None)
        inputs = {m: fill_absent(features[m], present[m]) for m in self.modalities}
        codes = self.private_encoders(inputs)
        private = {m: fill_absent(codes[m], present[m]) for m in self.modalities}
        return FactorizedLatents(shared, private, present)

    def extra_repr(self) -> str:
        return f"shared_size={self.shared_size}, private_sizes={self.private_sizes}"
