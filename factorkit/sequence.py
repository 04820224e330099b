"""Padded sequences: lengths, step masks and layouts; the recurrent encoder and decoder of
one modality (E_a_m and F_m of the MFM's sentiment models).

Sequences are batch first, ``(B, T, D)``, with either ``lengths`` ``(B,)`` or a boolean
``mask`` ``(B, T)`` (True marks a valid step). Padding may sit at the end (``layout="end"``,
the PyTorch convention) or at the front (``layout="front"``: the MFN h5 files put zeros
first). A mask marks one contiguous run of valid steps per sample, anywhere in the row;
a mask with holes is rejected, because a hole is not padding (zero or drop such steps
before batching).

Padding never changes an output or a loss: padded steps are dropped (packed sequences),
skipped (the state is frozen on them) or zeroed (decoder outputs), so any value there,
NaN included, leaves every result and gradient unchanged.

Value checks (lengths in range, contiguous masks) need the values on the host: they run
in eager mode, at one device-to-host copy per call, and are skipped under
``torch.compile``, where they would break the graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from factorkit._padding import (
    CELLS,
    LAYOUTS,
    CellType,
    Layout,
    check_lengths,
    make_rnn,
    padding_span,
    roll_rows,
    run_rnn,
    valid_steps,
)
from factorkit._validation import check_choice, check_dropout, check_sequence, check_size
from factorkit.decoders import _join_factors

DecoderFeed = Literal["every", "first", "hidden"]
"""What each step of a :class:`SequenceDecoder` reads."""

FEEDS = ("every", "first", "hidden")
"""The values of :data:`DecoderFeed`."""

__all__ = ["SequenceDecoder", "SequenceEncoder", "infer_padding_mask", "lengths_to_mask"]


def lengths_to_mask(lengths: Tensor, steps: int, *, layout: Layout = "end") -> Tensor:
    """Boolean mask of the valid steps of sequences with the given lengths.

    Args:
        lengths: Number of valid steps per sample, integers in [0, T] (a length of 0
            gives an all-False row).
        steps: Padded length T, a positive int.
        layout: ``"end"`` when the padding follows the valid steps, ``"front"`` when it
            precedes them.

    Returns:
        ``mask[b, t]`` is True where step t of sample b is valid.

    Raises:
        ValueError: lengths that are not a 1-D integer tensor, or outside [0, T] (the
            range check reads the values on the host; skipped under ``torch.compile``).

    Shapes:
        lengths: (B,) integer. Output: (B, T) bool.
    """
    check_choice(layout, LAYOUTS, "lengths_to_mask: layout")
    check_size(steps, "lengths_to_mask: steps")
    check_lengths("lengths_to_mask", lengths, None, steps, least=0)
    t = torch.arange(steps, device=lengths.device)
    if layout == "end":
        return t < lengths[:, None]
    return t >= (steps - lengths)[:, None]


def infer_padding_mask(x: Tensor | Mapping[str, Tensor], *, layout: Layout = "front") -> Tensor:
    """Detect zero padding: the all-zero steps before the first (or after the last) step
    that has a nonzero feature.

    For a mapping of modalities the valid span is the union over modalities, so aligned
    modalities share one mask. All-zero steps inside the span stay valid (real data has
    such frames). A sample that is zero everywhere gets an all-False row, which the
    encoders reject: drop such samples first.

    Args:
        x: A zero-padded sequence, or a mapping modality name -> sequence (same B, T).
        layout: Where the padding sits, ``"front"`` (MFN h5 files) or ``"end"``.

    Returns:
        Boolean mask, True on valid steps.

    Shapes:
        x: (B, T, D) or mapping name -> (B, T, D_m). Output: (B, T) bool.
    """
    check_choice(layout, LAYOUTS, "infer_padding_mask: layout")
    seqs = dict(sorted(x.items())) if isinstance(x, Mapping) else {"x": x}
    if not seqs:
        raise ValueError("infer_padding_mask: got an empty mapping")
    nonzero: Tensor | None = None
    for name, seq in seqs.items():
        if seq.ndim != 3:
            raise ValueError(
                f"infer_padding_mask: modality {name!r}: expected (B, T, D), got {tuple(seq.shape)}"
            )
        here = (seq != 0).any(2)
        if nonzero is not None and here.shape != nonzero.shape:
            raise ValueError(
                f"infer_padding_mask: modality {name!r} has (B, T) = {tuple(here.shape)}, "
                f"expected {tuple(nonzero.shape)} like the modalities before it"
            )
        nonzero = here if nonzero is None else nonzero | here
    assert nonzero is not None
    if layout == "end":
        nonzero = nonzero.flip(1)
    mask = torch.cummax(nonzero.to(torch.int8), dim=1).values.bool()
    return mask.flip(1) if layout == "end" else mask


class SequenceEncoder(nn.Module):
    """Recurrent encoder of one modality: the last valid state, projected to a code.

    The MFM modality-specific encoder E_a_i (an LSTM whose last hidden state goes through
    a Linear layer to Z_a_i), made padding-aware. Valid steps are moved to the front of
    each row (one gather, for front padding or masks) and the batch runs as a packed
    sequence, so cuDNN sees one call and padded steps are never read. An empty batch
    gives an empty code.

    Args:
        input_size: Features per step, D.
        hidden_size: Recurrent state size.
        code_size: Size of the output code.
        cell: ``"lstm"`` or ``"gru"``.
        num_layers: Stacked recurrent layers.
        dropout: Dropout between stacked layers and on the last state before the
            projection.

    Shapes:
        x: (B, T, D). lengths: (B,) integer in [1, T], or mask: (B, T) bool.
        Output: (B, code_size).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        code_size: int,
        *,
        cell: CellType = "lstm",
        num_layers: int = 1,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.input_size = check_size(input_size, f"{owner}: input_size")
        check_size(hidden_size, f"{owner}: hidden_size")
        self.code_size = check_size(code_size, f"{owner}: code_size")
        check_size(num_layers, f"{owner}: num_layers")
        check_choice(cell, CELLS, f"{owner}: cell")
        check_dropout(dropout, f"{owner}: dropout")
        self.rnn = make_rnn(cell, input_size, hidden_size, num_layers, dropout)
        self.dropout = nn.Dropout(dropout)
        self.to_code = nn.Linear(hidden_size, code_size)

    def forward(
        self,
        x: Tensor,
        lengths: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        layout: Layout = "end",
    ) -> Tensor:
        """Encode a padded batch.

        Args:
            x: Padded sequences.
            lengths: Valid steps per sample, laid out as ``layout`` says.
            mask: Alternative to ``lengths``: True on valid steps, one contiguous run per
                row at any position (``layout`` is then not needed).
            layout: Where the padding sits when ``lengths`` is given.

        Returns:
            The code from the last valid state of each sample.
        """
        owner = type(self).__name__
        check_sequence(x, self.input_size, owner, self)
        span = padding_span(owner, x.shape[0], x.shape[1], lengths, mask, layout, x.device)
        if span is None or x.shape[0] == 0:
            _, state = run_rnn(self.rnn, x)
        else:
            start, length = span
            aligned = x if start is None else roll_rows(x, start)
            packed = pack_padded_sequence(
                aligned, length.cpu(), batch_first=True, enforce_sorted=False
            )
            _, state = run_rnn(self.rnn, packed)
        last = state[0] if isinstance(state, tuple) else state
        code: Tensor = self.to_code(self.dropout(last[-1]))
        return code


