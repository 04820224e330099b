"""Positive-definite kernels for the MMD prior loss.

A kernel here is a sum of *components* that all depend on the squared Euclidean distance
``r = ||x - y||^2`` only, so every component of every scale shares one squared-distance
matrix. Two component families exist:

* Gaussian: ``k(r) = exp(-r / h)`` with ``h = 2 * bandwidth^2``.
* Inverse multiquadratic (WAE): ``k(r) = C / (C + r)`` with ``C = 2 * d * sigma^2 * scale``.

Both have ``k(0) = 1``. The MMD engine evaluates blocks of the kernel matrix *centred*,
``k(r) - k(r0)`` at a typical distance ``r0``, because at the MFM bandwidth the kernel is
within a few percent of 1 everywhere and the MMD is a small difference of large sums:
subtracting the constant before summing keeps float32 block sums accurate (the constant's
share is added back exactly).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

__all__ = [
    "GaussianKernel",
    "InverseMultiquadraticKernel",
    "Kernel",
    "KernelPlan",
    "SumKernel",
]

ComponentKind = Literal["gaussian", "imq"]
_GAUSSIAN: ComponentKind = "gaussian"
_IMQ: ComponentKind = "imq"


class KernelPlan(NamedTuple):
    """A kernel resolved for one call: the component families and their parameters.

    Attributes:
        kinds: family of each component, ``"gaussian"`` or ``"imq"``.
        params: (S,) tensor, ``h`` for a Gaussian component (``k = exp(-r / h)``) and
            ``C`` for an inverse multiquadratic one (``k = C / (C + r)``). Detached: no
            gradient flows into a bandwidth chosen from the data.
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
        """Dense, out-of-place kernel values for squared distances ``r``.

        With ``params`` of shape (S,), ``r`` may have any shape; with a batch of plans,
        ``params`` (G, S), ``r`` is (G, ...) and plan g applies to ``r[g]``.
        """
        out = torch.zeros_like(r)
        for i, kind in enumerate(self.kinds):
            p = _per_block(self.params[..., i], r)
            out = out + (torch.exp(-r / p) if kind == "gaussian" else p / (p + r))
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


