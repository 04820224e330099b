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


class _Batch(NamedTuple):
    """Problems evaluated together, in the compute dtype, zero-padded to the widest.

    Small biased dense problems of one size form one batch; any other problem is a batch
    of one. Points are centred on each problem's pooled present points; absent rows and
    padded features are 0.
    """

    members: list[int]  # indices of the problems, sorted by width
    x: Tensor  # (G, N, D) centred
    y: Tensor  # (G, M, D) centred; M = 0 against a prior
    ux: Tensor  # (G, N) presence weights
    uy: Tensor  # (G, M)
    raw: tuple[Tensor, Tensor]  # x and y before centring
    plan: KernelPlan  # params (G, S)
    moments: tuple[Tensor, Tensor] | None  # prior loc, scale: (G, 1, D), scale padded 0
    # eps * max |w - centre|^2 / h per problem: rounding of a squared distance at the
    # kernel's scale; NaN or inf for non-finite present values.
    rounding: Tensor  # (G,)


def batched_mmd(problems: Sequence[Problem], opts: Options) -> list[Tensor]:
    """MMD^2 of every problem, 0-dim each, in the problem's dtype (float32 or float64).

    Raises:
        ValueError: a bad mask or a non-Gaussian kernel for the prior terms; with
            ``opts.check_finite``, non-finite present values, a non-positive prior scale,
            or data whose squared distances lose all precision at the kernel's scale.
            Without the check (or under ``torch.compile``) the last gives NaN, as
            non-finite values do.
    """
    out: dict[int, Tensor] = {}
    with torch.autocast(problems[0].x.device.type, enabled=False):
        batches = [_batch(problems, group, opts) for group in _groups(problems, opts)]
        checked = opts.check_finite and not torch.compiler.is_compiling()
        if checked:
            _check(problems, batches)
        for b in batches:
            value = _small(b) if _is_small(b, opts) else _single(b, opts)
            value = torch.where(_valid(b, opts.estimator), value, torch.zeros_like(value))
            if not checked:
                # Unchecked, unusable data still gives NaN, never a wrong finite value.
                value = torch.where(b.rounding > PRECISION_LIMIT, math.nan, value)
            out.update(zip(b.members, value.to(b.x.dtype).unbind(0), strict=True))
    return [out[i] for i in range(len(problems))]


def compute_dtype(x: Tensor, y: Tensor | None) -> torch.dtype:
    dtypes = (x.dtype,) if y is None else (x.dtype, y.dtype)
    return torch.float64 if torch.float64 in dtypes else torch.float32


def _groups(problems: Sequence[Problem], opts: Options) -> list[list[int]]:
    """Problems that one batch can hold: small biased dense ones of one size together."""
    groups: dict[tuple[object, ...], list[int]] = {}
    batched = opts.estimator == "biased" and opts.mode == "dense"
    for i, p in enumerate(problems):
        rows = (p.x.shape[0], 0 if p.y is None else p.y.shape[0])
        if batched and sum(rows) <= SMALL_ROWS:
            key: tuple[object, ...] = (rows, compute_dtype(p.x, p.y), p.x.device, p.y is None)
        else:
            key = (i,)
        groups.setdefault(key, []).append(i)
    return [sorted(g, key=lambda i: problems[i].x.shape[1]) for g in groups.values()]


def _is_small(b: _Batch, opts: Options) -> bool:
    """Whether the batch takes the small-batch path (every batch of several does)."""
    small = b.x.shape[1] + b.y.shape[1] <= SMALL_ROWS
    return small and opts.estimator == "biased" and opts.mode == "dense"


def _batch(problems: Sequence[Problem], members: list[int], opts: Options) -> _Batch:
    ps = [problems[i] for i in members]
    dtype = compute_dtype(ps[0].x, ps[0].y)
    x = _stack_padded([_to(p.x, dtype) for p in ps])
    y = _stack_padded([_to(p.x, dtype)[:0] if p.y is None else _to(p.y, dtype) for p in ps])
    ux = _weights([(p.x_mask, p.labels[0], p.x) for p in ps], x)
    uy = _weights([(p.y_mask, p.labels[1], p.y) for p in ps], y)
    masked = any(p.x_mask is not None or p.y_mask is not None for p in ps)
    if masked:
        # Absent rows may hold anything (even NaN): they must not reach the sums.
        x, y = (torch.where(u.unsqueeze(-1) > 0, t, 0.0) for t, u in ((x, ux), (y, uy)))
    with torch.no_grad():
        mass = (ux.sum(-1) + uy.sum(-1)).clamp_min(1.0).view(-1, 1, 1)
        centre = (ux.unsqueeze(1) @ x + uy.unsqueeze(1) @ y) / mass
    # Any constant works (the kernels are translation invariant); the weighted mean of the
    # present points makes the subtraction exact for points within a factor 2 of it.
    xc, yc = x - centre, y - centre
    if masked:
        # Absent rows stay at 0, on the centre: they must not reach the rounding bound.
        xc, yc = xc * ux.unsqueeze(-1), yc * uy.unsqueeze(-1)
    plan = _plans(problems, members, xc, yc, ux, uy, opts.kernel)
    moments = _moments(problems, members, x)
    sq = torch.cat([(xc * xc).sum(-1), (yc * yc).sum(-1)], dim=-1)
    rounding = sq.amax(-1) * (torch.finfo(dtype).eps / plan.params.amin(-1))
    return _Batch(members, xc, yc, ux, uy, (x, y), plan, moments, rounding)


