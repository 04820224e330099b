"""Sequence blocks with lengths and padding masks, after the MFM sentiment setup.

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
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

__all__ = [
    "MemoryFusionEncoder",
    "SequenceDecoder",
    "SequenceEncoder",
    "SequenceMSELoss",
    "infer_padding_mask",
    "lengths_to_mask",
    "sequence_mse",
]

Layout = Literal["end", "front"]
"""Where the padding of a sequence sits: after the valid steps or before them."""
CellType = Literal["lstm", "gru"]
DecoderFeed = Literal["every", "first", "hidden"]

_LAYOUTS = ("end", "front")
_CELLS = ("lstm", "gru")
_FEEDS = ("every", "first", "hidden")


def _checks_enabled() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return is_compiling is None or not bool(is_compiling())


def _check_choice(owner: str, arg: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}: {arg} must be one of {list(choices)}, got {value!r}")


def _check_positive(owner: str, **sizes: int) -> None:
    for arg, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{owner}: {arg} must be a positive int, got {value!r}")


def _check_dropout(owner: str, dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"{owner}: dropout must be in [0, 1), got {dropout!r}")


def _check_sequence(owner: str, x: Tensor, features: int) -> None:
    if x.ndim != 3 or x.shape[2] != features:
        raise ValueError(
            f"{owner}: expected a sequence of shape (B, T, {features}), got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise ValueError(f"{owner}: expected a floating-point sequence, got {x.dtype}")
    if x.shape[1] < 1:
        raise ValueError(f"{owner}: the sequence has no steps (T = 0)")


def _row_list(bad: Tensor, limit: int = 5) -> str:
    rows = torch.nonzero(bad).flatten()[:limit].tolist()
    return ", ".join(str(r) for r in rows)


def _check_lengths(owner: str, lengths: Tensor, batch: int, steps: int) -> None:
    if lengths.ndim != 1 or lengths.shape[0] != batch:
        raise ValueError(
            f"{owner}: lengths must have shape (B,) = ({batch},), got {tuple(lengths.shape)}"
        )
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"{owner}: lengths must be an integer tensor, got {lengths.dtype}")
    if _checks_enabled():
        bad = (lengths < 1) | (lengths > steps)
        if bool(bad.any()):
            raise ValueError(
                f"{owner}: lengths must lie in [1, T] = [1, {steps}]; rows {_row_list(bad)} "
                f"have lengths {lengths[bad][:5].tolist()}"
            )


def _check_mask(owner: str, mask: Tensor, batch: int, steps: int) -> None:
    if mask.shape != (batch, steps):
        raise ValueError(
            f"{owner}: mask must have shape (B, T) = ({batch}, {steps}), got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        raise ValueError(f"{owner}: mask must be a bool tensor (True = valid), got {mask.dtype}")
    if _checks_enabled():
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


def _span(
    owner: str,
    x: Tensor,
    lengths: Tensor | None,
    mask: Tensor | None,
    layout: str,
) -> tuple[Tensor | None, Tensor] | None:
    """Validate the padding arguments and return (start, length) per sample.

    start is None when every valid run begins at step 0; None overall means no padding.
    """
    _check_choice(owner, "layout", layout, _LAYOUTS)
    batch, steps = x.shape[0], x.shape[1]
    if lengths is not None and mask is not None:
        raise ValueError(f"{owner}: pass lengths or mask, not both")
    if lengths is not None:
        _check_lengths(owner, lengths, batch, steps)
        length = lengths.to(device=x.device, dtype=torch.long)
        return (steps - length if layout == "front" else None), length
    if mask is not None:
        _check_mask(owner, mask, batch, steps)
        mask = mask.to(x.device)
        return mask.to(torch.int8).argmax(1), mask.sum(1)
    return None


def _valid_steps(steps: int, start: Tensor | None, length: Tensor) -> Tensor:
    t = torch.arange(steps, device=length.device)
    first = torch.zeros_like(length) if start is None else start
    return (t >= first[:, None]) & (t < (first + length)[:, None])


def _gather_steps(x: Tensor, index: Tensor) -> Tensor:
    return x.gather(1, index[:, :, None].expand(-1, -1, x.shape[2]))


def _roll_rows(x: Tensor, shift: Tensor) -> Tensor:
    """out[b, t] = x[b, (t + shift[b]) mod T]: a per-sample roll, no loop over the batch."""
    steps = x.shape[1]
    index = (torch.arange(steps, device=x.device) + shift[:, None]).remainder(steps)
    return _gather_steps(x, index)


def lengths_to_mask(lengths: Tensor, steps: int, *, layout: Layout = "end") -> Tensor:
    """Boolean mask of the valid steps of sequences with the given lengths.

    Args:
        lengths: Number of valid steps per sample.
        steps: Padded length T.
        layout: ``"end"`` when the padding follows the valid steps, ``"front"`` when it
            precedes them.

    Returns:
        ``mask[b, t]`` is True where step t of sample b is valid.

    Shapes:
        lengths: (B,) integer. Output: (B, T) bool.
    """
    _check_choice("lengths_to_mask", "layout", layout, _LAYOUTS)
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
    _check_choice("infer_padding_mask", "layout", layout, _LAYOUTS)
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


def _make_rnn(
    cell: str, input_size: int, hidden_size: int, num_layers: int, dropout: float
) -> nn.RNNBase:
    rnn_type = nn.LSTM if cell == "lstm" else nn.GRU
    return rnn_type(
        input_size,
        hidden_size,
        num_layers=num_layers,
        batch_first=True,
        dropout=dropout if num_layers > 1 else 0.0,
    )


class SequenceEncoder(nn.Module):
    """Recurrent encoder of one modality: the last valid state, projected to a code.

    The MFM modality-specific encoder E_a_i (an LSTM whose last hidden state goes through
    a Linear layer to Z_a_i), made padding-aware. Valid steps are moved to the front of
    each row (one gather, for front padding or masks) and the batch runs as a packed
    sequence, so cuDNN sees one call and padded steps are never read.

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
        _check_positive(
            owner,
            input_size=input_size,
            hidden_size=hidden_size,
            code_size=code_size,
            num_layers=num_layers,
        )
        _check_choice(owner, "cell", cell, _CELLS)
        _check_dropout(owner, dropout)
        self.input_size = input_size
        self.code_size = code_size
        self.rnn = _make_rnn(cell, input_size, hidden_size, num_layers, dropout)
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
        _check_sequence(owner, x, self.input_size)
        span = _span(owner, x, lengths, mask, layout)
        if span is None:
            _, state = self.rnn(x)
        else:
            start, length = span
            aligned = x if start is None else _roll_rows(x, start)
            packed = pack_padded_sequence(
                aligned, length.cpu(), batch_first=True, enforce_sorted=False
            )
            _, state = self.rnn(packed)
        last = state[0] if isinstance(state, tuple) else state
        code: Tensor = self.to_code(self.dropout(last[-1]))
        return code


