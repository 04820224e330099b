"""The one MMD core: a batch of MMD^2 problems, checked once, centred, then evaluated.

:func:`~factorkit.mmd_loss.mmd`, :func:`~factorkit.mmd_loss.gaussian_prior_mmd` and
:class:`~factorkit.mmd_loss.MMDPriorLoss` (one latent or all of them) all describe their
work as :class:`Problem` s and call :func:`batched_mmd`; a single call is a batch of one.

For every problem the core

1. casts to the compute dtype (float32, float64 if an input is float64) and zeroes absent
   rows (they may hold anything);
2. centres the pooled present points: every kernel depends on ``||x - y||^2`` only, and
   distances from squared norms, ``|a|^2 - 2 a.b + |b|^2``, lose the digits of an offset;
3. resolves the kernel, then checks, with one host sync for the whole batch, that present
   rows are finite and that the squared distances keep precision at the kernel's scale;
4. evaluates small biased problems together as one batched kernel matrix
   (:func:`~factorkit._mmd_engine.small_kernel_quadratic`), the others with the one-pass
   engine or random Fourier features, and adds the closed-form prior terms.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from factorkit._kernel_plan import KernelPlan
from factorkit._mmd_engine import SMALL_ROWS, small_kernel_quadratic, weighted_kernel_sum
from factorkit.kernels import Kernel

Estimator = Literal["biased", "unbiased"]
Mode = Literal["dense", "chunked", "rff"]

PRECISION_LIMIT = 1.0
"""Largest tolerated ``eps * max |w - centre|^2 / h``: the rounding error of a squared
distance relative to the kernel's scale. Beyond it kernel values are off by a factor e or
more (data spread far wider than the bandwidth, or squares that overflow), and the MMD
raises instead of returning a wrong value."""


class Problem(NamedTuple):
    """One MMD^2: a sample ``x`` against a sample ``y`` or against a Gaussian prior.

    Attributes:
        labels: how errors name ``x`` and ``y`` (e.g. ``"x"``, ``"latent 'audio'"``).
        x: (N, D) sample; x_mask: (N,) bool presence or None.
        y: (M, D) second sample, or None with ``prior`` (loc, scale) for the closed-form
            prior terms of a diagonal Gaussian.
    """

    labels: tuple[str, str]
    x: Tensor
    x_mask: Tensor | None
    y: Tensor | None = None
    y_mask: Tensor | None = None
    prior: tuple[Tensor | float, Tensor | float] | None = None


class Options(NamedTuple):
    """How every problem of a batch is evaluated (see :func:`~factorkit.mmd_loss.mmd`)."""

    kernel: Kernel
    estimator: Estimator
    mode: Mode
    chunk_size: int
    features: int
    check_finite: bool
    generator: torch.Generator | None = None


class _Prepared(NamedTuple):
    """A problem in the compute dtype: centred points, weights, kernel and prior moments."""

    x: Tensor  # (N, D) centred on the pooled present points, absent rows 0
    y: Tensor  # (M, D) the same; (0, D) against a prior
    ux: Tensor  # (N,) presence weights
    uy: Tensor  # (M,)
    raw: tuple[Tensor, Tensor]  # x and y before centring, absent rows 0
    plan: KernelPlan
    moments: tuple[Tensor, Tensor] | None  # prior (loc, scale), (D,) each
    # eps * max |w - centre|^2 / h: rounding of a squared distance at the kernel's scale;
    # NaN or inf for non-finite present values.
    rounding: Tensor

    @property
    def small(self) -> bool:
        return self.x.shape[0] + self.y.shape[0] <= SMALL_ROWS


def batched_mmd(problems: Sequence[Problem], opts: Options) -> list[Tensor]:
    """MMD^2 of every problem, 0-dim each, in the problem's dtype (float32 or float64).

    Raises:
        ValueError: a bad mask or a non-Gaussian kernel for the prior terms; with
            ``opts.check_finite``, non-finite present values, a non-positive prior scale,
            or data whose squared distances lose all precision at the kernel's scale.
            Without the check, the last gives NaN (as non-finite values do).
    """
    dtypes = [compute_dtype(p.x, p.y) for p in problems]
    with torch.autocast(problems[0].x.device.type, enabled=False):
        prepared = [_prepare(p, opts.kernel, d) for p, d in zip(problems, dtypes, strict=True)]
        checked = opts.check_finite and not torch.compiler.is_compiling()
        if checked:
            _check(problems, prepared)
        values: dict[int, Tensor] = {}
        for group in _small_groups(prepared, opts):
            values.update(zip(group, _small_batch([prepared[i] for i in group]), strict=True))
        out = []
        for i, (p, dtype) in enumerate(zip(prepared, dtypes, strict=True)):
            value = values[i] if i in values else _single(p, opts)
            value = torch.where(_valid(p, opts.estimator), value, torch.zeros_like(value))
            if not checked:
                # Unchecked, unusable data still gives NaN, never a wrong finite value.
                value = torch.where(p.rounding > PRECISION_LIMIT, math.nan, value)
            out.append(value.to(dtype))
        return out


def compute_dtype(x: Tensor, y: Tensor | None) -> torch.dtype:
    dtypes = (x.dtype,) if y is None else (x.dtype, y.dtype)
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _prepare(problem: Problem, kernel: Kernel, dtype: torch.dtype) -> _Prepared:
    x, ux = _cast(problem.x, problem.x_mask, problem.labels[0], dtype)
    if problem.y is None:
        y, uy = x[:0], ux[:0]
    else:
        y, uy = _cast(problem.y, problem.y_mask, problem.labels[1], dtype)
    # Any constant works (the kernels are translation invariant); the weighted mean of the
    # present points makes the subtraction exact for points within a factor 2 of it.
    w, u = torch.cat([x, y]), torch.cat([ux, uy])
    centre = ((u @ w) / u.sum().clamp_min(1.0)).detach()
    masked = problem.x_mask is not None or problem.y_mask is not None
    # Absent rows stay at 0, on the centre: they must not reach the rounding bound.
    wc = (w - centre) * u.unsqueeze(1) if masked else w - centre
    xc, yc = wc[: x.shape[0]], wc[x.shape[0] :]
    alone = problem.y is None
    plan = kernel._plan(xc, None, ux, None) if alone else kernel._plan(xc, yc, ux, uy)
    moments = None
    if problem.prior is not None:
        if any(kind != "gaussian" for kind in plan.kinds):
            raise ValueError(f"the analytic prior terms need a Gaussian kernel, got {kernel!r}")
        moments = _prior_moments(*problem.prior, x)
    eps = torch.finfo(dtype).eps
    rounding = (wc * wc).sum(1).max() * (eps / plan.params.min())
    return _Prepared(xc, yc, ux, uy, (x, y), plan, moments, rounding)


def _cast(t: Tensor, mask: Tensor | None, label: str, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Cast to the compute dtype; weights from the mask; absent rows zeroed."""
    t = t.to(dtype)
    if mask is None:
        return t, torch.ones(t.shape[0], dtype=dtype, device=t.device)
    if mask.shape != t.shape[:1] or mask.dtype != torch.bool:
        raise ValueError(
            f"the presence mask of {label} must be a bool tensor of shape ({t.shape[0]},), got "
            f"{mask.dtype} of shape {tuple(mask.shape)} for {label} of shape {tuple(t.shape)}"
        )
    present = mask.to(t.device)
    # Absent rows may hold anything (even NaN): they must not reach the sums.
    t = torch.where(present.unsqueeze(1), t, torch.zeros_like(t))
    return t, present.to(dtype)


