"""Input checks shared by the blocks: every error names the modality and the shapes."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

import torch
from torch import Tensor, nn

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


def parameter_dtype(module: nn.Module) -> torch.dtype | None:
    """The dtype of a module's first floating-point parameter (``None`` if it has none)."""
    for parameter in module.parameters():
        if parameter.is_floating_point():
            return parameter.dtype
    return None


def parameter_device(module: nn.Module) -> torch.device | None:
    """The device of a module's first parameter (``None`` if it has none)."""
    for parameter in module.parameters():
        return parameter.device
    return None


def check_tensor(x: Tensor, module: nn.Module, what: str) -> None:
    """Check one input against a module's parameters: floating point, same dtype, device.

    ``what`` names the input in the error (e.g. ``"modality 'audio': private factor"``).
    Under :func:`torch.autocast` float32, float16 and bfloat16 may mix. Reads metadata
    only: no host sync.
    """
    dtype, device = parameter_dtype(module), parameter_device(module)
    owner = type(module).__name__
    if not x.is_floating_point():
        raise ValueError(
            f"{what} must be floating point, got {x.dtype} of shape {tuple(x.shape)}"
            + ("" if dtype is None else f"; expected {dtype} (the dtype of {owner}'s parameters)")
        )
    if dtype is not None and not _dtypes_agree(x.dtype, dtype, x.device.type):
        raise ValueError(
            f"{what} has dtype {x.dtype} (shape {tuple(x.shape)}), expected {dtype} (the "
            f"dtype of {owner}'s parameters); cast the input or the module with .to()"
        )
    if device is not None and x.device != device:
        raise ValueError(
            f"{what} is on {x.device}, {owner}'s parameters on {device}; "
            f"move the input or the module with .to()"
        )


_AUTOCAST_CASTS = (torch.float32, torch.float16, torch.bfloat16)


def _dtypes_agree(received: torch.dtype, expected: torch.dtype, device_type: str) -> bool:
    # Autocast casts every floating input and weight except float64 to its own dtype, so
    # under it float32, float16 and bfloat16 mix freely; float64 still has to match.
    if received == expected:
        return True
    return (
        torch.is_autocast_enabled(device_type)
        and received in _AUTOCAST_CASTS
        and expected in _AUTOCAST_CASTS
    )


def check_vectors(
    tensors: Mapping[str, Tensor],
    sizes: Mapping[str, int],
    what: str = "features",
    *,
    module: nn.Module | None = None,
) -> int:
    """Check a mapping of (B, D_m) tensors against the expected sizes; return B.

    Every tensor must be floating point, and all must share one dtype and one device:
    those of ``module``'s parameters when given, else those of the first modality (sorted
    by name).
    Under :func:`torch.autocast` float32, float16 and bfloat16 may mix (autocast casts
    them); float64 must still match. The check reads dtypes only: no host sync.
    """
    check_names(tensors.keys(), sizes.keys(), f"{what} modalities")
    expected = None if module is None else parameter_dtype(module)
    device = None if module is None else parameter_device(module)
    source = f"the dtype of {type(module).__name__}'s parameters"
    device_source = f"{type(module).__name__}'s parameters"
    batch: int | None = None
    first = ""
    for name in sorted(sizes):
        x = tensors[name]
        if not x.is_floating_point():
            wanted = "" if expected is None else f"; expected {expected} ({source})"
            raise ValueError(
                f"modality {name!r}: {what} must be floating point, got {x.dtype} of shape "
                f"{tuple(x.shape)}{wanted}"
            )
        if x.dim() != 2 or x.shape[1] != sizes[name]:
            raise ValueError(
                f"modality {name!r}: expected {what} of shape (B, {sizes[name]}), "
                f"got {tuple(x.shape)}"
            )
        if expected is None:
            expected, source = x.dtype, f"the dtype of modality {name!r}"
        if device is None:
            device, device_source = x.device, f"modality {name!r}"
        if x.device != device:
            raise ValueError(
                f"modality {name!r}: {what} on {x.device}, {device_source} on {device}; "
                f"move them to one device with .to()"
            )
        if batch is None:
            batch, first = x.shape[0], name
        elif x.shape[0] != batch:
            raise ValueError(
                f"modality {name!r}: batch size {x.shape[0]} differs from "
                f"modality {first!r} (batch size {batch})"
            )
        if not _dtypes_agree(x.dtype, expected, x.device.type):
            raise ValueError(
                f"modality {name!r}: {what} of dtype {x.dtype} and shape {tuple(x.shape)}, "
                f"expected {expected} ({source}); cast the {what} or the module with .to()"
            )
    assert batch is not None
    return batch


def _non_finite(x: Tensor, keep: Tensor | None) -> Tensor:
    """Where ``x`` is NaN or inf, within the kept leading entries (all with ``None``)."""
    bad = ~x.isfinite()
    if keep is not None:
        bad = bad & keep.reshape(keep.shape + (1,) * (bad.dim() - keep.dim()))
    return bad


