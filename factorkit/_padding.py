"""Internals of the padded-sequence blocks: padding checks, valid spans, recurrent layers.

See :mod:`factorkit.sequence` for the conventions (layouts, lengths, contiguous masks).
"""

from __future__ import annotations

from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from factorkit._validation import check_choice

Layout = Literal["end", "front"]
"""Where the padding of a sequence sits: after the valid steps or before them."""
CellType = Literal["lstm", "gru"]

LAYOUTS = ("end", "front")
CELLS = ("lstm", "gru")


def _row_list(bad: Tensor, limit: int = 5) -> str:
    rows = torch.nonzero(bad).flatten()[:limit].tolist()
    return ", ".join(str(r) for r in rows)


def check_lengths(owner: str, lengths: Tensor, batch: int | None, steps: int, least: int) -> None:
    """Lengths: a 1-D integer tensor (of B entries when ``batch`` is given) in [least, T]."""
    if lengths.dim() != 1 or (batch is not None and lengths.shape[0] != batch):
        expected = "(B,)" if batch is None else f"(B,) = ({batch},)"
        raise ValueError(f"{owner}: lengths must have shape {expected}, got {tuple(lengths.shape)}")
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"{owner}: lengths must be an integer tensor, got {lengths.dtype}")
    if not torch.compiler.is_compiling():
        bad = (lengths < least) | (lengths > steps)
        if bool(bad.any()):
            raise ValueError(
                f"{owner}: lengths must lie in [{least}, T] = [{least}, {steps}]; rows "
                f"{_row_list(bad)} have lengths {lengths[bad][:5].tolist()}"
            )


def check_mask(owner: str, mask: Tensor, batch: int, steps: int) -> None:
    if mask.shape != (batch, steps):
        raise ValueError(
            f"{owner}: mask must have shape (B, T) = ({batch}, {steps}), got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"{owner}: mask must be a bool tensor (True = valid), got {mask.dtype}")
    if not torch.compiler.is_compiling():
        runs = (mask & ~F.pad(mask[:, :-1], (1, 0))).sum(1)
        if bool((runs == 0).any()):
            raise ValueError(f"{owner}: mask rows {_row_list(runs == 0)} have no valid step")
        if bool((runs > 1).any()):
            raise ValueError(
                f"{owner}: mask rows {_row_list(runs > 1)} are not contiguous; a mask must "
                "mark one run of valid steps per sample (padding only at the front and/or "
                "the end). Steps to ignore inside a sequence are not padding: zero or drop "
                "them before batching."
            )


def padding_span(
    owner: str,
    batch: int,
    steps: int,
    lengths: Tensor | None,
    mask: Tensor | None,
    layout: str,
    device: torch.device,
) -> tuple[Tensor | None, Tensor] | None:
    """Validate the padding arguments and return (start, length) per sample, on ``device``.

    start is None when every valid run begins at step 0; None overall means no padding.

    Shapes:
        lengths: (B,) integer in [1, T]. mask: (B, T) bool. Returns: (B,), (B,) long.
    """
    check_choice(layout, LAYOUTS, f"{owner}: layout")
    if lengths is not None and mask is not None:
        raise ValueError(f"{owner}: pass lengths or mask, not both")
    if lengths is not None:
        check_lengths(owner, lengths, batch, steps, least=1)
        length = lengths.to(device=device, dtype=torch.long)
        return (steps - length if layout == "front" else None), length
    if mask is not None:
        check_mask(owner, mask, batch, steps)
        mask = mask.to(device)
        return mask.to(torch.int8).argmax(1), mask.sum(1)
    return None


def valid_steps(steps: int, start: Tensor | None, length: Tensor) -> Tensor:
    """The (B, T) mask of the runs [start, start + length); start None means 0."""
    t = torch.arange(steps, device=length.device)
    first = torch.zeros_like(length) if start is None else start
    return (t >= first[:, None]) & (t < (first + length)[:, None])


def roll_rows(x: Tensor, shift: Tensor) -> Tensor:
    """out[b, t] = x[b, (t + shift[b]) mod T]: a per-sample roll, no loop over the batch.

    Shapes:
        x: (B, T, D). shift: (B,) integer. Returns: (B, T, D).
    """
    steps = x.shape[1]
    index = (torch.arange(steps, device=x.device) + shift[:, None]).remainder(steps)
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


def make_rnn(
    cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float
) -> nn.RNNBase:
    """A batch-first ``nn.LSTM`` or ``nn.GRU`` (dropout only between stacked layers)."""
    rnn_type = nn.LSTM if cell == "lstm" else nn.GRU
    return rnn_type(
        input_size,
        hidden_size,
        num_layers=num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
    )


RNNInput = TypeVar("RNNInput", Tensor, PackedSequence)


def run_rnn(
    rnn: nn.RNNBase, inputs: RNNInput, state: Tensor | tuple[Tensor, Tensor] | None = None
) -> tuple[RNNInput, Tensor | tuple[Tensor, Tensor]]:
    """``rnn(inputs, state)``, also differentiable in eval mode on CUDA.

    cuDNN's RNN backward refuses to run in eval mode, which interpretation needs (the
    Jacobians of a decoder in eval mode, :func:`~factorkit.factor_contributions`). There,
    and only there (CUDA, eval mode, gradients enabled), the RNN runs on PyTorch's own
    kernels instead of cuDNN's: the same function, somewhat slower.
    """
    if rnn.training or not torch.is_grad_enabled() or not rnn.weight_ih_l0.is_cuda:
        return rnn(inputs, state)  # type: ignore[no-any-return]
    with torch.backends.cudnn.flags(enabled=False):
        return rnn(inputs, state)  # type: ignore[no-any-return]
