"""The one MLP layout every block uses: Linear, then ReLU + Dropout + Linear per layer."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import nn


def mlp(widths: Sequence[int], *, dropout: float = 0.0) -> nn.Sequential:
    """``Linear(w0, w1)``, then ``ReLU, Dropout, Linear(w_i, w_i+1)`` for each next width.

    The output is linear (no final activation). Layer indices are stable (0, 3, 6, ...
    are the Linear layers), so state_dict keys do not depend on the caller.

    Shapes:
        input: (B, widths[0]). Returns: (B, widths[-1]).
    """
    layers: list[nn.Module] = []
    for i, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
        if i:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)
