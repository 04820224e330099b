"""A kernel resolved for one MMD call: component families, parameters, and their blocks.

Every component depends on the squared distance ``r = ||x - y||^2`` only:

* Gaussian: ``k(r) = exp(-r / h)``, slope ``k'(r) = -k / h``;
* inverse multiquadratic: ``k(r) = C / (C + r)``, slope ``k'(r) = -k^2 / C``.

Both have ``k(0) = 1``. The public kernels (:mod:`factorkit.kernels`) resolve themselves
into a :class:`KernelPlan`; the MMD engine only ever sees plans.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

ComponentKind = Literal["gaussian", "imq"]


class KernelPlan(NamedTuple):
    """A kernel resolved for one call.

    Attributes:
        kinds: family of each component, ``"gaussian"`` or ``"imq"``.
        params: (S,) tensor, or (G, S) for a batch of G plans: ``h`` for a Gaussian
            component and ``C`` for an inverse multiquadratic one. Detached: no gradient
            flows into a bandwidth chosen from the data.
    """

    kinds: tuple[ComponentKind, ...]
    params: Tensor

    @property
    def single_gaussian(self) -> bool:
        """True when the plan is one Gaussian component (the fast in-place path)."""
        return self.kinds == ("gaussian",)

    def value_at_zero(self) -> float:
        """``k(0)``: every component equals 1 at distance 0."""
        return float(len(self.kinds))

    def at(self, r: Tensor) -> tuple[Tensor, Tensor]:
        """Per-component value ``k_s(r)`` and slope ``dk_s/dr`` at a scalar ``r``, (S,) each."""
        gauss = torch.tensor([k == "gaussian" for k in self.kinds], device=self.params.device)
        p = self.params
        value = torch.where(gauss, torch.exp(-r / p), p / (p + r))
        slope = torch.where(gauss, -value / p, -value.square() / p)
        return value, slope

    def evaluate(self, r: Tensor) -> Tensor:
        """Dense, out-of-place (differentiable) kernel values for squared distances ``r``.

        With ``params`` of shape (S,), ``r`` may have any shape; with a batch of plans,
        ``params`` (G, S), ``r`` is (G, ...) and plan g applies to ``r[g]``.
        """
        out = torch.zeros_like(r)
        for i, kind in enumerate(self.kinds):
            p = _per_block(self.params[..., i], r)
            out = out + (torch.exp(-r / p) if kind == "gaussian" else p / (p + r))
        return out

    def slope(self, r: Tensor) -> Tensor:
        """Dense, out-of-place (differentiable) slopes ``dk/dr``; shapes as :meth:`evaluate`."""
        out = torch.zeros_like(r)
        for i, kind in enumerate(self.kinds):
            p = _per_block(self.params[..., i], r)
            # Gaussian: k' = -k / h; inverse multiquadratic: k' = -C / (C + r)^2.
            gaussian = kind == "gaussian"
            out = out - (torch.exp(-r / p) / p if gaussian else p / (p + r).square())
        return out


def _per_block(value: Tensor, r: Tensor) -> Tensor:
    """A scalar, or a (G,) value per plan, shaped to broadcast against r (G, ...)."""
    return value.reshape(value.shape + (1,) * (r.dim() - value.dim()))


def centered_block_(r: Tensor, plan: KernelPlan, centre: Tensor) -> tuple[Tensor, Tensor]:
    """Kernel values and slopes of a block, minus their values at a reference distance.

    Args:
        r: block of squared distances, clamped at 0 (used as scratch).
        plan: the resolved kernel; with a batch of plans, ``params`` (G, S) and ``r``
            (G, ...), plan g applies to ``r[g]``.
        centre: component values ``k_s(r0)`` at the reference distance ``r0``, shaped
            like ``plan.params`` (zeros give the plain values and slopes).

    Returns:
        ``(k(r) - k(r0), dk/dr(r) - dk/dr(r0))``, both the shape of ``r``.
    """
    value = torch.zeros_like(r)
    slope = torch.zeros_like(r)
    for i, kind in enumerate(plan.kinds):
        p, c = (_per_block(t[..., i], r) for t in (plan.params, centre))
        if kind == "gaussian":
            # k' = -k / h, so the centred slope is the centred value times -1/h.
            term = torch.mul(r, -1.0 / (p * math.log(2.0))).exp2_().sub_(c)
            value.add_(term)
            slope.sub_(term / p)
        else:
            # k = C / (C + r), k' = -k^2 / C: k'(r) - k'(r0) = -(k - k0)(k + k0) / C.
            k = torch.add(r, p).reciprocal_().mul_(p)
            value.add_(k).sub_(c)
            slope.sub_((k - c) * (k + c) / p)
    return value, slope