class SequenceDecoder(nn.Module):
    """Recurrent decoder of a sequence modality: X_hat_m = F_m(F_a_m, F_y), (B, T, D).

    concat(F_a_m, F_y) drives a recurrent network unrolled for T steps, with a Linear
    layer per step to the modality's features. ``feed`` chooses the input of each step:

    - ``"every"``: the factors at every step (one cuDNN call; the default, for speed).
    - ``"first"``: the factors at step 0, zeros after (one cuDNN call).
    - ``"hidden"``: the factors at step 0, then the previous step's top hidden state:
      the form of the public MFM reference code, whose hidden size is the size of
      concat(F_a_m, F_y) (the default ``hidden_size``). Unrolls in a Python loop over
      time.

    The decoder's own step 0 is the first valid step of the target: with front padding
    the generated steps are placed after the padding, so the same factors give the same
    valid content in either layout. Padded positions of the output are exactly zero.
    T comes from ``mask`` (the target's step mask) or from ``steps``.

    Args:
        private_size: Size of the private factor F_a_m.
        shared_size: Size of the shared factor F_y.
        output_size: Features per output step, D.
        hidden_size: Recurrent state size (default: ``private_size + shared_size``; must
            be that with ``feed="hidden"``).
        cell: ``"lstm"`` or ``"gru"``.
        num_layers: Stacked recurrent layers.
        feed: What each step reads, see above.

    Shapes:
        private: (B, Fa). shared: (B, Fy). mask: (B, T) bool, or lengths: (B,) integer
        in [1, T] with ``steps``. Output: (B, T, D).

    Examples:
        >>> dec = SequenceDecoder(private_size=4, shared_size=8, output_size=3, feed="hidden")
        >>> mask = lengths_to_mask(torch.tensor([5, 2]), 5)
        >>> x_hat = dec(torch.randn(2, 4), torch.randn(2, 8), mask=mask)
        >>> tuple(x_hat.shape), bool((x_hat[1, 2:] == 0).all())
        ((2, 5, 3), True)
    """

    def __init__(
        self,
        private_size: int,
        shared_size: int,
        output_size: int,
        *,
        hidden_size: int | None = None,
        cell: CellType = "lstm",
        num_layers: int = 1,
        feed: DecoderFeed = "every",
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.private_size = check_size(private_size, f"{owner}: private_size")
        self.shared_size = check_size(shared_size, f"{owner}: shared_size")
        self.output_size = check_size(output_size, f"{owner}: output_size")
        input_size = private_size + shared_size
        hidden = input_size if hidden_size is None else hidden_size
        check_size(hidden, f"{owner}: hidden_size")
        check_size(num_layers, f"{owner}: num_layers")
        check_choice(cell, CELLS, f"{owner}: cell")
        self.feed = check_choice(feed, FEEDS, f"{owner}: feed")
        if feed == "hidden" and hidden != input_size:
            raise ValueError(
                f"{owner}: feed='hidden' reads the previous hidden state as input, so "
                f"hidden_size ({hidden}) must equal private_size + shared_size ({input_size})"
            )
        self.rnn = make_rnn(cell, input_size, hidden, num_layers, 0.0)
        self.to_output = nn.Linear(hidden, output_size)

    def forward(
        self,
        private: Tensor,
        shared: Tensor,
        *,
        mask: Tensor | None = None,
        steps: int | None = None,
        lengths: Tensor | None = None,
        layout: Layout = "end",
    ) -> Tensor:
        """Decode the factors into padded sequences, zero on padded steps.

        Args:
            private: The private factor F_a_m.
            shared: The shared factor F_y.
            mask: True on valid steps (the target's step mask); gives T.
            steps: Output length T, when no mask gives it.
            lengths: Alternative to ``mask``: valid steps per sample, laid out as
                ``layout`` says (with ``steps``).
            layout: Where the padding sits when ``lengths`` is given.

        Returns:
            The reconstruction X_hat_m.
        """
        owner = type(self).__name__
        try:
            z = _join_factors(self, private, shared, self.private_size, self.shared_size)
        except ValueError as err:
            raise ValueError(f"{owner}: {err}") from None
        steps = self._resolve_steps(steps, mask)
        out: Tensor = self.to_output(self._unroll(z, steps))
        span = padding_span(owner, z.shape[0], steps, lengths, mask, layout, z.device)
        if span is None:
            return out
        start, length = span
        out = out.masked_fill(~valid_steps(steps, None, length)[:, :, None], 0.0)
        return out if start is None else roll_rows(out, -start)

    def _resolve_steps(self, steps: int | None, mask: Tensor | None) -> int:
        owner = type(self).__name__
        if steps is None:
            if mask is None or mask.dim() != 2:
                raise ValueError(f"{owner}: pass steps (T), or a (B, T) mask that gives it")
            steps = int(mask.shape[1])
        if mask is not None and mask.dim() == 2 and mask.shape[1] != steps:
            raise ValueError(f"{owner}: steps is {steps} but the mask has {mask.shape[1]} steps")
        return check_size(steps, f"{owner}: steps")

    def _unroll(self, z: Tensor, steps: int) -> Tensor:
        batch, width = z.shape
        if self.feed == "every":
            inputs = z[:, None, :].expand(batch, steps, width).contiguous()
        elif self.feed == "first":
            inputs = torch.cat([z[:, None, :], z.new_zeros(batch, steps - 1, width)], 1)
        else:
            return self._unroll_on_hidden(z, steps)
        out: Tensor = run_rnn(self.rnn, inputs)[0]
        return out

    def _unroll_on_hidden(self, z: Tensor, steps: int) -> Tensor:
        step_input = z[:, None, :]
        state: Tensor | tuple[Tensor, Tensor] | None = None
        outputs = []
        for _ in range(steps):
            step_input, state = run_rnn(self.rnn, step_input, state)
            outputs.append(step_input)
        return torch.cat(outputs, dim=1)
