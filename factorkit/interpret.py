"""Factor contributions: how much each generated modality depends on the shared factor.

MFM reconstructs each modality from two factors, X_hat_m = F_m(F_a_m, F_y). After the
paper's gradient-flow interpretation, the contribution of a factor to a modality is the
size of the decoder's Jacobian with respect to that factor. The paper does not give its
exact normalisation (the reference code does not include the analysis), so the one below
(the mean of unsquared Frobenius norms, and the share a / (a + b)) is factorkit's choice;
``squared=True`` averages squared norms instead (the Jacobians' energy).

Definition (exact, no sampling). For one sample b, with J^y_b = dX_hat_m / dF_y and
J^a_b = dX_hat_m / dF_a_m (X_hat_m flattened to a vector),

    c^y_b = ||J^y_b||_F,   c^a_b = ||J^a_b||_F          (Frobenius norms)

and over a dataset of N observed samples

    shared_m  = (1/N) sum_b c^y_b,      private_m = (1/N) sum_b c^a_b,
    ratio_m   = shared_m / private_m,   share_m   = shared_m / (shared_m + private_m).

``share`` lies in [0, 1]: 1 means the modality is generated from the shared factor only,
0 from its private factor only. With ``per_coordinate=True`` each squared norm is divided
by the factor's size before the square root (the root-mean-square column norm), so that
factors of different sizes are compared per coordinate; by default the totals are used.
The norms are not invariant to a rescaling of a factor (doubling F_y halves dX/dF_y for
a decoder that undoes it), so compare modalities within one trained model.

Sequences. For a modality listed in ``per_step`` the decoder output is (B, T, ...) and
the norms are taken per time step: c^y_{b,t} = ||dX_hat_m[b, t] / dF_y[b]||_F. Step t is
averaged over the samples whose step t is valid (mask or lengths), giving (T,) tensors;
a step that no sample reaches is NaN.

Samples whose modality is absent (``present[m]`` false in the factors) are left out of
that modality's averages: their private factor is a placeholder, not data.

How it is computed. The Jacobian columns J_b e_j are obtained with the double-backward
trick (one reverse pass builds u -> J^T u, a second one differentiates it along e_j), one
pass per factor coordinate over the whole batch, so the cost grows with the factor sizes,
not with the output size (images and long sequences are cheap). This needs a decoder that
treats samples independently (no batch statistics: call ``decoder.eval()`` first, which
also switches dropout off) and operations with a double backward. The recurrent kernels
of cuDNN and oneDNN have none, so both libraries are switched off while a decoder that
holds an ``nn.RNNBase`` layer (or is a plain function, which cannot be inspected) runs.
Each batch's graph is freed before the next batch is read.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from factorkit.decoders import ModalityDecoders
from factorkit.latents import FactorizedLatents

__all__ = [
    "FactorBatch",
    "FactorContributions",
    "JacobianNorms",
    "decoder_jacobian_norms",
    "factor_contributions",
]

Decoder: TypeAlias = Callable[[Tensor, Tensor], Tensor]

FactorBatch: TypeAlias = FactorizedLatents | tuple[FactorizedLatents, Mapping[str, Tensor]]
"""Factors of one batch, optionally with valid-step masks (B, T) or lengths (B,) by modality."""


class JacobianNorms(NamedTuple):
    """Per-sample Frobenius norms of a decoder's Jacobians.

    Attributes:
        shared: ||dX_hat / dF_y||_F per sample (per step for sequences).
        private: ||dX_hat / dF_a||_F per sample (per step for sequences).

    Shapes:
        (B,), or (B, T) with ``per_step=True``.
    """

    shared: Tensor
    private: Tensor


class FactorContributions(NamedTuple):
    """Mean contribution of the shared and the private factor to each generated modality.

    Every attribute maps a modality name (sorted) to a float64 tensor on the CPU; see the
    module docstring for the exact definitions.

    Attributes:
        shared: mean ||dX_hat_m / dF_y||_F over the observed samples.
        private: mean ||dX_hat_m / dF_a_m||_F over the observed samples.
        ratio: ``shared / private`` (``inf`` where the private contribution is 0).
        share: ``shared / (shared + private)`` in [0, 1] (NaN where both are 0).
        counts: how many samples (per step: valid samples) were averaged, int64.

    Shapes:
        () for whole-output modalities, (T,) for the modalities listed in ``per_step``.
    """

    shared: dict[str, Tensor]
    private: dict[str, Tensor]
    ratio: dict[str, Tensor]
    share: dict[str, Tensor]
    counts: dict[str, Tensor]


@contextmanager
def _kernels_with_double_backward(decoder: Decoder) -> Iterator[None]:
    # cuDNN's and oneDNN's fused RNN kernels cannot be differentiated twice; the native
    # kernels that replace them can. Convolutions are much faster with those libraries,
    # so they stay on for modules without a recurrent layer.
    if isinstance(decoder, nn.Module) and not any(
        isinstance(layer, nn.RNNBase) for layer in decoder.modules()
    ):
        yield
        return
    cudnn, mkldnn = torch.backends.cudnn.enabled, torch.backends.mkldnn.enabled
    torch.backends.cudnn.enabled = False
    # mkldnn.enabled is typed as its descriptor class.
    torch.backends.mkldnn.enabled = False  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.backends.cudnn.enabled = cudnn
        torch.backends.mkldnn.enabled = mkldnn


def _squared_column_sum(grads: Tensor | None, u: Tensor, *, per_step: bool) -> Tensor:
    """sum_j ||J_b e_j||^2 per sample (and step), given grads = J^T u as a function of u."""
    batch = u.shape[0]
    shape = (batch, u.shape[1]) if per_step else (batch,)
    total = u.new_zeros(shape)
    if grads is None or not grads.requires_grad:
        return total
    for j in range(grads.shape[1]):
        (column,) = torch.autograd.grad(grads[:, j].sum(), u, retain_graph=True, allow_unused=True)
        if column is not None:
            total += column.detach().square().reshape(*shape, -1).sum(-1)
    return total


def decoder_jacobian_norms(
    decoder: Decoder,
    private: Tensor,
    shared: Tensor,
    *,
    per_step: bool = False,
    per_coordinate: bool = False,
) -> JacobianNorms:
    """Per-sample Frobenius norms of dX_hat/dF_y and dX_hat/dF_a for one batch.

    Exact, by the double-backward trick (see :mod:`factorkit.interpret`); the decoder
    must treat samples independently (put it in eval mode).

    Args:
        decoder: called as ``decoder(private, shared)``, e.g. a
            :class:`~factorkit.VectorDecoder`.
        private: the private factors F_a.
        shared: the shared factors F_y.
        per_step: the output is a sequence (B, T, ...): one norm per step.
        per_coordinate: divide each squared norm by the factor's size (RMS column norm).

    Returns:
        The norms, detached, in the factors' dtype.

    Shapes:
        private: (B, Fa). shared: (B, Fy). Decoder output: (B, ...), or (B, T, ...) with
        ``per_step``. Returns: shared, private each (B,), or (B, T) with ``per_step``.

    Examples:
        >>> dec = VectorDecoder(private_size=2, shared_size=3, output_size=5).eval()
        >>> norms = decoder_jacobian_norms(dec, torch.randn(4, 2), torch.randn(4, 3))
        >>> norms.shared.shape, norms.private.shape
        (torch.Size([4]), torch.Size([4]))
    """
    if private.dim() != 2 or shared.dim() != 2 or private.shape[0] != shared.shape[0]:
        raise ValueError(
            f"expected factors private (B, Fa) and shared (B, Fy), got private "
            f"{tuple(private.shape)} and shared {tuple(shared.shape)}"
        )
    with _kernels_with_double_backward(decoder), torch.enable_grad():
        fa = private.detach().requires_grad_(True)
        fy = shared.detach().requires_grad_(True)
        out = decoder(fa, fy)
        if out.dim() < (2 if per_step else 1) or out.shape[0] != fa.shape[0]:
            expected = "(B, T, ...)" if per_step else "(B, ...)"
            raise ValueError(
                f"decoder output must have shape {expected} with B = {fa.shape[0]}, "
                f"got {tuple(out.shape)}"
            )
        # J^T u is linear in u, so u's value is irrelevant; only its graph is used.
        u = torch.zeros_like(out, requires_grad=True)
        grad_y, grad_a = torch.autograd.grad(out, (fy, fa), u, create_graph=True, allow_unused=True)
        sq_y = _squared_column_sum(grad_y, u, per_step=per_step)
        sq_a = _squared_column_sum(grad_a, u, per_step=per_step)
    if per_coordinate:
        sq_y, sq_a = sq_y / fy.shape[1], sq_a / fa.shape[1]
    return JacobianNorms(sq_y.sqrt(), sq_a.sqrt())


def _as_step_mask(mask: Tensor, name: str, batch: int, steps: int) -> Tensor:
    if mask.dtype == torch.bool:
        if mask.shape != (batch, steps):
            raise ValueError(
                f"modality {name!r}: expected a step mask of shape ({batch}, {steps}), "
                f"got {tuple(mask.shape)}"
            )
        return mask
    if mask.is_floating_point() or mask.shape != (batch,):
        raise ValueError(
            f"modality {name!r}: expected a bool step mask ({batch}, {steps}) or integer "
            f"lengths ({batch},), got {mask.dtype} of shape {tuple(mask.shape)}"
        )
    return torch.arange(steps, device=mask.device) < mask[:, None]


def _add_padded(total: Tensor | None, new: Tensor) -> Tensor:
    """Sum of per-step tensors whose T may differ between batches (missing steps are 0)."""
    if total is None:
        return new
    if new.dim() == 1 and new.shape[0] != total.shape[0]:
        steps = max(new.shape[0], total.shape[0])
        total = F.pad(total, (0, steps - total.shape[0]))
        new = F.pad(new, (0, steps - new.shape[0]))
    return total + new


def _unpack(item: Any) -> tuple[FactorizedLatents, Mapping[str, Tensor]]:
    if isinstance(item, FactorizedLatents):
        return item, {}
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], FactorizedLatents):
        return item[0], item[1]
    raise ValueError(
        "each batch must be FactorizedLatents or (FactorizedLatents, step masks by "
        f"modality), got {type(item).__name__}"
    )


def factor_contributions(
    decoders: ModalityDecoders | Mapping[str, Decoder],
    batches: Iterable[Any],
    *,
    factorize: Callable[[Any], FactorBatch] | None = None,
    per_step: Collection[str] = (),
    per_coordinate: bool = False,
    squared: bool = False,
) -> FactorContributions:
    """Contribution of the shared vs the private factor to each generated modality.

    Averages the per-sample Jacobian norms of :func:`decoder_jacobian_norms` over a
    dataset, batch by batch; the definitions are in :mod:`factorkit.interpret`.

    Args:
        decoders: :class:`~factorkit.ModalityDecoders`, or modality name -> a decoder
            called as ``decoder(private, shared)``. Put them in eval mode.
        batches: an iterable of :data:`FactorBatch` (factors F = G(Z), optionally with
            step masks), or of anything ``factorize`` accepts (e.g. a DataLoader).
        factorize: maps one item of ``batches`` to a :data:`FactorBatch`, e.g.
            ``lambda x: generators(head(encode(x)))``; run under ``torch.no_grad()``.
        per_step: modalities whose decoder output is a sequence (B, T, ...), reported per
            time step. A step mask (B, T) bool or lengths (B,) integer (valid steps
            first) may accompany each batch; without one every step counts.
        per_coordinate: compare factors per coordinate (RMS column norms).
        squared: average squared Jacobian norms instead of norms (factorkit's default,
            unsquared, is a choice: the paper does not state its normalisation).

    Returns:
        :class:`FactorContributions`, float64 on the CPU.

    Shapes:
        factors.shared: (B, Fy). factors.private[m]: (B, Fa_m). Results: () per
        modality, (T,) for ``per_step`` modalities (T: the longest seen).

    Examples:
        A decoder that ignores its private factor draws everything from the shared one:

        >>> weight = torch.randn(8, 3)
        >>> decoders = {"a": lambda private, shared: shared @ weight}
        >>> factors = FactorizedLatents(torch.randn(5, 8), {"a": torch.randn(5, 2)})
        >>> c = factor_contributions(decoders, [factors])
        >>> float(c.share["a"])  # 1: shared only
        1.0

        With a trained model: ``factor_contributions(decoders.eval(), loader,
        factorize=lambda x: generators(head(encode(x))))``.
    """
    table: dict[str, Decoder]
    if isinstance(decoders, ModalityDecoders):
        table = {m: functools.partial(decoders.decode, m) for m in decoders.modalities}
    else:
        table = dict(decoders)
    names = sorted(table)
    if not names:
        raise ValueError("at least one decoder is required")
    if set(per_step) - set(names):
        raise ValueError(f"per_step names {sorted(set(per_step) - set(names))} have no decoder")
    sums: dict[str, list[Tensor | None]] = {m: [None, None, None] for m in names}
    for item in batches:
        if factorize is not None:
            with torch.no_grad():
                item = factorize(item)
        factors, masks = _unpack(item)
        if set(masks) - set(per_step):
            raise ValueError(
                f"step masks given for {sorted(set(masks) - set(per_step))}, "
                f"which are not listed in per_step={sorted(per_step)}"
            )
        for m in names:
            if m not in factors.private:
                raise ValueError(
                    f"modality {m!r} has a decoder but no factor; factors have "
                    f"{list(factors.modalities)}"
                )
            norms = decoder_jacobian_norms(
                table[m],
                factors.private[m],
                factors.shared,
                per_step=m in per_step,
                per_coordinate=per_coordinate,
            )
            weight = _weights(factors, masks, m, norms.shared.shape)
            sizes = (norms.shared, norms.private)
            if squared:
                sizes = (norms.shared.square(), norms.private.square())
            for k, value in enumerate((*sizes, weight)):
                kept = torch.where(weight, value, 0.0).double().sum(0).cpu()
                sums[m][k] = _add_padded(sums[m][k], kept)
    return _finish(sums)


def _weights(
    factors: FactorizedLatents, masks: Mapping[str, Tensor], m: str, shape: torch.Size
) -> Tensor:
    present = factors.present[m] if factors.present is not None else None
    weight = torch.ones(shape, dtype=torch.bool, device=factors.shared.device)
    if m in masks:
        weight = _as_step_mask(masks[m].to(weight.device), m, shape[0], shape[1])
    if present is not None:
        weight = weight & present.reshape(-1, *([1] * (len(shape) - 1)))
    return weight


def _finish(sums: Mapping[str, list[Tensor | None]]) -> FactorContributions:
    if any(parts[2] is None for parts in sums.values()):
        raise ValueError("batches is empty: nothing to average")
    shared, private, counts = {}, {}, {}
    for m, (sum_y, sum_a, n) in sums.items():
        assert sum_y is not None
        assert sum_a is not None
        assert n is not None
        counts[m] = n.round().long()
        shared[m], private[m] = sum_y / n, sum_a / n
    return FactorContributions(
        shared=shared,
        private=private,
        ratio={m: shared[m] / private[m] for m in sums},
        share={m: shared[m] / (shared[m] + private[m]) for m in sums},
        counts=counts,
    )