class Kernel:
    """Base class: a kernel of the squared distance, resolved per call into a plan.

    Kernels add: ``GaussianKernel(bandwidth=1.0) + InverseMultiquadraticKernel()`` is a
    :class:`SumKernel` whose components share one squared-distance matrix.
    """

    def plan(
        self,
        x: Tensor,
        y: Tensor | None = None,
        x_weight: Tensor | None = None,
        y_weight: Tensor | None = None,
    ) -> KernelPlan:
        """Resolve the components for samples ``x`` (and ``y``), e.g. a data bandwidth.

        Args:
            x: (N, D) first sample.
            y: (M, D) second sample, if any.
            x_weight: (N,) presence weights of ``x`` (0 = excluded), if any.
            y_weight: (M,) presence weights of ``y``, if any.

        Returns:
            The plan, with parameters in ``x``'s dtype and device.
        """
        raise NotImplementedError

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Dense kernel matrix ``K[i, j] = k(x_i, y_j)``.

        Shapes:
            x: (N, D), y: (M, D) -> (N, M).

        Examples:
            >>> k = GaussianKernel(bandwidth=1.0)
            >>> k(torch.zeros(2, 3), torch.zeros(4, 3)).shape
            torch.Size([2, 4])
        """
        r = squared_distances(x, y)
        return self.plan(x, y).evaluate(r)

    def __add__(self, other: Kernel) -> SumKernel:
        return SumKernel(self, other)


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """Pairwise squared distances from squared norms and one matmul, clamped at 0.

    Shapes:
        x: (N, D), y: (M, D) -> (N, M).
    """
    xx = (x * x).sum(-1)
    yy = (y * y).sum(-1)
    return torch.addmm(yy.unsqueeze(0), x, y.mT, alpha=-2.0).add_(xx.unsqueeze(1)).clamp_min_(0)


def _as_scales(values: float | Sequence[float], name: str) -> tuple[float, ...]:
    out = (float(values),) if isinstance(values, (int, float)) else tuple(map(float, values))
    if not out or not all(math.isfinite(v) and v > 0 for v in out):
        raise ValueError(f"{name} must be positive and finite, got {values!r}")
    return out


class GaussianKernel(Kernel):
    """Gaussian (RBF) kernel ``k(x, y) = exp(-||x - y||^2 / (2 * bandwidth^2))``.

    Args:
        bandwidth: ``sigma``, one value or several (a multi-scale sum sharing one
            distance matrix). ``None`` chooses it with ``rule``.
        rule: used when ``bandwidth`` is None. ``"mfm"``: ``2 sigma^2 = D^2``, i.e.
            ``k = exp(-||x - y||^2 / D^2)`` with D the number of features, the MFM
            reference value. ``"median"``: ``2 sigma^2`` = median of the pairwise squared
            distances of the pooled (present) points, i.e. ``k = exp(-r / median(r))``,
            computed on at most ``median_points`` evenly strided points (exact below that)
            so that no second pass over the full n x n matrix is needed.
        median_points: subsample size for the median rule.

    Examples:
        >>> k = GaussianKernel()  # the MFM default
        >>> float(k(torch.zeros(1, 4), torch.ones(1, 4)))  # exp(-4 / 16)
        0.7788007855415344
    """

    def __init__(
        self,
        bandwidth: float | Sequence[float] | None = None,
        *,
        rule: Literal["mfm", "median"] = "mfm",
        median_points: int = 512,
    ) -> None:
        if rule not in ("mfm", "median"):
            raise ValueError(f"rule must be 'mfm' or 'median', got {rule!r}")
        if median_points < 2:
            raise ValueError(f"median_points must be >= 2, got {median_points}")
        self.bandwidth = None if bandwidth is None else _as_scales(bandwidth, "bandwidth")
        self.rule = rule
        self.median_points = median_points

    def plan(
        self,
        x: Tensor,
        y: Tensor | None = None,
        x_weight: Tensor | None = None,
        y_weight: Tensor | None = None,
    ) -> KernelPlan:
        if self.bandwidth is not None:
            h = [2.0 * s * s for s in self.bandwidth]
            params = torch.tensor(h, dtype=x.dtype, device=x.device)
        elif self.rule == "mfm":
            params = torch.full((1,), float(x.shape[-1]) ** 2, dtype=x.dtype, device=x.device)
        else:
            med = median_squared_distance(x, y, x_weight, y_weight, self.median_points)
            params = med.reshape(1)
        return KernelPlan((_GAUSSIAN,) * params.numel(), params)

    def __repr__(self) -> str:
        if self.bandwidth is not None:
            return f"GaussianKernel(bandwidth={self.bandwidth})"
        return f"GaussianKernel(rule={self.rule!r})"


class InverseMultiquadraticKernel(Kernel):
    """Inverse multiquadratic kernel of the WAE paper, summed over scales.

    ``k(x, y) = sum_s C_s / (C_s + ||x - y||^2)`` with ``C_s = 2 * D * prior_variance * s``
    (D the number of features), as in Tolstikhin et al. (2018).

    Args:
        scales: the multipliers ``s``.
        prior_variance: ``sigma^2`` of the prior the latents are pulled toward.

    Examples:
        >>> k = InverseMultiquadraticKernel(scales=(1.0,))
        >>> float(k(torch.zeros(1, 2), torch.ones(1, 2)))  # C = 4: 4 / (4 + 2)
        0.6666666865348816
    """

    def __init__(
        self,
        scales: float | Sequence[float] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0),
        *,
        prior_variance: float = 1.0,
    ) -> None:
        self.scales = _as_scales(scales, "scales")
        self.prior_variance = _as_scales(prior_variance, "prior_variance")[0]

    def plan(
        self,
        x: Tensor,
        y: Tensor | None = None,
        x_weight: Tensor | None = None,
        y_weight: Tensor | None = None,
    ) -> KernelPlan:
        base = 2.0 * x.shape[-1] * self.prior_variance
        params = torch.tensor([base * s for s in self.scales], dtype=x.dtype, device=x.device)
        return KernelPlan((_IMQ,) * len(self.scales), params)

    def __repr__(self) -> str:
        return f"InverseMultiquadraticKernel(scales={self.scales})"


class SumKernel(Kernel):
    """Sum of kernels; all components share one squared-distance matrix.

    Examples:
        >>> k = GaussianKernel(bandwidth=1.0) + InverseMultiquadraticKernel(scales=1.0)
        >>> k.plan(torch.zeros(3, 2)).kinds
        ('gaussian', 'imq')
    """

    def __init__(self, *kernels: Kernel) -> None:
        if not kernels:
            raise ValueError("SumKernel needs at least one kernel")
        self.kernels = kernels

    def plan(
        self,
        x: Tensor,
        y: Tensor | None = None,
        x_weight: Tensor | None = None,
        y_weight: Tensor | None = None,
    ) -> KernelPlan:
        plans = [k.plan(x, y, x_weight, y_weight) for k in self.kernels]
        kinds = tuple(kind for p in plans for kind in p.kinds)
        return KernelPlan(kinds, torch.cat([p.params for p in plans]))

    def __repr__(self) -> str:
        return " + ".join(map(repr, self.kernels))


def median_squared_distance(
    x: Tensor,
    y: Tensor | None,
    x_weight: Tensor | None,
    y_weight: Tensor | None,
    max_points: int,
) -> Tensor:
    """Median of the pairwise squared distances among the present pooled points.

    Uses at most ``max_points`` evenly strided points (all of them below that), so the
    cost is independent of the sample size and there is no host synchronisation.

    Returns:
        0-dim tensor, detached, clamped away from 0.
    """
    pts = x.detach() if y is None else torch.cat([x.detach(), y.detach()])
    w = _pooled_weight(x, y, x_weight, y_weight)
    step = max(1, -(-pts.shape[0] // max_points))
    pts, w = pts[::step], w[::step]
    r = squared_distances(pts, pts)
    i, j = torch.triu_indices(pts.shape[0], pts.shape[0], 1, device=pts.device)
    pair = r[i, j]
    # Pairs with an absent point become NaN, which nanmedian skips.
    pair = torch.where((w[i] > 0) & (w[j] > 0), pair, torch.full_like(pair, math.nan))
    med = torch.nanmedian(pair)
    return torch.nan_to_num(med, nan=1.0).clamp_min(torch.finfo(pts.dtype).tiny)


def _pooled_weight(
    x: Tensor, y: Tensor | None, x_weight: Tensor | None, y_weight: Tensor | None
) -> Tensor:
    wx = torch.ones(x.shape[0], dtype=x.dtype, device=x.device) if x_weight is None else x_weight
    if y is None:
        return wx
    wy = torch.ones(y.shape[0], dtype=y.dtype, device=y.device) if y_weight is None else y_weight
    return torch.cat([wx.to(x.dtype), wy.to(x.dtype)])
