"""Autograd-aware gathering for losses of the global batch under DDP.

Under :class:`torch.nn.parallel.DistributedDataParallel` each of the W ranks sees only
its own slice of the batch. A loss that couples samples (an MMD, a contrastive loss)
computed on that slice is a different, noisier estimator than the loss of the global
batch. :func:`all_gather_with_grad` gives every rank the whole batch, with gradients
that flow back to each rank's own samples, so the global loss and its parameter
gradients are exactly those of one process that saw the concatenated batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["all_gather_with_grad", "is_distributed", "world_info"]


def is_distributed() -> bool:
    """Whether a process group with more than one rank is initialised."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_info() -> tuple[int, int]:
    """This process's ``(rank, world_size)``; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate every rank's ``x`` along dim 0, in rank order, keeping gradients.

    Ranks may hold different batch sizes (including 0): the sizes are gathered first,
    each slice is padded to the largest, gathered, and the padding is stripped. This
    costs one small extra collective and a host sync to read the sizes.

    Backward: every rank computes the gradient of its loss with respect to the whole
    gathered tensor; these are summed over ranks (one ``all_reduce``) and each rank
    keeps the rows of its own slice. The sum is what makes DDP exact. Every rank
    computes the same global loss L of the gathered batch, so rank r receives
    ``W * dL/dx_r`` for its slice ``x_r``. DDP then averages parameter gradients over
    the W ranks, and the sum over r of ``W * dL/dx_r * dx_r/dtheta``, divided by W, is
    exactly ``dL/dtheta`` of a single process running on the concatenated batch. (The
    input gradient a rank sees is therefore W times the single-process one.) If the
    ranks' losses differ (say each drew its own prior sample), the same argument gives
    the gradient of the mean of the W per-rank losses.

    Outside an initialised process group, or with world size 1, ``x`` is returned
    unchanged and the gradient is the identity.

    Every rank must call this with a tensor of the same dtype, number of dimensions
    and trailing shape, and, when gradients are needed, every rank must run the
    backward (the backward is itself a collective).

    Args:
        x: this rank's slice of the batch.

    Returns:
        The global batch; rows ``offset_r : offset_r + B_r`` are rank r's ``x``.

    Raises:
        ValueError: ``x`` is a scalar, or the ranks' tensors differ in their trailing
            shape (then raised on every rank).

    Shapes:
        x: (B_r, ...) on rank r. Returns: (sum_r B_r, ...), identical on every rank.

    Examples:
        >>> x = torch.randn(4, 2)
        >>> all_gather_with_grad(x) is x  # no process group: a no-op
        True
        >>> # Under torchrun, with z this rank's (B_r, D) codes:
        >>> # z_all = all_gather_with_grad(z)  -> (sum_r B_r, D), the same on every rank
        >>> # loss = mmd(z_all, prior)         -> the global-batch loss on every rank
    """
    if x.dim() == 0:
        raise ValueError("all_gather_with_grad: expected x of shape (B, ...), got a scalar")
    if not is_distributed():
        return x
    # Typed by assignment: Function.apply is unannotated in some torch versions only.
    apply: Callable[[Tensor], Tensor] = _AllGatherWithGrad.apply
    return apply(x)


def _gather_shapes(x: Tensor) -> list[tuple[int, ...]]:
    """Every rank's shape of ``x``, in rank order."""
    world = dist.get_world_size()
    local = torch.tensor(x.shape, dtype=torch.long, device=x.device)
    shapes = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(shapes, local)
    return [tuple(int(s) for s in shape.tolist()) for shape in shapes]


class _AllGatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        shapes = _gather_shapes(x)
        rank = dist.get_rank()
        trailing = {shape[1:] for shape in shapes}
        if len(trailing) > 1:
            raise ValueError(
                "all_gather_with_grad: every rank must share the trailing shape, got "
                + ", ".join(f"rank {r}: {shape}" for r, shape in enumerate(shapes))
            )
        sizes = [shape[0] for shape in shapes]
        longest = max(sizes)
        # Collectives need equal shapes on every rank, hence the padding to the longest.
        padded = x.new_zeros((longest, *x.shape[1:]))
        padded[: x.shape[0]] = x
        buffers = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(buffers, padded.contiguous())
        ctx.offset = sum(sizes[:rank])
        ctx.size = sizes[rank]
        return torch.cat([buf[:size] for buf, size in zip(buffers, sizes, strict=True)])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # Every rank holds the same gathered size, so an all_reduce of the full gradient
        # needs no padding; it also works on backends without reduce_scatter (gloo).
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total[ctx.offset : ctx.offset + ctx.size]
