"""The Memory Fusion Network (MFN) encoder: the shared code Z_y of aligned sequences.

Sequences and their padding follow the conventions of :mod:`factorkit.sequence`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from factorkit._layers import mlp
from factorkit._padding import LAYOUTS, Layout, padding_span, valid_steps
from factorkit._validation import (
    RecordsModalities,
    check_choice,
    check_dropout,
    check_modality_names,
    check_names,
    check_sequences,
    check_size,
    per_modality,
)

__all__ = ["MemoryFusionEncoder"]


def _by_modality(
    value: Tensor | Mapping[str, Tensor] | None, names: tuple[str, ...], what: str
) -> dict[str, Tensor | None]:
    """One tensor (or None) for every modality, or a mapping that names each of them."""
    if value is None or isinstance(value, Tensor):
        return dict.fromkeys(names, value)
    check_names(value.keys(), names, f"{what} modalities")
    return {name: value[name] for name in names}


class MemoryFusionEncoder(RecordsModalities):
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
    alone, whatever the padding layout. Modalities are ordered by name. A checkpoint
    records the modality names and sizes: loading it into an encoder of other modalities
    raises an error naming both.

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
        try:
            self.modalities = check_modality_names(input_sizes.keys())
        except ValueError as err:
            raise ValueError(f"{owner}: input_sizes: {err}") from None
        self.input_sizes = per_modality(dict(input_sizes), self.modalities, f"{owner}: input_sizes")
        self.hidden_sizes = per_modality(hidden_size, self.modalities, f"{owner}: hidden_size")
        self.memory_size = check_size(memory_size, f"{owner}: memory_size")
        self.code_size = check_size(code_size, f"{owner}: code_size")
        for name, value in (
            ("attention_hidden_size", attention_hidden_size),
            ("memory_hidden_size", memory_hidden_size),
            ("gate_hidden_size", gate_hidden_size),
        ):
            check_size(value, f"{owner}: {name}")
        check_dropout(dropout, f"{owner}: dropout")
        hidden = self.hidden_sizes
        self.cells = nn.ModuleDict(
            {n: nn.LSTMCell(self.input_sizes[n], hidden[n]) for n in self.modalities}
        )
        window = 2 * sum(hidden.values())
        gate = [window + memory_size, gate_hidden_size, memory_size]
        self.attention = mlp([window, attention_hidden_size, window], dropout=dropout)
        self.candidate = mlp([window, memory_hidden_size, memory_size], dropout=dropout)
        self.retain_gate = mlp(gate, dropout=dropout)
        self.update_gate = mlp(gate, dropout=dropout)
        self.to_code = nn.Linear(sum(hidden.values()) + memory_size, code_size)

    def modality_record(self) -> dict[str, Any]:
        """Input and LSTM sizes by modality (checked when a checkpoint loads)."""
        return {"input_sizes": self.input_sizes, "hidden_sizes": self.hidden_sizes}

    def _valid_masks(
        self,
        batch: int,
        steps: int,
        lengths: Tensor | Mapping[str, Tensor] | None,
        mask: Tensor | Mapping[str, Tensor] | None,
        layout: str,
        device: torch.device,
    ) -> list[Tensor] | None:
        owner = type(self).__name__
        if lengths is not None and mask is not None:
            raise ValueError(f"{owner}: pass lengths or mask, not both")
        per_lengths = _by_modality(lengths, self.modalities, f"{owner}: lengths")
        per_mask = _by_modality(mask, self.modalities, f"{owner}: mask")
        if lengths is None and mask is None:
            check_choice(layout, LAYOUTS, f"{owner}: layout")
            return None
        valid = []
        for name in self.modalities:
            span = padding_span(
                f"{owner}: modality {name!r}",
                batch,
                steps,
                per_lengths[name],
                per_mask[name],
                layout,
                device,
            )
            assert span is not None
            valid.append(valid_steps(steps, *span))
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
        batch, steps = check_sequences(inputs, self.input_sizes, self)
        xs = [inputs[name] for name in self.modalities]
        valid = self._valid_masks(batch, steps, lengths, mask, layout, xs[0].device)
        if valid is not None:
            xs = [x.masked_fill(~v[:, :, None], 0.0) for x, v in zip(xs, valid, strict=True)]
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