def _prior_moments(loc: Tensor | float, scale: Tensor | float, z: Tensor) -> tuple[Tensor, Tensor]:
    """The prior's mean and standard deviation, expanded to (D,)."""
    if not isinstance(scale, Tensor) and not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    if not isinstance(loc, Tensor) and not math.isfinite(loc):
        raise ValueError(f"loc must be finite, got {loc!r}")
    d = z.shape[1]
    mu = torch.as_tensor(loc, dtype=z.dtype, device=z.device)
    sd = torch.as_tensor(scale, dtype=z.dtype, device=z.device)
    for name, t in (("loc", mu), ("scale", sd)):
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, d)):
            raise ValueError(f"{name} must be a scalar or ({d},), got shape {tuple(t.shape)}")
    return mu.expand(d), sd.expand(d)


def _check(problems: Sequence[Problem], prepared: Sequence[_Prepared]) -> None:
    """One host sync for the whole batch: finite present values, precision, prior scale."""
    flags = []
    for p in prepared:
        # NaN or inf anywhere makes the rounding bound NaN or inf too.
        flags.append(~(p.rounding <= PRECISION_LIMIT))
        if p.moments is not None:
            flags.append(~_usable_prior(*p.moments))
    if not any(torch.stack(flags).tolist()):
        return
    for problem, p in zip(problems, prepared, strict=True):
        message = _describe(problem, p)
        if message:
            raise ValueError(message)


def _usable_prior(loc: Tensor, scale: Tensor) -> Tensor:
    return loc.isfinite().all() & scale.isfinite().all() & (scale > 0).all()


