"""The discriminative predictor D: F_y -> Y."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from factorkit._layers import mlp
from factorkit._validation import check_size, check_tensor

__all__ = ["Predictor"]


class Predictor(nn.Module):
    """Predict the label from the shared factor only: Y_hat = D(F_y).

    An MLP (Linear, ReLU, Dropout, Linear) or, with ``hidden_size=0``, one Linear layer.
    The output is raw: class logits for classification (use cross-entropy), values for
    regression (the MFM uses L1). A regression model can add a constant ``offset`` to
    every output, e.g. the mean training label, so that the network learns deviations
    from it.

    Args:
        input_size: Fy, size of the shared factor.
        output_size: number of classes or regression targets.
        hidden_size: hidden width (default ``max(64, input_size)``; 0 for linear).
        dropout: dropout after the hidden activation.
        offset: added to every output (a buffer: saved with the weights, moved by
            ``.to()``); a float or one value per output.

    Shapes:
        shared: (B, Fy). Returns: (B, output_size).

    Examples:
        >>> Predictor(input_size=8, output_size=3)(torch.randn(2, 8)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        input_size: int,
        output_size: int,
        *,
        hidden_size: int | None = None,
        dropout: float = 0.0,
        offset: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        self.input_size = check_size(input_size, "input_size")
        check_size(output_size, "output_size")
        shift = torch.as_tensor(offset, dtype=torch.get_default_dtype())
        if shift.dim() > 1 or (shift.dim() == 1 and shift.shape[0] != output_size):
            raise ValueError(
                f"offset must be a float or {output_size} values, got shape {tuple(shift.shape)}"
            )
        self.offset: Tensor
        self.register_buffer("offset", shift.expand(output_size).clone())
        if hidden_size == 0:
            self.net: nn.Module = nn.Linear(input_size, output_size)
        else:
            hidden = check_size(hidden_size or max(64, input_size), "hidden_size")
            self.net = mlp([input_size, hidden, output_size], dropout=dropout)

    def forward(self, shared: Tensor) -> Tensor:
        """Predict Y_hat = D(F_y) from the shared factor."""
        if shared.dim() != 2 or shared.shape[1] != self.input_size:
            raise ValueError(
                f"expected a shared factor of shape (B, {self.input_size}), "
                f"got {tuple(shared.shape)}"
            )
        check_tensor(shared, self, "shared factor")
        out: Tensor = self.net(shared)
        return out + self.offset.to(out.dtype)