def check_finite(
    groups: Mapping[str, Mapping[str, Tensor]],
    present: Mapping[str, Tensor] | None,
    *,
    kind: str = "modality",
    name_rows: bool = False,
) -> None:
    """Raise if a present row of any tensor holds NaN or inf; one host sync for all.

    Rows where a modality is absent are not inspected (they may hold anything). Skipped
    under :func:`torch.compile`, which cannot read values on the host.

    Args:
        groups: a label naming the role (e.g. ``"target"``) -> modality name -> tensor.
        present: modality name -> which rows (or leading entries, e.g. valid steps) to
            inspect, or ``None`` for all; a modality it does not name is inspected whole.
        kind: what the names are, for the message (``"modality"`` or ``"latent"``).
        name_rows: also list the first rows holding non-finite values.

    Raises:
        ValueError: naming every modality and role with non-finite present values, the
            count of those values and the tensor's shape (and with ``name_rows`` the first
            rows holding them).

    Shapes:
        groups[label][m]: (B, ...). present[m]: (B,) or a longer prefix of the shape, bool.
    """
    if torch.compiler.is_compiling():
        return
    where, counts = [], []
    for label, tensors in groups.items():
        for name in sorted(tensors):
            bad = _non_finite(tensors[name], None if present is None else present.get(name))
            where.append((name, label, tuple(bad.shape)))
            counts.append(bad.sum())
    found = torch.stack(counts).tolist()
    if not any(found):
        return
    errors = []
    for (name, label, shape), count in zip(where, found, strict=True):
        if not count:
            continue
        error = (
            f"{kind} {name!r}: {count} non-finite value{'s' if count > 1 else ''} in "
            f"the present rows of the {label} (shape {shape})"
        )
        if name_rows:
            bad = _non_finite(groups[label][name], None if present is None else present.get(name))
            rows = bad.reshape(bad.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
            error += f", rows {rows[:10]}{'...' if len(rows) > 10 else ''}"
        errors.append(error)
    raise ValueError("; ".join(errors))


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


class RecordsModalities(nn.Module):
    """Base of the blocks with per-modality parameters: checkpoints know their modalities.

    The state dict holds the block's modality record (names and sizes, from
    :meth:`modality_record`) under ``_extra_state``; loading a state dict whose record
    differs raises a ``ValueError`` naming both, before any child parameter is loaded,
    instead of silently handing one modality's weights to another.
    """

    def modality_record(self) -> dict[str, Any]:
        """The names and sizes a checkpoint must match (override in each block)."""
        raise NotImplementedError

    def get_extra_state(self) -> dict[str, Any]:
        """The modality record, saved in the state dict."""
        return {"modalities": self.modality_record()}

    def set_extra_state(self, state: Any) -> None:
        """Refuse a checkpoint of other modality names or sizes."""
        ours = self.modality_record()
        theirs = state.get("modalities") if isinstance(state, dict) else None
        if theirs != ours:
            raise ValueError(
                f"{type(self).__name__}: the checkpoint was saved for modalities {theirs}, "
                f"this block has {ours}; build the block with the checkpoint's modality "
                f"names and sizes"
            )


def check_choice(value: str, choices: Collection[str], what: str) -> str:
    """Check that a string option is one of the allowed values."""
    if value not in choices:
        raise ValueError(f"{what} must be one of {list(choices)}, got {value!r}")
    return value


def check_dropout(value: float, what: str = "dropout") -> float:
    """Check a dropout probability: a number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value < 1.0:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_sequence(x: Tensor, features: int, where: str, module: nn.Module) -> None:
    """Check one padded sequence: shape (B, T, D) with T >= 1, the module's dtype and device.

    Shapes:
        x: (B, T, features).
    """
    if x.dim() != 3 or x.shape[2] != features:
        raise ValueError(
            f"{where}: expected a sequence of shape (B, T, {features}), got {tuple(x.shape)}"
        )
    if x.shape[1] < 1:
        raise ValueError(f"{where}: the sequence has no steps (T = 0), shape {tuple(x.shape)}")
    check_tensor(x, module, f"{where}: sequence")


def check_sequences(
    tensors: Mapping[str, Tensor], sizes: Mapping[str, int], module: nn.Module
) -> tuple[int, int]:
    """Check aligned sequences by modality (one B and one T for all); return (B, T).

    Shapes:
        tensors[m]: (B, T, sizes[m]).
    """
    check_names(tensors.keys(), sizes.keys(), f"{type(module).__name__}: input modalities")
    names = sorted(sizes)
    first = tensors[names[0]]
    for name in names:
        x = tensors[name]
        check_sequence(x, sizes[name], f"modality {name!r}", module)
        if x.shape[:2] != first.shape[:2]:
            raise ValueError(
                f"modality {name!r}: (B, T) = {tuple(x.shape[:2])} differs from modality "
                f"{names[0]!r}'s {tuple(first.shape[:2])}; aligned modalities share B and T"
            )
    return first.shape[0], first.shape[1]