def _describe(problem: Problem, p: _Prepared) -> str:
    """What is wrong with a problem that failed :func:`_check` ("" if nothing is)."""
    tensors = (problem.x, problem.y if problem.y is not None else problem.x)
    for k in (0, 1):
        if not bool(p.raw[k].isfinite().all()):
            row = int((~p.raw[k].isfinite().all(1)).nonzero()[0, 0])
            shape = tuple(tensors[k].shape)
            return f"{problem.labels[k]} has non-finite values (row {row}), shape {shape}"
    if not bool(p.rounding <= PRECISION_LIMIT):
        # The culprit: the sample, and its row, holding the value of largest magnitude.
        peak = [t.abs().amax(1) if t.shape[0] else t.new_zeros(1) for t in p.raw]
        k = 0 if peak[0].max() >= peak[1].max() else 1
        row = int(peak[k].argmax())
        centred = (p.x, p.y)[k][row]
        return (
            f"{problem.labels[k]} is spread too far for the kernel in {p.x.dtype}: row {row} "
            f"(largest |value| {float(peak[k][row]):.3g}) lies at squared distance "
            f"{float((centred * centred).sum()):.3g} from the centre of the pooled points "
            f"(inf: overflow), against a kernel scale of {float(p.plan.params.min()):.3g}, "
            f"so squared distances lose all precision (shape {tuple(tensors[k].shape)}); "
            f"rescale the data, widen the kernel or compute in float64"
        )
    if p.moments is None or bool(_usable_prior(*p.moments)):
        return ""
    loc, scale = p.moments
    return (
        f"the prior of {problem.labels[0]} needs a finite loc and a positive, finite scale, "
        f"got loc {loc.tolist()}, scale {scale.tolist()}"
    )


def _small_groups(prepared: Sequence[_Prepared], opts: Options) -> list[list[int]]:
    """Indices of the small biased dense problems, grouped by what one batch must share."""
    if opts.estimator != "biased" or opts.mode != "dense":
        return []
    groups: dict[tuple[object, ...], list[int]] = {}
    for i, p in enumerate(prepared):
        if p.small:
            rows = (p.x.shape[0], p.y.shape[0])
            key = (rows, p.x.dtype, p.x.device, p.plan.kinds, p.moments is None)
            groups.setdefault(key, []).append(i)
    return list(groups.values())


def _small_batch(members: list[_Prepared]) -> list[Tensor]:
    """Biased MMD^2 of small problems of one size as one batched kernel matrix.

    Codes of different widths are zero-padded to the widest: padding adds nothing to any
    distance, and a padded prior feature is a point mass at 0, which leaves the prior
    terms unchanged. Returns float64 values in the order of ``members``.
    """
    order = sorted(range(len(members)), key=lambda i: members[i].x.shape[1])
    ms = [members[i] for i in order]
    x, y = _stack_padded([m.x for m in ms]), _stack_padded([m.y for m in ms])
    ux, uy = torch.stack([m.ux for m in ms]), torch.stack([m.uy for m in ms])
    a = torch.cat([_mean_weights(ux), -_mean_weights(uy)], dim=1)
    plan = KernelPlan(ms[0].plan.kinds, torch.stack([m.plan.params for m in ms]))
    value = small_kernel_quadratic(torch.cat([x, y], dim=1), a, plan)
    if ms[0].moments is not None:
        z = _stack_padded([m.raw[0] for m in ms])
        loc, scale = (
            _stack_padded([m.moments[k].unsqueeze(0) for m in ms if m.moments is not None])
            for k in (0, 1)
        )
        value = value + _analytic_prior_terms(z, ux, loc, scale, plan)
    out: list[Tensor] = [value] * len(members)
    for k, v in zip(order, value.unbind(0), strict=True):
        out[k] = v
    return out


def _single(p: _Prepared, opts: Options) -> Tensor:
    """One problem by the one-pass engine or random Fourier features (float64)."""
    coef, diag = _coefficients(p.ux, p.uy, opts.estimator, single=p.moments is not None)
    if opts.mode == "rff":
        value = _rff_kernel_sum(p, opts.features, opts.generator, coef)
    else:
        chunk = (opts.chunk_size, opts.chunk_size) if opts.mode == "chunked" else None
        value = weighted_kernel_sum(p.x, p.y, p.ux, p.uy, coef, p.plan, chunk)
    # The U-statistic leaves out the diagonal, where every kernel equals k(0).
    value = value - p.plan.value_at_zero() * diag
    if p.moments is not None:
        value = value + _analytic_prior_terms(p.raw[0], p.ux, *p.moments, p.plan)
    return value


def _valid(p: _Prepared, estimator: Estimator) -> Tensor:
    """Whether enough rows are present (1 per sample, 2 for the U-statistic)."""
    need = 2.0 if estimator == "unbiased" else 1.0
    ok = p.ux.sum() >= need
    return ok if p.moments is not None else ok & (p.uy.sum() >= need)


