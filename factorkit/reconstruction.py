"""The masked reconstruction loss: sum_m lambda_m * MSE(X_m, X_hat_m) over present samples."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal, overload

import torch
from torch import Tensor, nn

from factorkit._validation import check_finite as check_all_finite
from factorkit._validation import check_modality_names, check_names
from factorkit.masks import check_presence, fill_absent

__all__ = ["ReconstructionLoss", "masked_mse", "reconstruction_loss"]


def masked_mse(prediction: Tensor, target: Tensor, keep: Tensor | None) -> Tensor:
    """Mean squared error over the kept rows and all their features; 0 when none is kept.

    Rows that are not kept are replaced by zeros in both tensors before the difference
    (with :func:`torch.where`), so a NaN or inf there reaches neither the value nor the
    gradient. The mean runs over ``count(keep) * features`` elements; no host sync.

    Args:
        prediction: the estimate.
        target: what it should match (same shape).
        keep: which rows count, or ``None`` for all.

    Returns:
        A scalar, in float32 at least (float64 inputs stay float64).

    Shapes:
        prediction, target: (B, ...). keep: (B,) bool. Returns: ().
    """
    dtype = torch.promote_types(prediction.dtype, torch.float32)
    prediction, target = prediction.to(dtype), target.to(dtype)
    if keep is None:
        return (prediction - target).square().mean()
    diff = fill_absent(prediction, keep) - fill_absent(target, keep)
    per_row = math.prod(prediction.shape[1:])
    count = keep.sum().clamp(min=1).to(dtype) * per_row
    return diff.square().sum() / count


@overload
def reconstruction_loss(
    x_hat: Mapping[str, Tensor],
    x: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None = ...,
    *,
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
    weights: Mapping[str, float] | None = ...,
    per_modality: Literal[True],
    check_finite: bool = ...,
) -> tuple[Tensor, dict[str, Tensor]]: ...


def reconstruction_loss(
    x_hat: Mapping[str, Tensor],
    x: Mapping[str, Tensor],
    present: Mapping[str, Tensor] | None = None,
    *,
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
        weights: lambda_m by modality name; unnamed modalities weigh 1.
        per_modality: also return the unweighted term of every modality (for logging).
        check_finite: raise on NaN/inf in the present rows of ``x`` or ``x_hat`` (one
            host sync).

    Returns:
        The weighted sum of the terms (a scalar), and with ``per_modality=True`` also a
        dict modality name -> unweighted term.

    Raises:
        ValueError: names that differ between ``x_hat``, ``x``, ``present`` and
            ``weights``, shapes that differ, batch sizes that differ, or (with
            ``check_finite``) non-finite present values: the message names each such
            modality, whether the target or the reconstruction, and the count.

    Shapes:
        x_hat[m], x[m]: (B, ...) e.g. (B, D) or (B, C, H, W). present[m]: (B,) bool.
        Returns: () and {m: ()}.

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
    if present is not None:
        present = check_presence(present, names, batch)
    terms = {m: masked_mse(x_hat[m], x[m], None if present is None else present[m]) for m in names}
    total = sum(
        (terms[m] * (1.0 if weights is None else weights.get(m, 1.0)) for m in names),
        start=torch.zeros((), dtype=terms[names[0]].dtype, device=terms[names[0]].device),
    )
    # A non-finite present value always makes the total non-finite (absent rows are
    # replaced before the difference), so the scalar is checked first and the inputs
    # are inspected only to name the culprits.
    if check_finite and not torch.compiler.is_compiling() and not bool(total.isfinite()):
        check_all_finite({"target": x, "reconstruction": x_hat}, present)
    return (total, terms) if per_modality else total


class ReconstructionLoss(nn.Module):
    """Module form of :func:`reconstruction_loss` holding the weights lambda_m.

    Args:
        weights: lambda_m by modality name; unnamed modalities weigh 1.
        check_finite: raise on NaN/inf in present targets or reconstructions (one host
            sync per call; see :func:`reconstruction_loss`).

    Shapes:
        x_hat[m], x[m]: (B, ...). present[m]: (B,) bool. Returns: ().
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
    ) -> Tensor:
        """The weighted masked reconstruction loss; see :func:`reconstruction_loss`."""
        return reconstruction_loss(
            x_hat, x, present, weights=self.weights, check_finite=self.check_finite
        )

    def extra_repr(self) -> str:
        return f"weights={self.weights}, check_finite={self.check_finite}"
