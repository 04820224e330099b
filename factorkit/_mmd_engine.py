"""The pairwise part of a weighted MMD^2, value and gradient in one pass over the blocks.

For points ``w = [x; y]`` with per-point weights ``u`` (presence) and per-group-pair
coefficients ``c`` (``c_xx, c_xy, c_yy``), the engine computes

    S = sum_{i, j} c_{g(i) g(j)} u_i u_j k(r_ij),   r_ij = ||w_i - w_j||^2

and its gradient ``dS/dw_i = 4 u_i sum_j c u_j k'(r_ij) (w_i - w_j)``. It never builds an
n x n x d tensor and never records an autograd graph over n x n blocks:

* blocks of the upper triangle only (the lower one follows by symmetry), each made by one
  matmul of augmented matrices ``[a w_i, a |w_i|^2, 1] . [w_j, 1, a |w_j|^2]`` that
  yields ``-r_ij / h`` directly, into one reused buffer, then clamped, exponentiated and
  centred in place;
* the gradient from two more matmuls per block, ``K @ [u w, u]`` for the block's rows
  and ``K^T @ [u w, u]`` for its columns, accumulated in place (``addmm_``) into two
  (N, D + 1) sums, so no backward pass over the block and no autograd graph;
* the blocks hold ``k(r) - k(r0)`` with ``r0`` the mean squared distance of the pooled
  points; the constant ``k(r0) sum A`` and the ``k'(r0)`` part of the gradient are added
  in closed form, O(N D).

The MMD is a small difference of large sums of values close to each other (at the MFM
bandwidth, all within a few percent of 1): centring the blocks and finishing the sums in
float64 keeps float32 results within about 1e-5 of the exact value.

Second derivatives: both autograd Functions here compute the first derivative without an
autograd graph. When a graph of the gradient is requested (``create_graph=True``), their
backward instead evaluates the same closed-form gradient with differentiable operations on
a dense N x N slope matrix (:func:`pair_gradient`), so double backward is exact, at
O(N^2) memory for that call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from factorkit._kernel_plan import ComponentKind, KernelPlan, centered_block_

LOG2_E = 1.0 / math.log(2.0)
"""exp(t) = exp2(t * LOG2_E): Gaussian blocks are exponentiated with the faster exp2."""

# About 8 MiB of float32 per block on a CPU: measured fastest on 2 cores (the block stays
# near the cache, the matmuls stay large enough). On a GPU such blocks are launch-bound
# (an H200 took 15x the time of the matmuls at n = 16,384, 2026-11-30): there a block
# holds up to 512 MiB of float32, so a call is a few large matmuls and elementwise passes.
DENSE_BLOCK_ELEMENTS = {"cpu": 1 << 21, "cuda": 1 << 27}


class _Layout(NamedTuple):
    n: int  # rows of x; rows [n, N) are y
    total: int
    need: tuple[bool, bool]  # gradient wanted for x, y


class _Points(NamedTuple):
    left: Tensor  # (N, D + 2) augmented rows: [-2 a w, a |w|^2, 1]
    right: Tensor  # (N, D + 2) augmented columns: [w, 1, a |w|^2]
    w1: Tensor  # (N, D + 1): [w, 1]
    u: Tensor  # (N,)
    group: Tensor  # (N,) 0 for x, 1 for y
    rhs: Tensor  # (N, D + 1): u [w, 1]
    beta: tuple[Tensor, Tensor]  # per row group g: c_{g, g(j)} u_j, (N,)
    scaled_rhs: tuple[Tensor, Tensor]  # per row group g: beta_g [w, 1], (N, D + 1)


class _Sums(NamedTuple):
    """Accumulators of the gradient matmuls, (N, D + 1) each, zero where unused."""

    rows: Tensor  # sum over a row's blocks of slope @ scaled_rhs
    cols_x: Tensor  # sum of slope^T @ rhs over mirrored blocks with x rows
    cols_y: Tensor  # the same for blocks with y rows

    def cols(self, g: int) -> Tensor:
        return self.cols_x if g == 0 else self.cols_y


def _points(x: Tensor, y: Tensor, ux: Tensor, uy: Tensor, coef: Tensor, scale: Tensor) -> _Points:
    w = torch.cat([x, y])
    u = torch.cat([ux, uy])
    sq = (w * w).sum(1, keepdim=True)
    ones = torch.ones_like(sq)
    left = torch.cat([w * (-2.0 * scale), sq * scale, ones], 1)
    right = torch.cat([w, ones, sq * scale], 1)
    w1 = torch.cat([w, ones], 1)
    rhs = w1 * u.unsqueeze(1)
    group = torch.cat([torch.zeros_like(ux), torch.ones_like(uy)]).long()
    c = coef.to(w.dtype)
    cols = (c[:2][group], c[1:][group])  # c_{g, g(j)} for row group g = 0, 1
    beta = (cols[0] * u, cols[1] * u)
    scaled = (w1 * beta[0].unsqueeze(1), w1 * beta[1].unsqueeze(1))
    return _Points(left, right, w1, u, group, rhs, beta, scaled)


def _row_chunks(layout: _Layout, rows: int) -> list[tuple[int, int, int]]:
    """(start, stop, group) row chunks, never straddling the x/y boundary."""
    out = []
    for g, (lo, hi) in enumerate(((0, layout.n), (layout.n, layout.total))):
        out += [(s, min(s + rows, hi), g) for s in range(lo, hi, rows)]
    return out


def _col_tiles(start: int, stop: int, total: int, cols: int | None) -> list[tuple[int, int]]:
    """Column tiles of the upper triangle for rows [start, stop); the first is diagonal."""
    if cols is None:
        return [(start, total)]
    tiles = [(start, stop)]
    tiles += [(s, min(s + cols, total)) for s in range(stop, total, cols)]
    return tiles


def _block(
    buf: Tensor,
    pts: _Points,
    rows: tuple[int, int],
    cols: tuple[int, int],
    plan: KernelPlan,
    centre: Tensor,
) -> tuple[Tensor, Tensor]:
    """Centred kernel values and slopes for one block (the same tensor for one Gaussian)."""
    (r0, r1), (c0, c1) = rows, cols
    blk = buf[: (r1 - r0) * (c1 - c0)].view(r1 - r0, c1 - c0)
    torch.mm(pts.left[r0:r1], pts.right[c0:c1].T, out=blk)
    if c0 == r0:
        # Exact zero self-distance: no rounding residue on the diagonal, no NaN slope.
        blk[:, : r1 - r0].diagonal().zero_()
    if plan.single_gaussian:
        blk.clamp_max_(0.0).exp2_().sub_(centre[0])
        return blk, blk
    return centered_block_(blk.clamp_min_(0.0), plan, centre)


def _tile(
    buf: Tensor,
    pts: _Points,
    layout: _Layout,
    rows: tuple[int, int, int],
    cols: tuple[int, int],
    plan: KernelPlan,
    centre: Tensor,
    sums: _Sums | None,
) -> Tensor:
    """One block: returns the part of its float64 value not left in ``sums.rows``."""
    r0, r1, g = rows
    c0, c1 = cols
    value, slope = _block(buf, pts, (r0, r1), cols, plan, centre)
    u_rows = pts.u[r0:r1].double()
    width = r1 - r0 if c0 == r0 else 0
    # An off-diagonal block stands for itself and its mirror image: 2 * all - diagonal.
    total = -(u_rows @ (value[:, :width] @ pts.beta[g][c0 : c0 + width]).double())
    row_grad = sums is not None and layout.need[g]
    if sums is not None and row_grad:
        sums.rows[r0:r1].addmm_(slope, pts.scaled_rhs[g][c0:c1])
    if not (row_grad and slope is value):
        total = total + 2.0 * (u_rows @ (value @ pts.beta[g][c0:c1]).double())
    lo = 0 if layout.need[0] else layout.n
    hi = layout.total if layout.need[1] else layout.n
    a, b = max(c0 + width, lo), min(c1, hi)
    if sums is not None and a < b:
        sums.cols(g)[a:b].addmm_(slope[:, a - c0 : b - c0].T, pts.rhs[r0:r1])
    return total


def _mean_sq_distance(pts: _Points) -> Tensor:
    """Weighted mean squared distance over all ordered pairs of the pooled points."""
    mass = pts.u.sum().clamp_min(1.0)
    mean = (pts.u @ pts.w1) / mass  # last entry: 1
    sq = (pts.w1 * pts.w1).sum(1) - 1.0
    return (2.0 * ((pts.u @ sq) / mass - mean[:-1] @ mean[:-1])).clamp_min(0.0)


def _total_weight(pts: _Points, layout: _Layout, coef: Tensor) -> Tensor:
    """``sum_ij A_ij`` in float64."""
    c = coef.double()
    sx, sy = pts.u[: layout.n].double().sum(), pts.u[layout.n :].double().sum()
    return c[0] * sx * sx + 2.0 * c[1] * sx * sy + c[2] * sy * sy


def _gradient(pts: _Points, sums: _Sums, factor: Tensor, ratio: Tensor) -> Tensor:
    """``dS/dw_i = 4 u_i sum_j c u_j k'(r_ij) (w_i - w_j)`` from the accumulated sums.

    Each accumulator row ``s`` holds ``[sum_j a_ij w_j, sum_j a_ij]`` for some weights
    ``a``, so its gradient share is ``s[-1] w_i - s[:-1]``. ``ratio = k'(r0) / factor``
    adds the slope's constant part, which the blocks leave out, in closed form.
    """
    acc = pts.u.unsqueeze(1) * sums.rows
    acc += pts.beta[0].unsqueeze(1) * sums.cols_x + pts.beta[1].unsqueeze(1) * sums.cols_y
    # sum_j c_{g(i) g(j)} u_j [w_j, 1] for each row group, then picked per row.
    per_group = torch.stack([pts.beta[0] @ pts.w1, pts.beta[1] @ pts.w1])
    acc += (pts.u * ratio).unsqueeze(1) * per_group[pts.group]
    return (4.0 * factor) * (acc[:, -1:] * pts.w1[:, :-1] - acc[:, :-1])


def pair_sum(
    x: Tensor,
    y: Tensor,
    ux: Tensor,
    uy: Tensor,
    coef: Tensor,
    plan: KernelPlan,
    chunk: tuple[int, int | None] | None,
    need: tuple[bool, bool],
) -> tuple[Tensor, Tensor | None]:
    """Weighted kernel sum ``sum_ij A_ij k(r_ij)`` (float64) and its gradient w.r.t. ``[x; y]``.

    Args:
        x: (N, D), y: (M, D) in the compute dtype.
        ux: (N,), uy: (M,) presence weights.
        coef: (3,) ``c_xx, c_xy, c_yy``.
        plan: the resolved kernel.
        chunk: ``(rows, cols)`` of a block; ``None`` picks dense row blocks of about
            ``DENSE_BLOCK_ELEMENTS``; ``cols=None`` means whole rows.
        need: whether the gradient w.r.t. x and y is wanted.
    """
    layout = _Layout(x.shape[0], x.shape[0] + y.shape[0], need)
    single = plan.single_gaussian
    # For one Gaussian the block holds -r/(h ln 2) straight from the matmul, so that
    # k = exp2(block) (exp2 is about twice as fast as exp on CPUs), and k' = -k/h.
    factor = -1.0 / plan.params[0] if single else plan.params.new_ones(())
    pts = _points(x, y, ux, uy, coef, factor * LOG2_E if single else factor)
    if chunk is None:
        elements = DENSE_BLOCK_ELEMENTS.get(x.device.type, DENSE_BLOCK_ELEMENTS["cpu"])
        chunk = (max(16, elements // max(layout.total, 1)), None)
    rows, cols = chunk
    buf = x.new_empty(rows * (layout.total if cols is None else max(rows, cols)))
    sums = None
    if any(need):
        sums = _Sums(*(torch.zeros_like(pts.w1) for _ in range(3)))
    centre, centre_slope = plan.at(_mean_sq_distance(pts))
    total = _total_weight(pts, layout, coef) * centre.double().sum()
    for r in _row_chunks(layout, rows):
        for t in _col_tiles(r[0], r[1], layout.total, cols):
            total = total + _tile(buf, pts, layout, r, t, plan, centre, sums)
    if sums is None:
        return total, None
    if single:
        # Rows with a gradient left their values in the last column of their sums.
        rows_val = sums.rows[:, -1] * pts.u
        total = total + 2.0 * rows_val.double().sum()
    return total, _gradient(pts, sums, factor, centre_slope.sum() / factor)


def weighted_kernel_sum(
    x: Tensor,
    y: Tensor,
    ux: Tensor,
    uy: Tensor,
    coef: Tensor,
    plan: KernelPlan,
    chunk: tuple[int, int | None] | None,
) -> Tensor:
    """Differentiable ``sum_ij A_ij k(r_ij)`` (float64, 0-dim); see :func:`pair_sum`."""
    # Typed by assignment: Function.apply is unannotated in some torch versions only.
    apply: Callable[..., Tensor] = WeightedKernelSum.apply
    return apply(x, y, ux, uy, coef, plan.params, plan.kinds, chunk)


SMALL_ROWS = 128
"""Up to this many pooled rows (a batch of 64 against 64 prior draws, typical in MFM), the
biased dense MMD uses :func:`small_kernel_quadratic`: one dense kernel matrix under plain
autograd beats the one-pass engine there, whose fixed cost of about 60 ops dominates
(1.9x at n = 64, 1 thread); at n = 256 the engine is already 1.3-2x faster. Unbiased
estimates always use the engine."""


def small_kernel_quadratic(w: Tensor, a: Tensor, plan: KernelPlan) -> Tensor:
    """``a_g^T K_g a_g`` for G small point sets at once, ``K_g`` the kernel matrix of ``w_g``.

    The biased MMD^2 of x and y is this form on ``w = [x; y]`` with ``a = [u_x / sum u_x,
    -u_y / sum u_y]``; the analytic estimator's z-z term uses ``w = z, a = u / sum u``. The
    kernel matrix comes from squared norms and one batched matmul, evaluated in place; the
    quadratic form is finished in float64 (the MMD is a small difference of sums close to
    each other). Self-distances are exactly 0. The gradient is closed-form,
    ``d/dw_i = 4 a_i (w_i (S a)_i - (S (a * w))_i)`` with ``S = k'(r)``, one more batched
    matmul in the backward pass and no autograd graph over the N x N matrix; with
    ``create_graph=True`` it is built from differentiable operations instead
    (:func:`pair_gradient`), so second derivatives are exact.

    Shapes:
        w: (G, N, D). a: (G, N), float64. plan.params: (G, S). Returns: (G,), float64.
    """
    apply: Callable[..., Tensor] = KernelQuadratic.apply
    return apply(w, a, plan.params, plan.kinds)


class KernelQuadratic(torch.autograd.Function):
    """Autograd wrapper of :func:`small_kernel_quadratic` with its closed-form gradient."""

    @staticmethod
    def forward(
        ctx: FunctionCtx, w: Tensor, a: Tensor, params: Tensor, kinds: tuple[ComponentKind, ...]
    ) -> Tensor:
        norms = (w * w).sum(-1)
        r = torch.baddbmm(norms.unsqueeze(1), w, w.mT, alpha=-2.0)
        r.add_(norms.unsqueeze(2)).diagonal(dim1=-2, dim2=-1).zero_()
        r.clamp_min_(0)
        h = params.view(params.shape[0], -1, 1, 1)
        if kinds == ("gaussian",):
            # exp(-r / h) in place; its slope -k / h is rebuilt from k in the backward.
            k = r.mul_(-LOG2_E / h[:, 0]).exp2_()
            slope = None
        else:
            k, slope = centered_block_(r, KernelPlan(kinds, params), torch.zeros_like(params))
        ka = torch.bmm(k.double(), a.unsqueeze(-1)).squeeze(-1)
        ctx.save_for_backward(w, a, k if slope is None else slope, params, ka)
        ctx.single_gaussian = slope is None  # type: ignore[attr-defined]
        ctx.kinds = kinds  # type: ignore[attr-defined]
        return (ka * a).sum(-1)

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        w, a, matrix, params, ka = ctx.saved_tensors  # type: ignore[attr-defined]
        if not ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            return None, None, None, None
        if torch.is_grad_enabled():  # create_graph=True: a differentiable gradient
            weights = a.unsqueeze(-1) * a.unsqueeze(-2)
            plan = KernelPlan(ctx.kinds, params)  # type: ignore[attr-defined]
            outer = grad.to(w.dtype).view(-1, 1, 1)
            return outer * pair_gradient(w, weights, plan), None, None, None
        scale = (4.0 * grad).to(w.dtype).view(-1, 1, 1)
        af = a.to(w.dtype).unsqueeze(-1)
        if ctx.single_gaussian:  # type: ignore[attr-defined]
            # S = -K / h, and K a is already known from the forward pass.
            inv_h = params[:, :1].unsqueeze(-1).reciprocal()
            s_a = -ka.to(w.dtype).unsqueeze(-1) * inv_h
            s_aw = torch.bmm(matrix, af * w).mul_(-inv_h)
        else:
            s_a = torch.bmm(matrix, af)
            s_aw = torch.bmm(matrix, af * w)
        return scale * af * (w * s_a - s_aw), None, None, None


def pair_gradient(w: Tensor, weights: Tensor, plan: KernelPlan) -> Tensor:
    """``d/dw sum_ij A_ij k(r_ij)`` by differentiable dense operations (for double backward).

    ``4 (w_i sum_j M_ij - sum_j M_ij w_j)`` with ``M = A * k'(r)``. Unlike the one-pass
    paths this keeps an autograd graph over the N x N slope matrix, so its own derivative,
    the second derivative of the kernel sum, is exact.

    Shapes:
        w: (G, N, D). weights: (G, N, N) symmetric. plan.params: (G, S). Returns: (G, N, D).
    """
    norms = (w * w).sum(-1)
    r = norms.unsqueeze(-1) + norms.unsqueeze(-2) - 2.0 * (w @ w.mT)
    off_diagonal = ~torch.eye(w.shape[-2], dtype=torch.bool, device=w.device)
    r = torch.where(off_diagonal, r.clamp_min(0.0), torch.zeros_like(r))
    m = weights.to(w.dtype) * plan.slope(r)
    return 4.0 * (w * m.sum(-1, keepdim=True) - m @ w)


class WeightedKernelSum(torch.autograd.Function):
    """Autograd wrapper of :func:`pair_sum`: the gradient is computed in the forward."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,
        y: Tensor,
        ux: Tensor,
        uy: Tensor,
        coef: Tensor,
        params: Tensor,
        kinds: tuple[ComponentKind, ...],
        chunk: tuple[int, int | None] | None,
    ) -> Tensor:
        needs: Any = ctx.needs_input_grad  # type: ignore[attr-defined]
        need = (bool(needs[0]), bool(needs[1]))
        total, grad = pair_sum(x, y, ux, uy, coef, KernelPlan(kinds, params), chunk, need)
        n = x.shape[0]
        gx = grad[:n] if grad is not None else x.new_zeros(0)
        gy = grad[n:] if grad is not None else y.new_zeros(0)
        ctx.save_for_backward(gx, gy, x, y, ux, uy, coef, params)
        ctx.kinds = kinds  # type: ignore[attr-defined]
        return total

    @staticmethod
    def backward(ctx: Any, out: Tensor) -> tuple[Tensor | None, ...]:
        gx, gy, x, y, ux, uy, coef, params = ctx.saved_tensors
        need = ctx.needs_input_grad
        if torch.is_grad_enabled() and (need[0] or need[1]):
            # create_graph=True: the same gradient, by differentiable operations.
            grad = _dense_pair_gradient(x, y, ux, uy, coef, KernelPlan(ctx.kinds, params))
            gx, gy = grad[: x.shape[0]], grad[x.shape[0] :]
        grad_x = gx * out.to(gx.dtype) if need[0] else None
        grad_y = gy * out.to(gy.dtype) if need[1] else None
        return grad_x, grad_y, None, None, None, None, None, None


def _dense_pair_gradient(
    x: Tensor, y: Tensor, ux: Tensor, uy: Tensor, coef: Tensor, plan: KernelPlan
) -> Tensor:
    """:func:`pair_gradient` for the weights ``A_ij = c_{g(i) g(j)} u_i u_j`` of the engine."""
    u = torch.cat([ux, uy]).double()
    group = torch.cat([torch.zeros_like(ux), torch.ones_like(uy)]).long()
    c = coef.double()
    table = torch.stack([c[:2], c[1:]])  # [[c_xx, c_xy], [c_xy, c_yy]]
    weights = table[group][:, group] * (u.unsqueeze(1) * u.unsqueeze(0))
    batched = KernelPlan(plan.kinds, plan.params.unsqueeze(0))
    return pair_gradient(torch.cat([x, y]).unsqueeze(0), weights.unsqueeze(0), batched)[0]