def _mlp(in_size: int, hidden_size: int, out_size: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_size, hidden_size),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden_size, out_size),
    )


def _per_modality(
    owner: str, arg: str, value: Tensor | Mapping[str, Tensor] | None, names: tuple[str, ...]
) -> dict[str, Tensor | None]:
    if value is None or isinstance(value, Tensor):
        return dict.fromkeys(names, value)
    _check_names(owner, arg, set(value), names)
    return {name: value[name] for name in names}


def _check_names(owner: str, what: str, given: set[str], names: tuple[str, ...]) -> None:
    unknown = sorted(given - set(names))
    missing = sorted(set(names) - given)
    if unknown:
        raise ValueError(
            f"{owner}: {what} has unknown modality {unknown[0]!r}; expected {list(names)}"
        )
    if missing:
        raise ValueError(f"{owner}: {what} lacks modality {missing[0]!r}; expected {list(names)}")


class MemoryFusionEncoder(nn.Module):
    """Memory Fusion Network (Zadeh et al., AAAI 2018): the MFM shared encoder E_y.

    One LSTMCell per modality unrolls in time. At each step a delta-memory attention
    reads the concatenated cell states of steps t-1 and t, c* = [c_{t-1}, c_t]:
    a = softmax(MLP_a(c*)), c^ = a * c*. A candidate memory u~ = tanh(MLP_u(c^)) enters
    the multi-view gated memory u_t = gamma1 * u_{t-1} + gamma2 * u~ with the retain
    gate gamma1 = sigmoid(MLP_1([c^, u_{t-1}])) and the update gate
    gamma2 = sigmoid(MLP_2([c^, u_{t-1}])) (the names of the MFN paper and code). The
    final [h_1 .. h_M, u_T] goes through a Linear layer to Z_y. Each MLP is
    Linear, ReLU, Dropout, Linear.

    Padding: on a step where a modality is padded its (h, c) is kept unchanged, and the
    memory is kept unchanged on steps where every modality is padded. With one mask
    shared by all modalities this gives exactly the result of running the valid steps
    alone, whatever the padding layout. Modalities are ordered by name.

    Args:
        input_sizes: Features per step of each modality, name -> D_m.
        hidden_size: LSTM state size, one for all or name -> size.
        memory_size: Size of the multi-view memory u.
        code_size: Size of the shared code Z_y.
        attention_hidden_size: Hidden width of the attention MLP.
        memory_hidden_size: Hidden width of the candidate-memory MLP.
        gate_hidden_size: Hidden width of each gate MLP.
        dropout: Dropout inside the MLPs.

    Shapes:
        inputs: mapping name -> (B, T, D_m), one T for all. lengths: (B,) or
        mask: (B, T) bool, shared, or a mapping name -> either. Output: (B, code_size).
    """

    def __init__(
        self,
        input_sizes: Mapping[str, int],
        hidden_size: int | Mapping[str, int],
        memory_size: int,
        code_size: int,
        *,
        attention_hidden_size: int = 64,
        memory_hidden_size: int = 64,
        gate_hidden_size: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if not input_sizes:
            raise ValueError(f"{owner}: input_sizes must name at least one modality")
        self.modalities = tuple(sorted(input_sizes))
        hidden = (
            dict.fromkeys(self.modalities, hidden_size)
            if isinstance(hidden_size, int)
            else dict(hidden_size)
        )
        _check_names(owner, "hidden_size", set(hidden), self.modalities)
        _check_positive(owner, **{f"input_sizes[{n!r}]": input_sizes[n] for n in self.modalities})
        _check_positive(owner, **{f"hidden_size[{n!r}]": hidden[n] for n in self.modalities})
        _check_positive(
            owner,
            memory_size=memory_size,
            code_size=code_size,
            attention_hidden_size=attention_hidden_size,
            memory_hidden_size=memory_hidden_size,
            gate_hidden_size=gate_hidden_size,
        )
        _check_dropout(owner, dropout)
        self.input_sizes = {n: input_sizes[n] for n in self.modalities}
        self.hidden_sizes = {n: hidden[n] for n in self.modalities}
        self.memory_size = memory_size
        self.code_size = code_size
        self.cells = nn.ModuleDict(
            {n: nn.LSTMCell(input_sizes[n], hidden[n]) for n in self.modalities}
        )
        window = 2 * sum(hidden.values())
        self.attention = _mlp(window, attention_hidden_size, window, dropout)
        self.candidate = _mlp(window, memory_hidden_size, memory_size, dropout)
        self.retain_gate = _mlp(window + memory_size, gate_hidden_size, memory_size, dropout)
        self.update_gate = _mlp(window + memory_size, gate_hidden_size, memory_size, dropout)
        self.to_code = nn.Linear(sum(hidden.values()) + memory_size, code_size)

    def _check_inputs(self, inputs: Mapping[str, Tensor]) -> list[Tensor]:
        owner = type(self).__name__
        _check_names(owner, "inputs", set(inputs), self.modalities)
        first = self.modalities[0]
        for name in self.modalities:
            x = inputs[name]
            _check_sequence(f"{owner}: modality {name!r}", x, self.input_sizes[name])
            if x.shape[:2] != inputs[first].shape[:2]:
                raise ValueError(
                    f"{owner}: modality {name!r} has (B, T) = {tuple(x.shape[:2])}, but "
                    f"modality {first!r} has {tuple(inputs[first].shape[:2])}; all "
                    "modalities must share B and T"
                )
        return [inputs[name] for name in self.modalities]

    def _valid_masks(
        self,
        xs: list[Tensor],
        lengths: Tensor | Mapping[str, Tensor] | None,
        mask: Tensor | Mapping[str, Tensor] | None,
        layout: str,
    ) -> list[Tensor] | None:
        owner = type(self).__name__
        if lengths is not None and mask is not None:
            raise ValueError(f"{owner}: pass lengths or mask, not both")
        per_lengths = _per_modality(owner, "lengths", lengths, self.modalities)
        per_mask = _per_modality(owner, "mask", mask, self.modalities)
        if lengths is None and mask is None:
            _check_choice(owner, "layout", layout, _LAYOUTS)
            return None
        valid = []
        for name, x in zip(self.modalities, xs, strict=True):
            span = _span(
                f"{owner}: modality {name!r}", x, per_lengths[name], per_mask[name], layout
            )
            assert span is not None
            valid.append(_valid_steps(x.shape[1], *span))
        return valid

    def forward(
        self,
        inputs: Mapping[str, Tensor],
        lengths: Tensor | Mapping[str, Tensor] | None = None,
        *,
        mask: Tensor | Mapping[str, Tensor] | None = None,
        layout: Layout = "end",
    ) -> Tensor:
        """Fuse the modalities into the shared code.

        Args:
            inputs: Padded sequences by modality name.
            lengths: Valid steps per sample, shared or by modality.
            mask: Alternative to ``lengths``: True on valid steps, shared or by modality.
            layout: Where the padding sits when ``lengths`` is given.

        Returns:
            The shared code Z_y.
        """
        xs = self._check_inputs(inputs)
        valid = self._valid_masks(xs, lengths, mask, layout)
        if valid is not None:
            xs = [x.masked_fill(~v[:, :, None], 0.0) for x, v in zip(xs, valid, strict=True)]
        batch, steps = xs[0].shape[:2]
        cells = [self.cells[name] for name in self.modalities]
        h = [xs[0].new_zeros(batch, self.hidden_sizes[name]) for name in self.modalities]
        c = [xs[0].new_zeros(batch, self.hidden_sizes[name]) for name in self.modalities]
        memory = xs[0].new_zeros(batch, self.memory_size)
        any_valid = None if valid is None else torch.stack(valid).any(0)
        for t in range(steps):
            new_h, new_c = [], []
            for m, cell in enumerate(cells):
                h_m, c_m = cell(xs[m][:, t], (h[m], c[m]))
                if valid is not None:
                    keep = valid[m][:, t, None]
                    h_m, c_m = torch.where(keep, h_m, h[m]), torch.where(keep, c_m, c[m])
                new_h.append(h_m)
                new_c.append(c_m)
            new_memory = self._memory_step(torch.cat(c + new_c, dim=1), memory)
            memory = (
                new_memory
                if any_valid is None
                else torch.where(any_valid[:, t, None], new_memory, memory)
            )
            h, c = new_h, new_c
        code: Tensor = self.to_code(torch.cat([*h, memory], dim=1))
        return code

    def _memory_step(self, c_star: Tensor, memory: Tensor) -> Tensor:
        attended = torch.softmax(self.attention(c_star), dim=1) * c_star
        candidate = torch.tanh(self.candidate(attended))
        both = torch.cat([attended, memory], dim=1)
        retain = torch.sigmoid(self.retain_gate(both))
        update = torch.sigmoid(self.update_gate(both))
        return retain * memory + update * candidate


class SequenceDecoder(nn.Module):
    """Recurrent decoder from a vector to a sequence: the MFM modality decoder F_i.

    The vector (in MFM, concat(F_a_i, F_y)) drives a recurrent network unrolled for T
    steps, with a Linear layer per step to the modality's features. ``feed`` chooses
    the input of each step:

    - ``"every"``: the vector at every step (one cuDNN call; the default).
    - ``"first"``: the vector at step 0, zeros after (one cuDNN call).
    - ``"hidden"``: the vector at step 0, then the previous step's top hidden state, as
      in the public MFM reference code. Needs ``input_size == hidden_size``; unrolls in
      a Python loop over time.

    The decoder's own step 0 is the first valid step of the target: with front padding
    the generated steps are placed after the padding, so the same vector gives the same
    valid content in either layout. Padded positions of the output are exactly zero.

    Args:
        input_size: Size of the input vector.
        hidden_size: Recurrent state size.
        output_size: Features per output step, D.
        cell: ``"lstm"`` or ``"gru"``.
        num_layers: Stacked recurrent layers.
        feed: What each step reads, see above.

    Shapes:
        z: (B, input_size). lengths: (B,) integer in [1, T], or mask: (B, T) bool.
        Output: (B, T, output_size).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        cell: CellType = "lstm",
        num_layers: int = 1,
        feed: DecoderFeed = "every",
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        _check_positive(
            owner,
            input_size=input_size,
            hidden_size=hidden_size,
            output_size=output_size,
            num_layers=num_layers,
        )
        _check_choice(owner, "cell", cell, _CELLS)
        _check_choice(owner, "feed", feed, _FEEDS)
        if feed == "hidden" and input_size != hidden_size:
            raise ValueError(
                f"{owner}: feed='hidden' reads the previous hidden state as input, so "
                f"input_size ({input_size}) must equal hidden_size ({hidden_size})"
            )
        self.input_size = input_size
        self.output_size = output_size
        self.feed = feed
        self.rnn = _make_rnn(cell, input_size, hidden_size, num_layers, 0.0)
        self.to_output = nn.Linear(hidden_size, output_size)

    def forward(
        self,
        z: Tensor,
        steps: int | None = None,
        *,
        lengths: Tensor | None = None,
        mask: Tensor | None = None,
        layout: Layout = "end",
    ) -> Tensor:
        """Decode a batch of vectors into padded sequences.

        Args:
            z: Input vectors.
            steps: Output length T; optional when ``mask`` gives it.
            lengths: Valid steps per sample, laid out as ``layout`` says.
            mask: Alternative to ``lengths``: True on valid steps (e.g. the target's mask).
            layout: Where the padding sits when ``lengths`` is given.

        Returns:
            The decoded sequences, zero on padded steps.
        """
        owner = type(self).__name__
        if z.ndim != 2 or z.shape[1] != self.input_size:
            raise ValueError(
                f"{owner}: expected z of shape (B, {self.input_size}), got {tuple(z.shape)}"
            )
        steps = self._resolve_steps(z, steps, mask)
        hidden = self._unroll(z, steps)
        out: Tensor = self.to_output(hidden)
        span = _span(owner, out, lengths, mask, layout)
        if span is None:
            return out
        start, length = span
        out = out.masked_fill(~_valid_steps(steps, None, length)[:, :, None], 0.0)
        return out if start is None else _roll_rows(out, -start)

    def _resolve_steps(self, z: Tensor, steps: int | None, mask: Tensor | None) -> int:
        owner = type(self).__name__
        if steps is None:
            if mask is None or mask.ndim != 2:
                raise ValueError(f"{owner}: pass steps (T), or a (B, T) mask that gives it")
            steps = int(mask.shape[1])
        if mask is not None and mask.ndim == 2 and mask.shape[1] != steps:
            raise ValueError(f"{owner}: steps is {steps} but the mask has {mask.shape[1]} steps")
        _check_positive(owner, steps=steps)
        return steps

    def _unroll(self, z: Tensor, steps: int) -> Tensor:
        batch = z.shape[0]
        if self.feed == "every":
            inputs = z[:, None, :].expand(batch, steps, self.input_size).contiguous()
        elif self.feed == "first":
            inputs = torch.cat([z[:, None, :], z.new_zeros(batch, steps - 1, self.input_size)], 1)
        else:
            return self._unroll_on_hidden(z, steps)
        out: Tensor = self.rnn(inputs)[0]
        return out

    def _unroll_on_hidden(self, z: Tensor, steps: int) -> Tensor:
        step_input = z[:, None, :]
        state: Tensor | tuple[Tensor, Tensor] | None = None
        outputs = []
        for _ in range(steps):
            step_input, state = self.rnn(step_input, state)
            outputs.append(step_input)
        return torch.cat(outputs, dim=1)


def sequence_mse(
    x_hat: Tensor,
    x: Tensor,
    mask: Tensor | None = None,
    *,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Mean squared error over the valid steps only.

    ``sum over valid (b, t, d) of (x_hat - x)^2 / (number of valid steps * D)``. Padded
    steps contribute nothing, to the value or to the gradient, whatever they hold
    (NaN included). Computed in at least float32, also under autocast.

    Args:
        x_hat: Reconstruction.
        x: Target.
        mask: True on valid steps; None means all steps are valid.
        reduction: ``"mean"`` over all valid elements of the batch, or ``"none"`` for
            one mean per sample (over that sample's valid elements).

    Returns:
        A scalar, or a (B,) tensor with ``reduction="none"``.

    Shapes:
        x_hat, x: (B, T, D). mask: (B, T) bool. Output: () or (B,).
    """
    _check_choice("sequence_mse", "reduction", reduction, ("mean", "none"))
    if x_hat.shape != x.shape or x.ndim != 3:
        raise ValueError(
            f"sequence_mse: x_hat and x must both be (B, T, D), got {tuple(x_hat.shape)} "
            f"and {tuple(x.shape)}"
        )
    dtype = torch.promote_types(torch.promote_types(x_hat.dtype, x.dtype), torch.float32)
    x_hat, x = x_hat.to(dtype), x.to(dtype)
    features = x.shape[2]
    if mask is None:
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    elif mask.shape != x.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(
            f"sequence_mse: mask must be a bool tensor of shape (B, T) = {tuple(x.shape[:2])}, "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    keep = mask[:, :, None]
    # Select before subtracting: a NaN in a padded target would otherwise reach the
    # gradient through 0 * NaN.
    squared = (torch.where(keep, x_hat, 0.0) - torch.where(keep, x, 0.0)).square()
    if reduction == "none":
        return squared.sum((1, 2)) / (mask.sum(1) * features).clamp_min(1).to(dtype)
    return squared.sum() / (mask.sum() * features).clamp_min(1).to(dtype)


class SequenceMSELoss(nn.Module):
    """Module form of :func:`sequence_mse`.

    Args:
        reduction: ``"mean"`` or ``"none"``, see :func:`sequence_mse`.

    Shapes:
        x_hat, x: (B, T, D). mask: (B, T) bool. Output: () or (B,).
    """

    def __init__(self, *, reduction: Literal["mean", "none"] = "mean") -> None:
        super().__init__()
        _check_choice(type(self).__name__, "reduction", reduction, ("mean", "none"))
        self.reduction: Literal["mean", "none"] = reduction

    def forward(self, x_hat: Tensor, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """Masked reconstruction loss; see :func:`sequence_mse`."""
        return sequence_mse(x_hat, x, mask, reduction=self.reduction)
