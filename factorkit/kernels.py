"""Positive-definite kernels for the MMD prior loss.

A kernel here is a sum of *components* that all depend on the squared Euclidean distance
``r = ||x - y||^2`` only, so every component of every scale shares one squared-distance
matrix, and every kernel is translation invariant (the MMD centres the pooled points
before computing distances, which keeps float32 accurate on data far from the origin).
Two component families exist:

* Gaussian: ``k(r) = exp(-r / h)`` with ``h = 2 * bandwidth^2``.
* Inverse multiquadratic (WAE): ``k(r) = C / (C + r)`` with ``C = 2 * d * sigma^2 * scale``.

Both have ``k(0) = 1``. New kernels are built by adding these (``SumKernel``); the MMD
engine evaluates no other component family.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

from factorkit._kernel_plan import ComponentKind, KernelPlan

__all__ = ["GaussianKernel", "InverseMultiquadraticKernel", "Kernel", "SumKernel"]

_GAUSSIAN: ComponentKind = "gaussian"
_IMQ: ComponentKind = "imq"


class Kernel:
    """Base class of the kernels: a function of the squared distance, resolved per call.

    The MMD evaluates Gaussian and inverse multiquadratic components only, so kernels are
    made by adding the ones offered here, not by subclassing. Kernels add:
    ``GaussianKernel(bandwidth=1.0) + InverseMultiquadraticKernel()`` is a
    :class:`SumKernel` whose components share one squared-distance matrix.
    """

    def _plan(
        self,
        x: Tensor,
        y: Tensor | None = None,
        x_weight: Tensor | None = None,
        y_weight: Tensor | None = None,
    ) -> KernelPlan:
        """Resolve the components for samples ``x`` (and ``y``), e.g. a data bandwidth.

        Private to factorkit: the plan is an engine detail.

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
        return self._plan(x, y).evaluate(r)

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
            so that no second pass over the full n x n matrix is needed. When more than
            half of the pairs coincide the median collapses to 0 (or to below ``eps``
            times the mean pairwise squared distance, ``eps`` that of the dtype); the
            mean pairwise squared distance is then used instead, and when every point
            coincides (the mean is 0 as well) the MFM value ``D^2``: the bandwidth, the
            MMD and its gradients stay finite.
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

    def _plan(
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

    def _plan(
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
        >>> x, y = torch.zeros(2, 3), torch.ones(1, 3)
        >>> k(x, y).shape  # exp(-3 / 2) + C / (C + 3), C = 6
        torch.Size([2, 1])
    """

    def __init__(self, *kernels: Kernel) -> None:
        if not kernels:
            raise ValueError("SumKernel needs at least one kernel")
        self.kernels = kernels

    def _plan(
        self,
        x: Tensor,
        y: Tensor | None = None,
        x_weight: Tensor | None = None,
        y_weight: Tensor | None = None,
    ) -> KernelPlan:
        plans = [k._plan(x, y, x_weight, y_weight) for k in self.kernels]
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
        0-dim tensor, detached, positive: the median, or the fallbacks of a collapsed
        median (see :class:`GaussianKernel`).
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
    return _uncollapsed(torch.nanmedian(pair), torch.nanmean(pair), pts.shape[1])


def _uncollapsed(median: Tensor, mean: Tensor, features: int) -> Tensor:
    """The median, or the mean, or ``D^2``: the first that is a usable bandwidth.

    A median of 0 (or so far below the mean that ``1 / h`` loses every distance but 0)
    would give a kernel that is 1 on coinciding pairs and 0 elsewhere, with an infinite
    slope; NaN (no present pair at all) takes the last fallback too. No host sync.
    """
    info = torch.finfo(median.dtype)
    usable_median = median > torch.clamp_min(mean * info.eps, info.tiny)
    fallback = torch.where(mean > info.tiny, mean, torch.full_like(mean, float(features) ** 2))
    return torch.where(usable_median, median, fallback)


def _pooled_weight(
    x: Tensor, y: Tensor | None, x_weight: Tensor | None, y_weight: Tensor | None
) -> Tensor:
    wx = torch.ones(x.shape[0], dtype=x.dtype, device=x.device) if x_weight is None else x_weight
    if y is None:
        return wx
    wy = torch.ones(y.shape[0], dtype=y.dtype, device=y.device) if y_weight is None else y_weight
    return torch.cat([wx.to(x.dtype), wy.to(x.dtype)])
