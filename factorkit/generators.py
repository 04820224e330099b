"""Factor generators G: Z -> F, one per latent (the MFM's small MLPs)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor

from factorkit._grouped import GroupedMLP
from factorkit._validation import (
    SHARED,
    RecordsModalities,
    check_modality_names,
    check_size,
    check_tensor,
    per_modality,
)
from factorkit.heads import FactorizedHead
from factorkit.latents import FactorizedLatents

__all__ = ["FactorGenerators"]


class FactorGenerators(RecordsModalities):
    """One generator per latent: F_y = G_y(Z_y), F_a_m = G_a_m(Z_a_m).

    Each generator is the MFM's small MLP: Linear, ReLU, Dropout, Linear, ReLU (so every
    factor is non-negative). Generators whose code and factor sizes agree (typically
    every private one) run together as one batched MLP; each keeps its own weights, and
    the result is the same as running them one by one.

    Args:
        shared_size: Dy, size of the shared code.
        private_sizes: modality name -> Da_m; empty for a shared generator alone (a
            discriminative model without private codes).
        factor_size: size of every factor, or a mapping with ``"shared"`` and each
            modality name.
        hidden_size: hidden width of every generator (default: its factor size).
        dropout: dropout of every generator, after its first activation.

    Shapes:
        latents.shared: (B, Dy), latents.private[m]: (B, Da_m).
        Returns: shared (B, Fy), private[m] (B, Fa_m); the presence mask is passed on.

    Examples:
        >>> head = FactorizedHead({"a": 6, "b": 3}, shared_size=4, private_size=2)
        >>> gens = FactorGenerators.for_head(head, factor_size=16)
        >>> gens(head({"a": torch.randn(2, 6), "b": torch.randn(2, 3)})).shared.shape
        torch.Size([2, 16])
    """

    def __init__(
        self,
        shared_size: int,
        private_sizes: Mapping[str, int],
        *,
        factor_size: int | Mapping[str, int],
        hidden_size: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.modalities = check_modality_names(private_sizes.keys()) if private_sizes else ()
        names = (SHARED, *self.modalities)
        code_sizes = {SHARED: check_size(shared_size, "shared_size")}
        code_sizes.update(per_modality(dict(private_sizes), self.modalities, "private_sizes"))
        self.code_sizes = code_sizes
        self.factor_sizes = per_modality(factor_size, names, "factor_size")
        if hidden_size is not None:
            check_size(hidden_size, "hidden_size")
        self.generators = GroupedMLP(
            {
                n: [code_sizes[n], hidden_size or self.factor_sizes[n], self.factor_sizes[n]]
                for n in names
            },
            dropout=dropout,
            output_activation=True,
        )

    @classmethod
    def for_head(
        cls,
        head: FactorizedHead,
        *,
        factor_size: int | Mapping[str, int],
        hidden_size: int | None = None,
        dropout: float = 0.0,
    ) -> FactorGenerators:
        """Build generators matching the code sizes of a :class:`~factorkit.FactorizedHead`."""
        return cls(
            head.shared_size,
            head.private_sizes,
            factor_size=factor_size,
            hidden_size=hidden_size,
            dropout=dropout,
        )

    def modality_record(self) -> dict[str, Any]:
        """Code and factor sizes by latent (checked when a checkpoint loads)."""
        return {"code_sizes": self.code_sizes, "factor_sizes": self.factor_sizes}

    def forward(self, latents: FactorizedLatents) -> FactorizedLatents:
        """Map every latent to its factor; the presence mask is passed on unchanged."""
        if latents.modalities != self.modalities:
            raise ValueError(
                f"latents have modalities {list(latents.modalities)}, "
                f"generators were built for {list(self.modalities)}"
            )
        codes = dict(latents.items())
        for name, z in codes.items():
            expected = self.code_sizes[name]
            if z.dim() != 2 or z.shape[1] != expected:
                raise ValueError(
                    f"latent {name!r}: expected a code of shape (B, {expected}), "
                    f"got {tuple(z.shape)}"
                )
            check_tensor(z, self, f"latent {name!r}: code")
        factors = self.generators(codes)
        return FactorizedLatents(
            factors[SHARED], {m: factors[m] for m in self.modalities}, latents.present
        )

    def generate(self, name: str, z: Tensor) -> Tensor:
        """The factor of one latent alone, e.g. ``generate("shared", z_y)`` for prediction.

        Shapes:
            z: (B, code size of ``name``). Returns: (B, factor size of ``name``).
        """
        if name not in self.code_sizes:
            raise ValueError(f"no generator for latent {name!r}; have {list(self.code_sizes)}")
        check_tensor(z, self, f"latent {name!r}: code")
        return self.generators.forward_one(name, z)
