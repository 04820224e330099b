"""The typed result of a factorized head: one shared code and one private code per modality."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import Tensor

from factorkit._validation import SHARED
from factorkit.masks import any_present

__all__ = ["FactorizedLatents"]


class FactorizedLatents:
    """Shared (discriminative) and private (modality-specific, generative) codes.

    The same container carries the latents Z of a :class:`~factorkit.FactorizedHead` and
    the factors F = G(Z) of :class:`~factorkit.FactorGenerators`.

    Attributes:
        shared: the multimodal discriminative code Z_y (or factor F_y).
        private: modality name -> the modality-specific code Z_a_m (or factor F_a_m).
        present: modality name -> per-sample presence mask, or ``None`` when every
            modality was observed for every sample. Rows of an absent private code are
            zeros and must not be used as data.

    Shapes:
        shared: (B, Dy). private[m]: (B, Da_m). present[m]: (B,) bool.

    Examples:
        >>> z = FactorizedLatents(torch.zeros(4, 8), {"audio": torch.zeros(4, 2)})
        >>> [name for name, _ in z.items()]
        ['shared', 'audio']
    """

    __slots__ = ("present", "private", "shared")

    def __init__(
        self,
        shared: Tensor,
        private: Mapping[str, Tensor],
        present: Mapping[str, Tensor] | None = None,
    ) -> None:
        self.shared = shared
        self.private = {name: private[name] for name in sorted(private)}
        self.present = (
            None if present is None else {name: present[name] for name in sorted(present)}
        )

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names, sorted."""
        return tuple(self.private)

    @property
    def batch_size(self) -> int:
        """B (symbolic under torch.export, so a dynamic batch size stays dynamic)."""
        return self.shared.shape[0]

    def items(self) -> Iterator[tuple[str, Tensor]]:
        """Every latent by name: ``"shared"`` first, then each modality in sorted order."""
        yield SHARED, self.shared
        for name in self.private:
            yield name, self.private[name]

    def mask(self, name: str) -> Tensor | None:
        """Rows of latent ``name`` that were actually inferred (``None``: all of them).

        The shared code is inferred for every sample with at least one observed modality;
        a private code only where its own modality was observed.

        Shapes:
            Returns: (B,) bool or ``None``.
        """
        if name != SHARED and name not in self.private:
            raise KeyError(f"no latent named {name!r}; have {[n for n, _ in self.items()]}")
        if self.present is None:
            return None
        return any_present(self.present) if name == SHARED else self.present[name]

    def map(self, fn: Callable[[str, Tensor], Tensor]) -> FactorizedLatents:
        """Apply ``fn(name, tensor)`` to every latent; the presence mask is kept."""
        return FactorizedLatents(
            fn(SHARED, self.shared),
            {name: fn(name, z) for name, z in self.private.items()},
            self.present,
        )

    def detach(self) -> FactorizedLatents:
        """A copy whose codes are detached from the autograd graph."""
        return self.map(lambda _, z: z.detach())

    def to(self, *args: Any, **kwargs: Any) -> FactorizedLatents:
        """Move or cast the codes like :meth:`torch.Tensor.to`; masks only move device."""
        moved = self.map(lambda _, z: z.to(*args, **kwargs))
        if self.present is not None:
            device = moved.shared.device
            moved.present = {name: m.to(device) for name, m in self.present.items()}
        return moved

    def __repr__(self) -> str:
        shapes = ", ".join(f"{name}={tuple(z.shape)}" for name, z in self.items())
        masked = "" if self.present is None else ", masked"
        return f"FactorizedLatents({shapes}{masked})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FactorizedLatents):
            return NotImplemented
        same = dict(self.items()).keys() == dict(other.items()).keys() and all(
            torch.equal(a, b) for (_, a), (_, b) in zip(self.items(), other.items(), strict=True)
        )
        return same and _masks_equal(self.present, other.present)

    __hash__ = None  # type: ignore[assignment]


def _flatten(latents: FactorizedLatents) -> tuple[list[Any], None]:
    return [latents.shared, latents.private, latents.present], None


def _flatten_with_keys(latents: FactorizedLatents) -> tuple[list[tuple[Any, Any]], None]:
    children, _ = _flatten(latents)
    keys = ("shared", "private", "present")
    return [(pytree.GetAttrKey(k), c) for k, c in zip(keys, children, strict=True)], None


def _unflatten(children: Iterable[Any], _: None) -> FactorizedLatents:
    shared, private, present = children
    return FactorizedLatents(shared, private, present)


# A pytree node, so that modules taking or returning latents (an MFM, a surrogate) run
# under torch.export, torch.compile and torch.utils._pytree-based tools unchanged.
pytree.register_pytree_node(
    FactorizedLatents,
    _flatten,
    _unflatten,
    serialized_type_name="factorkit.FactorizedLatents",
    flatten_with_keys_fn=_flatten_with_keys,
)


def _masks_equal(a: Mapping[str, Tensor] | None, b: Mapping[str, Tensor] | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
