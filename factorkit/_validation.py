"""Input checks shared by the blocks: every error names the modality and the shapes."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from torch import Tensor

SHARED = "shared"
"""Name under which the shared (discriminative) latent is listed beside the modalities."""


def check_names(received: Collection[str], expected: Collection[str], what: str) -> None:
    """Raise a ``KeyError``-free, readable ``ValueError`` when two name sets differ."""
    got, want = set(received), set(expected)
    if got == want:
        return
    parts = []
    if want - got:
        parts.append(f"missing {sorted(want - got)}")
    if got - want:
        parts.append(f"unknown {sorted(got - want)}")
    raise ValueError(f"{what}: {', '.join(parts)}; expected exactly {sorted(want)}")


def check_modality_names(names: Collection[str]) -> tuple[str, ...]:
    """Validate modality names and return them sorted (the library-wide order)."""
    if not names:
        raise ValueError("at least one modality is required")
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"modality names must be non-empty strings, got {name!r}")
        if "." in name:
            raise ValueError(f"modality name {name!r} must not contain '.'")
        if name == SHARED:
            raise ValueError(f"{SHARED!r} is reserved for the shared latent; rename that modality")
    return tuple(sorted(names))


def check_vectors(
    tensors: Mapping[str, Tensor], sizes: Mapping[str, int], what: str = "features"
) -> int:
    """Check a mapping of (B, D_m) tensors against the expected sizes; return B."""
    check_names(tensors.keys(), sizes.keys(), f"{what} modalities")
    batch: int | None = None
    first = ""
    for name in sorted(sizes):
        x = tensors[name]
        if not x.is_floating_point():
            raise ValueError(f"modality {name!r}: {what} must be floating point, got {x.dtype}")
        if x.dim() != 2 or x.shape[1] != sizes[name]:
            raise ValueError(
                f"modality {name!r}: expected {what} of shape (B, {sizes[name]}), "
                f"got {tuple(x.shape)}"
            )
        if batch is None:
            batch, first = x.shape[0], name
        elif x.shape[0] != batch:
            raise ValueError(
                f"modality {name!r}: batch size {x.shape[0]} differs from "
                f"modality {first!r} (batch size {batch})"
            )
    assert batch is not None
    return batch


def check_size(value: int, what: str) -> int:
    """Check a positive layer size."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return value


def per_modality(
    value: int | Mapping[str, int], names: Collection[str], what: str
) -> dict[str, int]:
    """Expand an int or a name -> int mapping into a full, validated mapping."""
    if isinstance(value, Mapping):
        check_names(value.keys(), names, what)
        return {name: check_size(value[name], f"{what}[{name!r}]") for name in sorted(names)}
    return {name: check_size(value, what) for name in sorted(names)}
