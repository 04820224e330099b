"""Per-sample modality presence masks.

A presence mask is a mapping modality name -> (B,) bool tensor; ``True`` means the
modality was observed for that sample. ``None`` everywhere means "all observed".
Absent values are removed with :func:`torch.where`, never by multiplication, so a NaN
or an arbitrary value in an absent slot cannot leak into any output or gradient.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import Tensor

from factorkit._validation import check_modality_names, check_names

__all__ = ["any_present", "check_presence", "fill_absent", "random_presence"]


def check_presence(
    present: Mapping[str, Tensor], names: Collection[str], batch_size: int
) -> dict[str, Tensor]:
    """Validate a presence mask and return it as a dict sorted by modality name.

    Args:
        present: modality name -> (B,) bool tensor.
        names: the modalities the caller expects.
        batch_size: the expected B.

    Returns:
        The same tensors, keyed in sorted order.

    Raises:
        ValueError: unknown or missing names, a non-tensor, a non-bool dtype, or a shape
            other than (B,).

    Shapes:
        present[name]: (B,) bool. Returns: name -> (B,) bool.
    """
    check_names(present.keys(), names, "presence mask modalities")
    out: dict[str, Tensor] = {}
    for name in sorted(names):
        mask = present[name]
        if not isinstance(mask, Tensor):
            raise ValueError(
                f"modality {name!r}: presence mask must be a bool tensor, got {type(mask).__name__}"
            )
        if mask.dtype != torch.bool:
            raise ValueError(f"modality {name!r}: presence mask must be bool, got {mask.dtype}")
        if mask.shape != (batch_size,):
            raise ValueError(
                f"modality {name!r}: expected presence mask of shape ({batch_size},), "
                f"got {tuple(mask.shape)}"
            )
        out[name] = mask
    return out


def any_present(present: Mapping[str, Tensor]) -> Tensor:
    """Samples with at least one observed modality.

    Raises:
        ValueError: no modality, or masks of different shapes (naming them).

    Shapes:
        present[name]: (B,) bool. Returns: (B,) bool.
    """
    if not present:
        raise ValueError("any_present: the presence mask names no modality")
    shapes = {name: tuple(present[name].shape) for name in sorted(present)}
    first = next(iter(shapes.values()))
    if any(shape != first for shape in shapes.values()):  # no set: sizes may be symbolic
        raise ValueError(f"any_present: presence masks differ in shape: {shapes}")
    return torch.stack([present[name] for name in sorted(present)]).any(dim=0)


def fill_absent(x: Tensor, present: Tensor, value: float = 0.0) -> Tensor:
    """Replace the rows of absent samples by ``value`` (NaN-safe).

    Raises:
        ValueError: ``present`` is not bool of shape (B,) for the B of ``x`` (a mask of
            another length would otherwise broadcast silently).

    Shapes:
        x: (B, ...). present: (B,) bool. Returns: like ``x``.
    """
    if x.dim() == 0 or present.dtype != torch.bool or present.shape != x.shape[:1]:
        raise ValueError(
            f"fill_absent: expected a bool presence mask of shape (B,) for x of shape "
            f"{tuple(x.shape)} (B, ...), got {present.dtype} {tuple(present.shape)}"
        )
    keep = present.reshape(present.shape + (1,) * (x.dim() - 1))
    return torch.where(keep, x, torch.full((), value, dtype=x.dtype, device=x.device))


def random_presence(
    names: Collection[str],
    batch_size: int,
    missing_rate: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> dict[str, Tensor]:
    """Drop each modality of each sample independently with probability ``missing_rate``.

    Every sample keeps at least one modality: where all were dropped, one modality chosen
    uniformly at random is restored, so the realised missing rate is slightly below
    ``missing_rate`` for few modalities.

    Args:
        names: modality names (at least one, no repeats).
        batch_size: B >= 0.
        missing_rate: probability in [0, 1) that a modality is absent.
        generator: optional random generator for reproducibility (on ``device``).
        device: where the masks live.

    Returns:
        modality name -> (B,) bool, sorted by name.

    Raises:
        ValueError: no names, a repeated name or a single string as ``names``, a
            ``batch_size`` that is not an int >= 0, or ``missing_rate`` outside [0, 1).

    Shapes:
        Returns: name -> (B,) bool, with at least one True per sample across names.

    Examples:
        >>> present = random_presence(["audio", "video"], 4, 0.5)
        >>> torch.stack(list(present.values())).any(dim=0).all()
        tensor(True)
    """
    if isinstance(names, str):
        raise ValueError(f"names must be a collection of modality names, not the string {names!r}")
    order = check_modality_names(names)
    if len(set(order)) != len(order):
        raise ValueError(f"names repeat a modality: {list(order)}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 0:
        raise ValueError(f"batch_size must be an int >= 0, got {batch_size!r}")
    rate_ok = isinstance(missing_rate, int | float) and not isinstance(missing_rate, bool)
    if not rate_ok or not 0.0 <= missing_rate < 1.0:
        raise ValueError(f"missing_rate must be a number in [0, 1), got {missing_rate!r}")
    drop = torch.rand(len(order), batch_size, generator=generator, device=device) < missing_rate
    keep = ~drop
    rescue = torch.randint(len(order), (batch_size,), generator=generator, device=device)
    nothing = ~keep.any(dim=0)
    rows = torch.arange(len(order), device=keep.device)[:, None]
    keep = keep | (nothing[None, :] & (rows == rescue[None, :]))
    return {name: keep[i] for i, name in enumerate(order)}