def _coefficients(ux: Tensor, uy: Tensor, estimator: str, single: bool) -> tuple[Tensor, Tensor]:
    """Block coefficients ``c_xx, c_xy, c_yy`` and the diagonal's weight, float64.

    The weighted V-statistic is ``sum_ij A_ij k_ij`` with ``A_ij = c_{g(i)g(j)} u_i u_j``;
    the U-statistic also uses ``c_gg = 1 / (S_g^2 - sum u^2)`` and drops the diagonal,
    whose weight ``sum_i A_ii`` is returned. ``single`` keeps only the x-x block.
    """
    sx, sy = ux.double().sum(), uy.double().sum()
    qx, qy = ux.double().square().sum(), uy.double().square().sum()
    unbiased = estimator == "unbiased"
    # Clamped so that an empty mask gives finite (then discarded) values and gradients.
    cxx = 1.0 / (sx.square() - qx if unbiased else sx.square()).clamp_min(1.0)
    cyy = 1.0 / (sy.square() - qy if unbiased else sy.square()).clamp_min(1.0)
    cxy = -1.0 / (sx * sy).clamp_min(1.0)
    if single:
        cxy, cyy = torch.zeros_like(cxx), torch.zeros_like(cxx)
    diag = cxx * qx + cyy * qy if unbiased else torch.zeros_like(cxx)
    return torch.stack([cxx, cxy, cyy]), diag


def _rff_kernel_sum(
    p: _Prepared, features: int, generator: torch.Generator | None, coef: Tensor
) -> Tensor:
    """Random Fourier feature estimate of ``sum_ij A_ij k_ij``, diagonal included.

    ``phi(a) . phi(b)`` is an unbiased estimate of ``k(a, b)``, and ``phi(a) . phi(a)``
    equals ``k(0)`` exactly (cos^2 + sin^2), so the U-statistic's diagonal is still known.
    """
    plan = p.plan
    if any(kind != "gaussian" for kind in plan.kinds):
        raise ValueError(f"mode='rff' needs a Gaussian kernel, got components {plan.kinds}")
    d = p.x.shape[1]
    # exp(-r / h) is the characteristic function of omega ~ N(0, (2 / h) I).
    omega = torch.randn(len(plan.kinds), d, features, generator=generator, dtype=p.x.dtype)
    omega = omega.to(p.x.device) * torch.sqrt(2.0 / plan.params).view(-1, 1, 1)
    omega = omega.permute(1, 0, 2).reshape(d, -1)
    sums = []
    for t, u in ((p.x, p.ux), (p.y, p.uy)):
        proj = t @ omega
        phi = torch.cat([torch.cos(proj), torch.sin(proj)], 1) * (1.0 / math.sqrt(features))
        sums.append(u.double() @ phi.double())
    sx, sy = sums
    return coef[0] * (sx @ sx) + 2.0 * coef[1] * (sx @ sy) + coef[2] * (sy @ sy)


def _analytic_prior_terms(
    z: Tensor, u: Tensor, loc: Tensor, scale: Tensor, plan: KernelPlan
) -> Tensor:
    """``-2 mean_i E_p k(z_i, p) + E k(p, p')`` in float64, summed over Gaussian scales.

    Shapes:
        z: (..., B, D), u: (..., B), plan.params: (..., S), loc, scale: (D,) or
        (..., 1, D). Returns: (...).
    """
    zd, ud, var = z.double(), u.double(), scale.double().square()
    h = plan.params.double().unsqueeze(-1)  # (..., S, 1)
    var2 = h + 2.0 * var  # (..., S, D)
    log_c2 = 0.5 * torch.log(h / var2).sum(-1)  # (..., S)
    log_c4 = 0.5 * torch.log(h / (h + 4.0 * var)).sum(-1)
    dev = (zd - loc.double()).square()  # (..., B, D)
    cross = torch.exp(log_c2.unsqueeze(-2) - dev @ (1.0 / var2).mT).sum(-1)  # (..., B)
    mean_cross = (ud * cross).sum(-1) / ud.sum(-1).clamp_min(1.0)
    return -2.0 * mean_cross + torch.exp(log_c4).sum(-1)


def _stack_padded(tensors: list[Tensor]) -> Tensor:
    """Stack (B, D_g) tensors, sorted by D_g, into (G, B, max D_g) with zero features added.

    Tensors of one size are stacked first and padded once, so the cost is a few ops per
    distinct size, not per tensor.
    """
    width = tensors[-1].shape[-1]
    parts = []
    for _, same in itertools.groupby(tensors, key=lambda t: t.shape[-1]):
        block = torch.stack(list(same))
        parts.append(F.pad(block, (0, width - block.shape[-1])))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _mean_weights(u: Tensor) -> Tensor:
    """Presence weights normalised to sum 1 (all zero when nothing is present), float64."""
    ud = u.double()
    return ud / ud.sum(-1, keepdim=True).clamp_min(1.0)
