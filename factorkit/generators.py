"""Factor generators G: Z -> F, one per latent (the MFM's small MLPs)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from factorkit._layers import mlp
from factorkit._validation import SHARED, check_modality_names, check_size, per_modality
from factorkit.grouped import GroupedMLP
from factorkit.heads import FactorizedHead
from factorkit.latents import FactorizedLatents

__all__ = ["FactorGenerator", "FactorGenerators"]


class FactorGenerator(nn.Module):
    """The MFM generator: Linear, ReLU, Dropout, Linear, ReLU.

    Args:
        input_size: size of the code Z.
        output_size: size of the factor F.
        hidden_size: hidden width (default: ``output_size``).
        dropout: dropout probability after the first activation.

    Shapes:
        z: (B, input_size). Returns: (B, output_size), non-negative.
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        *,
        hidden_size: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.input_size = check_size(input_size, "input_size")
        hidden = check_size(hidden_size or output_size, "hidden_size")
        widths = [input_size, hidden, check_size(output_size, "output_size")]
        self.net = mlp(widths, dropout=dropout).append(nn.ReLU())

    def forward(self, z: Tensor) -> Tensor:
        """Map a code Z to its factor F = G(Z)."""
        if z.dim() != 2 or z.shape[1] != self.input_size:
            raise ValueError(
                f"expected a code of shape (B, {self.input_size}), got {tuple(z.shape)}"
            )
        out: Tensor = self.net(z)
        return out


class FactorGenerators(nn.Module):
    """One :class:`FactorGenerator` per latent: F_y = G_y(Z_y), F_a_m = G_a_m(Z_a_m).

    Args:
        shared_size: Dy, size of the shared code.
        private_sizes: modality name -> Da_m.
        factor_size: size of every factor, or a mapping with ``"shared"`` and each
            modality name.
        hidden_size: hidden width of every generator (default: its factor size).
        dropout: dropout of every generator.

    The generators are held in one :class:`~factorkit.GroupedMLP`: latents whose code
    and factor sizes agree run as one batched MLP (each keeps its own weights).

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
        self.modalities = check_modality_names(private_sizes.keys())
        names = (SHARED, *self.modalities)
        code_sizes = {SHARED: check_size(shared_size, "shared_size")}
        code_sizes.update(per_modality(dict(private_sizes), self.modalities, "private_sizes"))
        self.code_sizes = code_sizes
        self.factor_sizes = per_modality(factor_size, names, "factor_size")
        # Latents with equal code and factor sizes (typically every private one) share one
        # stack of batched layers: the same functions as separate FactorGenerators, with
        # one matmul per layer instead of one per latent.
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

    def forward(self, latents: FactorizedLatents) -> FactorizedLatents:
        """Map every latent to its factor; the presence mask is passed on unchanged."""
        if latents.modalities != self.modalities:
            raise ValueError(
                f"latents have modalities {list(latents.modalities)}, "
                f"generators were built for {list(self.modalities)}"
            )
        for name, z in latents.items():
            expected = self.code_sizes[name]
            if z.dim() != 2 or z.shape[1] != expected:
                raise ValueError(
                    f"latent {name!r}: expected a code of shape (B, {expected}), "
                    f"got {tuple(z.shape)}"
                )
        factors = self.generators(dict(latents.items()))
        return FactorizedLatents(
            factors[SHARED], {m: factors[m] for m in self.modalities}, latents.present
        )

    def generate(self, name: str, z: Tensor) -> Tensor:
        """The factor of one latent alone, e.g. ``generate("shared", z_y)`` for prediction.

        Shapes:
            z: (B, code size of ``name``). Returns: (B, factor size of ``name``).
        """
        return self.generators.forward_one(name, z)