def _plans(
    problems: Sequence[Problem],
    members: list[int],
    x: Tensor,
    y: Tensor,
    ux: Tensor,
    uy: Tensor,
    kernel: Kernel,
) -> KernelPlan:
    """Each member's kernel, resolved on its own (unpadded) centred points, stacked."""
    plans = []
    for g, i in enumerate(members):
        d = problems[i].x.shape[1]
        if problems[i].y is None:
            plans.append(kernel._plan(x[g, :, :d], None, ux[g], None))
        else:
            plans.append(kernel._plan(x[g, :, :d], y[g, :, :d], ux[g], uy[g]))
    if problems[members[0]].prior is not None and any(k != "gaussian" for k in plans[0].kinds):
        raise ValueError(f"the analytic prior terms need a Gaussian kernel, got {kernel!r}")
    return KernelPlan(plans[0].kinds, torch.stack([q.params for q in plans]))


def _moments(
    problems: Sequence[Problem], members: list[int], x: Tensor
) -> tuple[Tensor, Tensor] | None:
    """The members' prior (loc, scale), (G, 1, D); a padded feature is a point mass at 0."""
    priors = [problems[i].prior for i in members]
    if priors[0] is None:
        return None
    moments = [_prior_moments(*p, problems[i].x) for p, i in zip(priors, members, strict=True) if p]
    loc, scale = (_stack_padded([m[k].unsqueeze(0) for m in moments]) for k in (0, 1))
    return loc.to(x), scale.to(x)


def _to(t: Tensor, dtype: torch.dtype) -> Tensor:
    return t if t.dtype == dtype else t.to(dtype)


def _weights(samples: list[tuple[Tensor | None, str, Tensor | None]], like: Tensor) -> Tensor:
    """Presence weights (G, N) of stacked samples from their masks (None: all present)."""
    rows = like.shape[1]
    for mask, label, t in samples:
        if (
            mask is not None
            and t is not None
            and (mask.shape != (rows,) or mask.dtype != torch.bool)
        ):
            raise ValueError(
                f"the presence mask of {label} must be a bool tensor of shape ({rows},), got "
                f"{mask.dtype} of shape {tuple(mask.shape)} for {label} of shape {tuple(t.shape)}"
            )
    if all(mask is None for mask, _, _ in samples):
        return like.new_ones(like.shape[:2])
    ones = torch.ones(rows, dtype=torch.bool, device=like.device)
    masks = [ones if mask is None else mask.to(like.device) for mask, _, _ in samples]
    return torch.stack(masks).to(like.dtype)


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


def _check(problems: Sequence[Problem], batches: Sequence[_Batch]) -> None:
    """One host sync for every problem: finite present values, precision, prior scale."""
    # NaN or inf anywhere makes the rounding bound NaN or inf too.
    usable = (torch.cat([b.rounding for b in batches]) <= PRECISION_LIMIT).all()
    # A prior given as numbers was checked when its moments were made; tensors shared by
    # several problems (one prior for every latent) are checked once.
    locs = {id(p.prior[0]): p.prior[0] for p in problems if p.prior is not None}
    scales = {id(p.prior[1]): p.prior[1] for p in problems if p.prior is not None}
    for loc in locs.values():
        if isinstance(loc, Tensor):
            usable = usable & loc.isfinite().all()
    for scale in scales.values():
        if isinstance(scale, Tensor):
            usable = usable & _usable_prior(scale.new_zeros(()), scale)
    if bool(usable):
        return
    for b in batches:
        for g, i in enumerate(b.members):
            message = _describe(problems[i], b, g)
            if message:
                raise ValueError(message)


def _usable_prior(loc: Tensor, scale: Tensor) -> Tensor:
    return loc.isfinite().all() & scale.isfinite().all() & (scale > 0).all()


