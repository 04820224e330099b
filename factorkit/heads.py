"""The MFM's encoders of latents: inputs -> one shared code and one private code per modality.

:class:`FactorizedHead` splits per-modality features (from the user's encoders, which it
may hold) into the codes; :class:`FactorizedEncoder` composes separate networks that
produce the codes directly (e.g. an MFN for the shared code and one sequence encoder per
modality). Either is the ``encoder`` of an :class:`~factorkit.MFM`.
"""

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

__all__ = ["FactorizedEncoder", "FactorizedHead"]


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
            check_all_finite({"inputs": features}, present, name_rows=True)
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


class FactorizedEncoder(RecordsModalities):
    """Separate networks for the shared code and each private code.

    Z_y = shared(inputs) over all modalities; Z_a_m = private[m](inputs[m]) from modality
    m alone. Absent inputs are set to zeros before every network (so a NaN placeholder
    reaches no output and no gradient), and absent private codes are set to zeros and
    marked absent. A per-step ``mask`` (sequences) is passed to every network as
    ``mask=`` when given.

    Use it when the codes come straight from the networks (the sentiment MFM: a
    :class:`~factorkit.MemoryFusionEncoder` for Z_y, a :class:`~factorkit.SequenceEncoder`
    per modality for Z_a_m); use :class:`FactorizedHead` to split shared features.

    Args:
        shared: called as ``shared(inputs)`` (``mask=`` added when given) on the mapping of
            every modality's input; returns (B, Dy).
        private: modality name -> called as ``private[m](inputs[m])`` (``mask=`` added when
            given); returns (B, Da_m).

    Shapes:
        inputs[m]: (B, ...), e.g. (B, T, D_m). present[m]: (B,) bool. mask: (B, T) bool.
        Returns: shared (B, Dy), private[m] (B, Da_m).

    Examples:
        >>> class Mean(torch.nn.Module):
        ...     def forward(self, inputs):
        ...         return sum(x.mean(1, keepdim=True) for x in inputs.values())
        >>> private = {"a": torch.nn.Linear(3, 2), "b": torch.nn.Linear(4, 2)}
        >>> enc = FactorizedEncoder(Mean(), private)
        >>> enc({"a": torch.randn(5, 3), "b": torch.randn(5, 4)})
        FactorizedLatents(shared=(5, 1), a=(5, 2), b=(5, 2))
    """

    def __init__(self, shared: nn.Module, private: Mapping[str, nn.Module]) -> None:
        super().__init__()
        self.modalities = check_modality_names(private.keys())
        self.shared = shared
        self.private = nn.ModuleDict({m: private[m] for m in self.modalities})

    def modality_record(self) -> dict[str, Any]:
        """Each modality's parameter shapes in its private network (checked on loading)."""
        return {m: [list(p.shape) for p in self.private[m].parameters()] for m in self.modalities}

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        present: Mapping[str, Tensor] | None = None,
        *,
        mask: Tensor | None = None,
    ) -> FactorizedLatents:
        """Infer the shared code and the private codes (zeros where a modality is absent)."""
        check_names(inputs.keys(), self.modalities, "inputs modalities")
        batch = inputs[self.modalities[0]].shape[0]
        if present is not None:
            present = check_presence(present, self.modalities, batch)
            inputs = {m: fill_absent(inputs[m], present[m]) for m in self.modalities}
        extra = {} if mask is None else {"mask": mask}
        shared = self.shared(dict(inputs), **extra)
        private = {}
        for m in self.modalities:
            code = self.private[m](inputs[m], **extra)
            private[m] = code if present is None else fill_absent(code, present[m])
        for name, code in (("shared", shared), *private.items()):
            if code.dim() != 2 or code.shape[0] != batch:
                raise ValueError(
                    f"the {name} encoder returned shape {tuple(code.shape)}; "
                    f"expected ({batch}, code size)"
                )
        return FactorizedLatents(shared, private, present)
