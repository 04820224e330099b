"""The factorized head: features from the user's encoders -> shared and private codes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from factorkit._grouped import GroupedMLP
from factorkit._validation import (
    RecordsModalities,
    check_modality_names,
    check_names,
    check_size,
    check_vectors,
    per_modality,
)
from factorkit._validation import check_finite as check_all_finite
from factorkit.fusion import ConcatFusion
from factorkit.latents import FactorizedLatents
from factorkit.masks import check_presence, fill_absent

__all__ = ["FactorizedHead"]


class FactorizedHead(RecordsModalities):
    """Split per-modality features into a shared code and one private code per modality.

    The shared (multimodal discriminative) code Z_y is inferred from all modalities
    through a fusion module (:class:`~factorkit.ConcatFusion` by default); each private
    (modality-specific generative) code Z_a_m is a linear map of modality m's features
    alone, so it can never depend on another modality.

    With a presence mask, an absent modality's values never reach the shared code (the
    fusion masks them) and its private code is set to zeros and marked absent in the
    returned :class:`~factorkit.FactorizedLatents`.

    With ``encoders``, the head takes the raw inputs and runs each modality through its
    own encoder first (absent inputs are set to zeros before their encoder, so a NaN
    placeholder reaches no output and no gradient): the head is then the whole encoder
    of an :class:`~factorkit.MFM`.

    Args:
        input_sizes: modality name -> feature size D_m of the user's encoder output.
        shared_size: Dy, size of the shared code.
        private_size: Da, size of each private code: one int for all, or per modality;
            ``None`` for no private codes (the shared code alone: the encoder of a
            discriminative baseline).
        encoders: optional modality name -> the user's encoder of that modality, called
            as ``encoder(x_m)`` and returning (B, D_m) features.
        fusion: module computing the shared code from ``(features, present)``; default
            ``ConcatFusion(input_sizes, shared_size, hidden_size=hidden_size,
            dropout=dropout)``.
        hidden_size: hidden width of the default fusion MLP.
        dropout: dropout of the default fusion MLP.
        check_finite: raise on NaN/inf in the present rows of the inputs, naming the
            modality and the rows (one host sync per call; skipped under
            :func:`torch.compile`).

    Shapes:
        features[m]: (B, D_m), or any (B, ...) the encoder of m takes. present[m]: (B,)
        bool. Returns: shared (B, Dy), private[m] (B, Da_m).

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
        private_size: int | Mapping[str, int] | None,
        encoders: Mapping[str, nn.Module] | None = None,
        fusion: nn.Module | None = None,
        hidden_size: int | None = None,
        dropout: float = 0.0,
        check_finite: bool = False,
    ) -> None:
        super().__init__()
        self.modalities = check_modality_names(input_sizes.keys())
        self.input_sizes = per_modality(dict(input_sizes), self.modalities, "input_sizes")
        self.shared_size = check_size(shared_size, "shared_size")
        self.private_sizes = (
            {}
            if private_size is None
            else per_modality(private_size, self.modalities, "private_size")
        )
        self.check_finite = check_finite
        self.encoders: nn.ModuleDict | None = None
        if encoders is not None:
            check_names(encoders.keys(), self.modalities, "encoders modalities")
            self.encoders = nn.ModuleDict({m: encoders[m] for m in self.modalities})
        self.fusion = fusion or ConcatFusion(
            self.input_sizes, shared_size, hidden_size=hidden_size, dropout=dropout
        )
        # One linear map per modality; modalities of equal sizes run as one batched matmul.
        self.private_encoders: GroupedMLP | None = None
        if self.private_sizes:
            self.private_encoders = GroupedMLP(
                {m: [self.input_sizes[m], self.private_sizes[m]] for m in self.modalities}
            )

    def modality_record(self) -> dict[str, Any]:
        """Input, shared and private sizes by modality (checked when a checkpoint loads)."""
        return {
            "input_sizes": self.input_sizes,
            "shared_size": self.shared_size,
            "private_sizes": self.private_sizes,
        }

    def forward(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> FactorizedLatents:
        """Infer the shared code and the private codes (zeros where a modality is absent).

        With ``encoders``, ``features`` are the raw inputs: this is
        ``factorize(encode(features, present), present)``.
        """
        check_names(features.keys(), self.modalities, "features modalities")
        if present is not None:
            batch = features[self.modalities[0]].shape[0]
            present = check_presence(present, self.modalities, batch)
        if self.check_finite:
            check_all_finite({"inputs": features}, present)
        if self.encoders is not None:
            features = self.encode(features, present)
        return self.factorize(features, present)

    def factorize(
        self, features: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> FactorizedLatents:
        """The codes of given encoder features (the head without its ``encoders``).

        Shapes:
            features[m]: (B, D_m). present[m]: (B,) bool.
            Returns: shared (B, Dy), private[m] (B, Da_m).
        """
        batch = check_vectors(features, self.input_sizes, module=self)
        if present is not None:
            present = check_presence(present, self.modalities, batch)
        shared = self.fusion(features, present)
        if shared.shape != (batch, self.shared_size):
            raise ValueError(
                f"fusion returned shape {tuple(shared.shape)}, "
                f"expected ({batch}, {self.shared_size})"
            )
        if self.private_encoders is None:
            return FactorizedLatents(shared, {}, present)
        if present is None:
            return FactorizedLatents(shared, self.private_encoders(features), None)
        inputs = {m: fill_absent(features[m], present[m]) for m in self.modalities}
        codes = self.private_encoders(inputs)
        private = {m: fill_absent(codes[m], present[m]) for m in self.modalities}
        return FactorizedLatents(shared, private, present)

    def encode(
        self, inputs: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Each modality through its own encoder (absent inputs set to zeros first).

        Shapes:
            inputs[m]: (B, ...). present[m]: (B,) bool. Returns: (B, D_m) by modality.
        """
        if self.encoders is None:
            raise ValueError("this head was built without encoders; it takes features")
        out = {}
        for m in self.modalities:
            x = inputs[m] if present is None else fill_absent(inputs[m], present[m])
            out[m] = self.encoders[m](x)
        return out

    def extra_repr(self) -> str:
        return f"shared_size={self.shared_size}, private_sizes={self.private_sizes}"