def _describe(problem: Problem, b: _Batch, g: int) -> str:
    """What is wrong with member ``g`` of a batch that failed :func:`_check` ("" if nothing)."""
    d = problem.x.shape[1]
    raw = [t[g, :, :d] for t in b.raw]
    centred = [t[g, :, :d] for t in (b.x, b.y)]
    tensors = (problem.x, problem.y if problem.y is not None else problem.x)
    for k in (0, 1):
        if not bool(raw[k].isfinite().all()):
            row = int((~raw[k].isfinite().all(1)).nonzero()[0, 0])
            shape = tuple(tensors[k].shape)
            return f"{problem.labels[k]} has non-finite values (row {row}), shape {shape}"
    if not bool(b.rounding[g] <= PRECISION_LIMIT):
        # The culprit: the sample, and its row, holding the value of largest magnitude.
        peak = [t.abs().amax(1) if t.shape[0] else t.new_zeros(1) for t in raw]
        k = 0 if peak[0].max() >= peak[1].max() else 1
        row = int(peak[k].argmax())
        point = centred[k][row]
        return (
            f"{problem.labels[k]} is spread too far for the kernel in {point.dtype}: row "
            f"{row} (largest |value| {float(peak[k][row]):.3g}) lies at squared distance "
            f"{float((point * point).sum()):.3g} from the centre of the pooled points (inf: "
            f"overflow), against a kernel scale of {float(b.plan.params[g].min()):.3g}, so "
            f"squared distances lose all precision (shape {tuple(tensors[k].shape)}); "
            f"rescale the data, widen the kernel or compute in float64"
        )
    if problem.prior is None:
        return ""
    loc, scale = (torch.as_tensor(t) for t in problem.prior)
    if bool(_usable_prior(loc, scale)):
        return ""
    return (
        f"the prior of {problem.labels[0]} needs a finite loc and a positive, finite scale, "
        f"got loc {loc.tolist()}, scale {scale.tolist()}"
    )


def _small(b: _Batch) -> Tensor:
    """Biased MMD^2 of the batch as one batched kernel matrix (float64, (G,)).

    Padding adds nothing to any distance, and a padded prior feature is a point mass at
    0, which leaves the prior terms unchanged.
    """
    a = torch.cat([_mean_weights(b.ux), -_mean_weights(b.uy)], dim=1)
    value = small_kernel_quadratic(torch.cat([b.x, b.y], dim=1), a, b.plan)
    if b.moments is not None:
        value = value + _analytic_prior_terms(b.raw[0], b.ux, *b.moments, b.plan)
    return value


def _single(b: _Batch, opts: Options) -> Tensor:
    """A batch of one by the one-pass engine or random Fourier features (float64, (1,))."""
    x, y, ux, uy = b.x[0], b.y[0], b.ux[0], b.uy[0]
    plan = KernelPlan(b.plan.kinds, b.plan.params[0])
    coef, diag = _coefficients(ux, uy, opts.estimator, single=b.moments is not None)
    if opts.mode == "rff":
        value = _rff_kernel_sum(x, y, ux, uy, plan, opts, coef)
    else:
        chunk = (opts.chunk_size, opts.chunk_size) if opts.mode == "chunked" else None
        value = weighted_kernel_sum(x, y, ux, uy, coef, plan, chunk)
    # The U-statistic leaves out the diagonal, where every kernel equals k(0).
    value = (value - plan.value_at_zero() * diag).unsqueeze(0)
    if b.moments is not None:
        value = value + _analytic_prior_terms(b.raw[0], b.ux, *b.moments, b.plan)
    return value


def _valid(b: _Batch, estimator: Estimator) -> Tensor:
    """Whether enough rows are present (1 per sample, 2 for the U-statistic), (G,)."""
    need = 2.0 if estimator == "unbiased" else 1.0
    ok = b.ux.sum(-1) >= need
    return ok if b.moments is not None else ok & (b.uy.sum(-1) >= need)


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
    x: Tensor, y: Tensor, ux: Tensor, uy: Tensor, plan: KernelPlan, opts: Options, coef: Tensor
) -> Tensor:
    """Random Fourier feature estimate of ``sum_ij A_ij k_ij``, diagonal included.

    ``phi(a) . phi(b)`` is an unbiased estimate of ``k(a, b)``, and ``phi(a) . phi(a)``
    equals ``k(0)`` exactly (cos^2 + sin^2), so the U-statistic's diagonal is still known.
    """
    if any(kind != "gaussian" for kind in plan.kinds):
        raise ValueError(f"mode='rff' needs a Gaussian kernel, got components {plan.kinds}")
    d, features = x.shape[1], opts.features
    # exp(-r / h) is the characteristic function of omega ~ N(0, (2 / h) I).
    omega = torch.randn(len(plan.kinds), d, features, generator=opts.generator, dtype=x.dtype)
    omega = omega.to(x.device) * torch.sqrt(2.0 / plan.params).view(-1, 1, 1)
    omega = omega.permute(1, 0, 2).reshape(d, -1)
    sums = []
    for t, u in ((x, ux), (y, uy)):
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
    distinct size, not per tensor; a single tensor is a view.
    """
    if len(tensors) == 1:
        return tensors[0].unsqueeze(0)
    width = tensors[-1].shape[-1]
    parts = []
    for _, same in itertools.groupby(tensors, key=lambda t: t.shape[-1]):
        block = torch.stack(list(same))
        pad = width - block.shape[-1]
        parts.append(F.pad(block, (0, pad)) if pad else block)
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _mean_weights(u: Tensor) -> Tensor:
    """Presence weights normalised to sum 1 (all zero when nothing is present), float64."""
    ud = u.double()
    return ud / ud.sum(-1, keepdim=True).clamp_min(1.0)
