"""The masked reconstruction loss: sum_m lambda_m * MSE(X_m, X_hat_m) over what is observed.

Absent samples (presence masks) and padded steps (step masks) never count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, overload

import torch
from torch import Tensor, nn

from factorkit._validation import check_finite as check_all_finite
from factorkit._validation import check_modality_names, check_names
from factorkit.masks import check_presence

__all__ = ["ReconstructionLoss", "masked_mse", "reconstruction_loss"]


def masked_mse(prediction: Tensor, target: Tensor, keep: Tensor | None) -> Tensor:
    """Mean squared error over the kept entries and all their features; 0 when none is kept.

    ``keep`` marks rows (a presence mask, (B,)) or any longer leading block, e.g. the
    valid steps (B, T) of sequences (B, T, D). Entries that are not kept are replaced by
    zeros in both tensors before the difference (with :func:`torch.where`), so a NaN or
    inf there reaches neither the value nor the gradient. The mean runs over
    ``count(keep) * (features per kept entry)`` elements; no host sync.

    Args:
        prediction: the estimate.
        target: what it should match (same shape).
        keep: which entries count, or ``None`` for all.

    Returns:
        A scalar, in float32 at least (float64 inputs stay float64).

    Shapes:
        prediction, target: (B, ...). keep: (B,) or (B, T) bool (a prefix of the shape).
        Returns: ().
    """
    dtype = torch.promote_types(prediction.dtype, torch.float32)
    prediction, target = prediction.to(dtype), target.to(dtype)
    if keep is None:
        return (prediction - target).square().mean()
    where = keep.reshape(keep.shape + (1,) * (prediction.dim() - keep.dim()))
    diff = torch.where(where, prediction, 0.0) - torch.where(where, target, 0.0)
    per_entry = math.prod(prediction.shape[keep.dim() :])
    count = keep.sum().clamp(min=1).to(dtype) * per_entry
    return diff.square().sum() / count


def _kept_entries(
    x: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None,
    mask: Tensor | Mapping[str, Tensor] | None,
) -> dict[str, Tensor] | None:
    """Per modality, the entries that count: presence (B,) and step masks (B, T) combined."""
    names = sorted(x)
    batch = x[names[0]].shape[0]
    keep = {} if present is None else dict(check_presence(present, names, batch))
    if mask is None:
        return keep or None
    steps = dict.fromkeys(names, mask) if isinstance(mask, Tensor) else dict(mask)
    unknown = sorted(set(steps) - set(names))
    if unknown:
        raise ValueError(f"mask: unknown {unknown}; modalities are {names}")
    for m, step_mask in sorted(steps.items()):
        if step_mask.dtype != torch.bool:
            raise ValueError(f"modality {m!r}: step mask must be bool, got {step_mask.dtype}")
        if x[m].dim() < 3 or step_mask.shape != x[m].shape[:2]:
            wanted = tuple(x[m].shape[:2]) if x[m].dim() >= 3 else "none: not a sequence"
            raise ValueError(
                f"modality {m!r}: a step mask (B, T) needs a target of shape (B, T, ...); "
                f"got a mask of shape {tuple(step_mask.shape)} for a target of shape "
                f"{tuple(x[m].shape)} (expected mask shape: {wanted})"
            )
        step_mask = step_mask.to(x[m].device)
        keep[m] = step_mask if m not in keep else step_mask & keep[m][:, None]
    return keep


@overload
def reconstruction_loss(
    x_hat: Mapping[str, Tensor],
    x: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None = ...,
    *,
    mask: Tensor | Mapping[str, Tensor] | None = ...,
    weights: Mapping[str, float] | None = ...,
    per_modality: Literal[False] = ...,
    check_finite: bool = ...,
) -> Tensor: ...


@overload
def reconstruction_loss(
    x_hat: Mapping[str, Tensor],
    x: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None = ...,
    *,
    mask: Tensor | Mapping[str, Tensor] | None = ...,
    weights: Mapping[str, float] | None = ...,
    per_modality: Literal[True],
    check_finite: bool = ...,
) -> tuple[Tensor, dict[str, Tensor]]: ...


def reconstruction_loss(
    x_hat: Mapping[str, Tensor],
    x: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None = None,
    *,
    mask: Tensor | Mapping[str, Tensor] | None = None,
    weights: Mapping[str, float] | None = None,
    per_modality: bool = False,
    check_finite: bool = True,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """The MFM reconstruction term sum_m lambda_m * ell_X(X_m, X_hat_m), with masks.

    Each modality's term is the MSE over the samples where that modality is present,
    averaged over those samples and all their features (so a modality seen by half the
    batch weighs as much as one seen by all of it); a modality present in no sample
    contributes exactly 0. Absent targets may hold anything, NaN included: they reach
    neither the value nor the gradient.

    Sequences (B, T, D) with padding take a step mask (B, T) in ``mask``: the term is
    then the MSE over the valid steps of the present samples, averaged over those steps
    and their features; padded steps, like absent samples, never count.

    To train reconstruction of *missing* modalities through surrogate codes, pass the
    complement of the observed mask: ``{m: ~observed[m] for m in observed}``.

    A NaN or inf in a *present* target or reconstruction would make the loss NaN without
    a trace; by default it raises instead, naming the modality. The check reads one
    scalar, the total, on the host (one sync per call); only when it is not finite are
    the inputs inspected to name the culprits. It is skipped under
    :func:`torch.compile`. Pass ``check_finite=False`` where the sync matters.

    Args:
        x_hat: modality name -> reconstruction X_hat_m.
        x: modality name -> target X_m (same names and shapes as ``x_hat``).
        present: modality name -> which samples count, or ``None`` for all.
        mask: step masks, True on valid steps: one (B, T) tensor for every modality, or
            modality name -> (B, T) for some of them (e.g. the sequences of a model that
            also has vectors); ``None`` for no step mask.
        weights: lambda_m by modality name; unnamed modalities weigh 1.
        per_modality: also return the unweighted term of every modality (for logging).
        check_finite: raise on NaN/inf in the present rows of ``x`` or ``x_hat`` (one
            host sync).

    Returns:
        The weighted sum of the terms (a scalar), and with ``per_modality=True`` also a
        dict modality name -> unweighted term.

    Raises:
        ValueError: names that differ between ``x_hat``, ``x``, ``present`` and
            ``weights``, unknown names in ``mask``, shapes that differ, batch sizes that
            differ, a step mask that is not bool (B, T) for a (B, T, ...) target, or (with
            ``check_finite``) non-finite present values: the message names each such
            modality, whether the target or the reconstruction, and the count.

    Shapes:
        x_hat[m], x[m]: (B, ...) e.g. (B, D), (B, T, D) or (B, C, H, W). present[m]: (B,)
        bool. mask: (B, T) bool or {m: (B, T) bool}. Returns: () and {m: ()}.

    Examples:
        >>> x = {"a": torch.ones(2, 3), "img": torch.zeros(2, 1, 4, 4)}
        >>> x_hat = {"a": torch.zeros(2, 3), "img": torch.zeros(2, 1, 4, 4)}
        >>> present = {"a": torch.tensor([True, False]), "img": torch.tensor([True, True])}
        >>> reconstruction_loss(x_hat, x, present, weights={"a": 0.5})
        tensor(0.5000)
    """
    names = check_modality_names(x.keys())
    check_names(x_hat.keys(), names, "reconstruction modalities")
    if weights is not None and set(weights) - set(names):
        raise ValueError(
            f"weights: unknown {sorted(set(weights) - set(names))}; modalities are {list(names)}"
        )
    batch = x[names[0]].shape[0]
    for m in names:
        if x_hat[m].shape != x[m].shape:
            raise ValueError(
                f"modality {m!r}: reconstruction of shape {tuple(x_hat[m].shape)} does not "
                f"match the target's {tuple(x[m].shape)}"
            )
        if x[m].shape[0] != batch:
            raise ValueError(
                f"modality {m!r}: batch size {x[m].shape[0]} differs from modality "
                f"{names[0]!r} (batch size {batch})"
            )
    keep = _kept_entries(x, present, mask)
    terms = {m: masked_mse(x_hat[m], x[m], None if keep is None else keep.get(m)) for m in names}
    total = sum(
        (terms[m] * (1.0 if weights is None else weights.get(m, 1.0)) for m in names),
        start=torch.zeros((), dtype=terms[names[0]].dtype, device=terms[names[0]].device),
    )
    # A non-finite present value always makes the total non-finite (absent rows are
    # replaced before the difference), so the scalar is checked first and the inputs
    # are inspected only to name the culprits.
    if check_finite and not torch.compiler.is_compiling() and not bool(total.isfinite()):
        check_all_finite({"target": x, "reconstruction": x_hat}, keep)
    return (total, terms) if per_modality else total


class ReconstructionLoss(nn.Module):
    """Module form of :func:`reconstruction_loss` holding the weights lambda_m.

    Args:
        weights: lambda_m by modality name; unnamed modalities weigh 1.
        check_finite: raise on NaN/inf in present targets or reconstructions (one host
            sync per call; see :func:`reconstruction_loss`).

    Shapes:
        x_hat[m], x[m]: (B, ...). present[m]: (B,) bool. mask: (B, T) bool or
        {m: (B, T) bool}. Returns: ().
    """

    def __init__(
        self, weights: Mapping[str, float] | None = None, *, check_finite: bool = True
    ) -> None:
        super().__init__()
        self.weights = None if weights is None else dict(weights)
        self.check_finite = check_finite

    def forward(
        self,
        x_hat: Mapping[str, Tensor],
        x: Mapping[str, Tensor],
        present: Mapping[str, Tensor] | None = None,
        *,
        mask: Tensor | Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """The weighted masked reconstruction loss; see :func:`reconstruction_loss`."""
        return reconstruction_loss(
            x_hat, x, present, mask=mask, weights=self.weights, check_finite=self.check_finite
        )

    def extra_repr(self) -> str:
        return f"weights={self.weights}, check_finite={self.check_finite}"
