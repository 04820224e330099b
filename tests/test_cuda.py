"""The device path: blocks, MMD paths, surrogate and one training step of each example's MFM
on ``device``, against a float64 CPU reference, and the host syncs of a training step.

``device`` is ``"cpu"`` always (so CI runs every code path here) and ``"cuda"`` when a GPU
is present (marker ``cuda``; skipped cleanly otherwise): ``pytest -m cuda`` runs only the
GPU half. TF32 is switched off in this module, so "float32" means float32 arithmetic.

Tolerances, as the relative error in norm ``||got - ref|| / ||ref||`` against the same
computation in float64 on the CPU (same weights, same inputs, same prior sample):

* float32: outputs, loss terms and gradients within ``FP32_RTOL`` (1e-4).
* bf16 autocast: outputs within ``BF16_RTOL`` (5e-2), gradients within
  ``BF16_GRAD_RTOL`` (0.25). bf16 keeps 8 bits of mantissa (relative step 2^-8 = 4e-3);
  outputs land within 2e-2, but with few samples a ReLU whose input rounds across 0
  switches a whole row of the backward pass on or off, and the gradients of the image
  decoder and the shared surrogate were measured 6e-2 and 1e-1 away on the CPU (the
  others within 1.5e-2). A wrong gradient is off by O(1).

Gradients are compared as one vector (all parameters concatenated), so a parameter
whose own gradient nearly cancels cannot fail the test on rounding alone. The MMD itself
runs in float32 under autocast, so the loss tests hold it to the float32 tolerance there
too.

Host syncs (``torch.cuda.set_sync_debug_mode``), by design, in one training step:

* ``check_finite=True`` (the default) of :class:`~factorkit.MMDPriorLoss`,
  :func:`~factorkit.mmd`, :func:`~factorkit.gaussian_prior_mmd` and
  :func:`~factorkit.reconstruction_loss`: one sync per call (per batched group in
  ``MMDPriorLoss.per_latent``), to raise on NaN/inf.
* sequence blocks given ``mask=``/``lengths=``: the padding-argument checks (a few
  syncs per call, skipped under ``torch.compile``), and the packed-sequence call of
  :class:`~factorkit.SequenceEncoder` (cuDNN takes the lengths on the host; torch's
  ``pack_padded_sequence`` then copies the sort order back to the device).

With ``check_finite=False`` the vector MFM's step (forward, backward, fused AdamW
update) makes no host sync at all; ``SYNC_FREE`` below is that configuration.
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
import re
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import factorkit
from factorkit import (
    ConcatFusion,
    FactorGenerators,
    FactorizedHead,
    FactorizedLatents,
    GaussianKernel,
    ImageDecoder,
    MemoryFusionEncoder,
    MMDPriorLoss,
    ModalityDecoders,
    Predictor,
    SequenceDecoder,
    SequenceEncoder,
    SurrogateInference,
    VectorDecoder,
    mfm_loss,
)
from factorkit._grouped import GroupedMLP

FP32_RTOL = 1e-4
BF16_RTOL = 5e-2
BF16_GRAD_RTOL = 0.25

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
        ],
    ),
]
PRECISIONS = ["float32", "bf16"]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)


@pytest.fixture(autouse=True, scope="module")
def _no_tf32() -> Iterator[None]:
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


# ---------------------------------------------------------------- helpers


def cast(obj: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``obj`` (tensors, mappings, tuples, latents) with floating tensors in ``dtype``."""
    if isinstance(obj, Tensor):
        return obj.to(device, dtype) if obj.is_floating_point() else obj.to(device)
    if isinstance(obj, FactorizedLatents):
        private = cast(dict(obj.private), device, dtype)
        present = None if obj.present is None else cast(dict(obj.present), device, dtype)
        return FactorizedLatents(cast(obj.shared, device, dtype), private, present)
    if isinstance(obj, Mapping):
        return {k: cast(v, device, dtype) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(cast(v, device, dtype) for v in obj)
    return obj


def flatten(out: Any) -> list[Tensor]:
    """The tensors of a block's output, in a fixed order."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, FactorizedLatents):
        return [t for _, t in out.items()]
    if isinstance(out, Mapping):
        return [t for k in sorted(out) for t in flatten(out[k])]
    assert isinstance(out, tuple)
    return [t for o in out for t in flatten(o)]


def rel_err(got: Tensor, ref: Tensor) -> float:
    """``||got - ref|| / ||ref||`` in float64 on the CPU (absolute when ``ref`` is 0)."""
    g, r = got.detach().double().cpu(), ref.detach().double().cpu()
    return float((g - r).norm() / r.norm().clamp_min(1e-30))


def concat(grads: Mapping[str, Tensor]) -> Tensor:
    """All gradients as one float64 CPU vector, in name order."""
    return torch.cat([grads[k].detach().double().cpu().flatten() for k in sorted(grads)])


def precision(device: torch.device, name: str) -> Any:
    """float32 arithmetic, or bf16 autocast on ``device`` (CPU autocast included)."""
    if name == "float32":
        return nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def tolerances(name: str) -> tuple[float, float]:
    """(output tolerance, gradient tolerance) for a precision."""
    return (FP32_RTOL, FP32_RTOL) if name == "float32" else (BF16_RTOL, BF16_GRAD_RTOL)


# ---------------------------------------------------------------- blocks

SIZES = {"a": 6, "b": 5}
BATCH = 8


def _present() -> dict[str, Tensor]:
    a = torch.ones(BATCH, dtype=torch.bool)
    a[1] = False
    b = torch.ones(BATCH, dtype=torch.bool)
    b[4] = False
    return {"a": a, "b": b}


def _vectors() -> dict[str, Tensor]:
    return {m: torch.randn(BATCH, d) for m, d in SIZES.items()}


def _latents() -> FactorizedLatents:
    private = {m: torch.randn(BATCH, 3) for m in SIZES}
    return FactorizedLatents(torch.randn(BATCH, 4), private, _present())


def _step_mask(steps: int = 7, front: bool = True) -> Tensor:
    """(BATCH, steps) contiguous valid runs of lengths 1..steps, front-padded or not."""
    lengths = torch.tensor([7, 3, 1, 5, 7, 2, 6, 4])[:BATCH].clamp(max=steps)
    t = torch.arange(steps)
    if front:
        return t[None, :] >= (steps - lengths)[:, None]
    return t[None, :] < lengths[:, None]


def _sequences(sizes: Mapping[str, int], steps: int = 7) -> dict[str, Tensor]:
    return {m: torch.randn(BATCH, steps, d) for m, d in sizes.items()}


Case = Callable[[], tuple[nn.Module, tuple[Any, ...], dict[str, Any]]]

BLOCKS: dict[str, Case] = {
    "head": lambda: (
        FactorizedHead(SIZES, shared_size=4, private_size=3),
        (_vectors(), _present()),
        {},
    ),
    "fusion": lambda: (ConcatFusion(SIZES, 4), (_vectors(), _present()), {}),
    "generators": lambda: (
        FactorGenerators(4, dict.fromkeys(SIZES, 3), factor_size=5),
        (_latents(),),
        {},
    ),
    "grouped_mlp": lambda: (
        GroupedMLP({"a": [6, 8, 4], "b": [5, 8, 4]}),
        (_vectors(),),
        {},
    ),
    "vector_decoder": lambda: (
        VectorDecoder(3, 4, 5, hidden_sizes=[8]),
        (torch.randn(BATCH, 3), torch.randn(BATCH, 4)),
        {},
    ),
    "vector_decoders": lambda: (
        ModalityDecoders({m: VectorDecoder(3, 4, d, hidden_sizes=[8]) for m, d in SIZES.items()}),
        (_latents(),),
        {},
    ),
    "image_decoder": lambda: (
        ImageDecoder(3, 4, (2, 7, 9)),
        (torch.randn(BATCH, 3), torch.randn(BATCH, 4)),
        {},
    ),
    "predictor": lambda: (Predictor(4, 3), (torch.randn(BATCH, 4),), {}),
    "sequence_encoder": lambda: (
        SequenceEncoder(5, 8, 3),
        (torch.randn(BATCH, 7, 5),),
        {"mask": _step_mask()},
    ),
    "sequence_encoder_lengths": lambda: (
        SequenceEncoder(5, 8, 3, cell="gru", num_layers=2),
        (torch.randn(BATCH, 7, 5), _step_mask(front=False).sum(1)),
        {},
    ),
    "sequence_decoder": lambda: (
        SequenceDecoder(2, 4, 5, hidden_size=8),
        (torch.randn(BATCH, 2), torch.randn(BATCH, 4)),
        {"mask": _step_mask()},
    ),
    "sequence_decoder_hidden": lambda: (
        SequenceDecoder(3, 5, 5, feed="hidden"),
        (torch.randn(BATCH, 3), torch.randn(BATCH, 5)),
        {"mask": _step_mask(front=False)},
    ),
    "mfn": lambda: (
        MemoryFusionEncoder({"a": 5, "b": 4}, 8, 6, 3),
        (_sequences({"a": 5, "b": 4}),),
        {"mask": _step_mask()},
    ),
    **{
        f"surrogate_{mode}": (
            lambda mode=mode: (
                SurrogateInference(SIZES, shared_size=4, private_size=3, mode=mode),
                (_vectors(), _present()),
                {},
            )
        )
        for mode in ("shared", "experts", "per_pattern")
    },
}


def run_block(
    block: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], weights: list[Tensor] | None
) -> tuple[list[Tensor], dict[str, Tensor], list[Tensor]]:
    """Outputs, parameter gradients, and the random weights of the scalar that was
    differentiated (``sum_i <w_i, out_i>``, drawn on the first call)."""
    outs = flatten(block(*args, **kwargs))
    if weights is None:
        g = torch.Generator().manual_seed(1)
        weights = [torch.randn(o.shape, generator=g, dtype=torch.float64) for o in outs]
    loss = sum(
        (o.float() * w.to(o.device, torch.float32 if o.dtype != torch.float64 else o.dtype)).sum()
        for o, w in zip(outs, weights, strict=True)
    )
    block.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[union-attr]
    grads = {n: p.grad for n, p in block.named_parameters() if p.grad is not None}
    return outs, grads, weights


@pytest.mark.parametrize("prec", PRECISIONS)
@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_matches_float64_cpu(device: torch.device, name: str, prec: str) -> None:
    torch.manual_seed(0)
    block, args, kwargs = BLOCKS[name]()
    block.eval()
    reference = copy.deepcopy(block).double()
    ref_out, ref_grads, weights = run_block(
        reference, cast(args, torch.device("cpu"), torch.float64), kwargs, None
    )
    moved = copy.deepcopy(block).to(device)
    with precision(device, prec):
        out, grads, _ = run_block(
            moved, cast(args, device, torch.float32), cast(kwargs, device, torch.float32), weights
        )
    out_tol, grad_tol = tolerances(prec)
    assert len(out) == len(ref_out)
    for got, ref in zip(out, ref_out, strict=True):
        assert got.device.type == device.type
        assert torch.isfinite(got).all()
        assert rel_err(got, ref) <= out_tol, (name, rel_err(got, ref))
    assert grads.keys() == ref_grads.keys()
    err = rel_err(concat(grads), concat(ref_grads))
    assert err <= grad_tol, (name, err)


# ---------------------------------------------------------------- losses


def _pair(n: int, m: int, d: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(n, d, generator=g), torch.randn(m, d, generator=g) * 1.3 + 0.4


def _mask(n: int) -> Tensor:
    mask = torch.ones(n, dtype=torch.bool)
    mask[::5] = False
    return mask


class FixedPrior:
    """A prior sampler returning rows of one fixed table, moved to the code's device:
    the same prior sample on every device (``MMDPriorLoss(prior=FixedPrior(...))``)."""

    def __init__(self, rows: int, features: int) -> None:
        self.table = torch.randn(rows, features, generator=torch.Generator().manual_seed(5))
        self.cache: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    def __call__(self, n: int, d: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (device, dtype)
        if key not in self.cache:  # moved once: later draws make no host-device copy
            self.cache[key] = self.table.to(device, dtype)
        return self.cache[key][:n, :d]


def _loss_cases() -> dict[str, tuple[tuple[int, int, int], Callable[[Tensor, Tensor], Tensor]]]:
    """name -> ((n, m, d), f(x, y)): every MMD path of the library (dense, chunked, small
    batch, masked, analytic, per_latent, rff) and the other losses; a scalar of x and y."""
    prior = FixedPrior(256, 16)
    multi = GaussianKernel([1.0, 4.0, 16.0])

    def per_latent(x: Tensor, y: Tensor) -> Tensor:
        latents = FactorizedLatents(
            x,
            {"a": x[:, :5] * 0.5, "b": y[:, :3]},
            {
                "a": _mask(x.shape[0]).to(x.device),
                "b": torch.ones(x.shape[0], dtype=torch.bool, device=x.device),
            },
        )
        loss = MMDPriorLoss(prior=prior).per_latent(latents)
        return sum(loss.values())  # type: ignore[return-value]

    return {
        "dense": ((200, 150, 16), lambda x, y: factorkit.mmd(x, y)),
        "dense_unbiased": ((200, 150, 16), lambda x, y: factorkit.mmd(x, y, estimator="unbiased")),
        "dense_multiscale": ((200, 150, 16), lambda x, y: factorkit.mmd(x, y, kernel=multi)),
        "chunked": (
            (200, 150, 16),
            lambda x, y: factorkit.mmd(x, y, mode="chunked", chunk_size=64),
        ),
        "small_batch": ((40, 30, 8), lambda x, y: factorkit.mmd(x, y)),
        "masked": (
            (200, 150, 16),
            lambda x, y: factorkit.mmd(x, y, x_mask=_mask(200).to(x.device)),
        ),
        "masked_small": (
            (40, 30, 8),
            lambda x, y: factorkit.mmd(x, y, x_mask=_mask(40).to(x.device)),
        ),
        "analytic": ((200, 1, 16), lambda x, y: factorkit.gaussian_prior_mmd(x)),
        "analytic_small": ((40, 1, 8), lambda x, y: factorkit.gaussian_prior_mmd(x)),
        "analytic_chunked": (
            (200, 1, 16),
            lambda x, y: factorkit.gaussian_prior_mmd(x, mode="chunked", chunk_size=64),
        ),
        "prior_loss": ((200, 1, 16), lambda x, y: MMDPriorLoss(prior=prior)(x)),
        "per_latent": ((40, 40, 8), per_latent),
        "per_latent_analytic": (
            (40, 40, 8),
            lambda x, y: sum(
                MMDPriorLoss(estimator="analytic")
                .per_latent(FactorizedLatents(x, {"a": x[:, :5], "b": y[:, :3] + x[:, :3]}))
                .values()
            ),
        ),
        "rff": (
            (200, 150, 16),
            lambda x, y: factorkit.mmd(
                x, y, mode="rff", features=256, generator=torch.Generator().manual_seed(7)
            ),
        ),
        "reconstruction": (
            (40, 40, 8),
            lambda x, y: factorkit.reconstruction_loss(
                {"a": x, "b": x[:, :3]},
                {"a": y, "b": y[:, :3]},
                {"a": _mask(40).to(x.device), "b": ~_mask(40).to(x.device)},
            ),
        ),
        "reconstruction_steps": (
            (40, 40, 8),
            lambda x, y: factorkit.reconstruction_loss(
                {"a": x.reshape(8, 5, 8)},
                {"a": y.reshape(8, 5, 8)},
                mask=_step_mask(5).to(x.device),
            ),
        ),
        "surrogate_loss": (
            (40, 40, 8),
            lambda x, y: factorkit.surrogate_loss(
                FactorizedLatents(x, {"a": x[:, :3]}, {"a": _mask(40).to(x.device)}),
                FactorizedLatents(y, {"a": y[:, :3]}),
            ),
        ),
    }


LOSSES = _loss_cases()


# The RFF frequencies are drawn in the input dtype, so a float64 run draws other ones:
# rff is compared with the same computation in float32 on the CPU.
REFERENCE_DTYPE = {"rff": torch.float32}


def _loss_inputs(name: str, device: torch.device, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    (n, m, d), _ = LOSSES[name]
    x, y = _pair(n, m, d)
    return x.to(device, dtype).requires_grad_(True), y.to(device, dtype)


@pytest.mark.parametrize("prec", PRECISIONS)
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_matches_float64_cpu(device: torch.device, name: str, prec: str) -> None:
    _, fn = LOSSES[name]
    x64, y64 = _loss_inputs(name, torch.device("cpu"), REFERENCE_DTYPE.get(name, torch.float64))
    ref = fn(x64, y64)
    (ref_grad,) = torch.autograd.grad(ref, x64)
    x, y = _loss_inputs(name, device, torch.float32)
    with precision(device, prec):
        value = fn(x, y)
    (grad,) = torch.autograd.grad(value, x)
    # The MMD runs in float32 under autocast: the float32 tolerance holds for both.
    mmd_like = name not in ("reconstruction", "reconstruction_steps", "surrogate_loss")
    tol = FP32_RTOL if (prec == "float32" or mmd_like) else BF16_RTOL
    assert value.dtype == torch.float32 or not mmd_like
    assert value.device.type == device.type
    assert rel_err(value, ref) <= tol, (name, value.item(), ref.item())
    assert rel_err(grad, ref_grad) <= tol, (name, rel_err(grad, ref_grad))


def _hvp(name: str, device: torch.device, dtype: torch.dtype, v: Tensor) -> Tensor:
    """``d/dx <grad f(x), v>`` by double backward."""
    x, y = _loss_inputs(name, device, dtype)
    (g,) = torch.autograd.grad(LOSSES[name][1](x, y), x, create_graph=True)
    (h,) = torch.autograd.grad((g * v.to(device, dtype)).sum(), x)
    return h


def _hvp_finite_difference(name: str, v: Tensor, eps: float = 1e-4) -> Tensor:
    """The same product from first derivatives alone, float64 central difference."""
    x, y = _loss_inputs(name, torch.device("cpu"), torch.float64)
    grads = []
    for sign in (1.0, -1.0):
        shifted = (x.detach() + sign * eps * v.double()).requires_grad_(True)
        grads.append(torch.autograd.grad(LOSSES[name][1](shifted, y), shifted)[0])
    return (grads[0] - grads[1]) / (2 * eps)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_second_derivative(device: torch.device, name: str) -> None:
    """A Hessian-vector product on ``device`` (float32) vs a float64 finite difference
    of the CPU gradient (rff: vs the CPU's float32 double backward). Every path is twice
    differentiable: the MMD engine rebuilds its gradient from differentiable operations
    when a graph is requested."""
    (n, _, d), _ = LOSSES[name]
    v = torch.randn(n, d, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    if name in REFERENCE_DTYPE:
        ref = _hvp(name, torch.device("cpu"), REFERENCE_DTYPE[name], v)
    else:
        ref = _hvp_finite_difference(name, v)
    got = _hvp(name, device, torch.float32, v)
    assert rel_err(got, ref) <= 1e-3, rel_err(got, ref)


# ---------------------------------------------------------------- training steps


@dataclass
class Step:
    """One example's MFM and a closure computing its loss terms on a fixed batch."""

    model: nn.Module
    terms: Callable[[nn.Module], dict[str, Tensor]]


def digits_step(device: torch.device, dtype: torch.dtype, *, check_finite: bool = True) -> Step:
    """The digits example's MFM (``examples/mfm.py``) on a batch of 64 UCI digits.

    Dropout 0 and a fixed prior sample, so that every device computes the same function.
    """
    from examples import mfm as digits
    from examples.multiview_data import load_uci_mfeat, standardize

    data, _ = standardize(load_uci_mfeat(seed=0))
    views, labels = data.split("train")[:2]
    views = {m: v[:64].to(device, dtype) for m, v in views.items()}
    labels = labels[:64].to(device)
    torch.manual_seed(0)
    model = digits.digits_mfm(data.view_shapes, data.num_classes, dropout=0.0).to(device, dtype)
    prior = MMDPriorLoss(prior=FixedPrior(64, 64), check_finite=check_finite)

    def terms(net: nn.Module) -> dict[str, Tensor]:
        return mfm_loss(net(views), views, labels, prior=prior, check_finite=check_finite)

    return Step(model, terms)


def sentiment_step(device: torch.device, dtype: torch.dtype, *, check_finite: bool = True) -> Step:
    """The sentiment example's ``SentimentMFM`` on a synthetic padded batch (2 modalities,
    front padding, one modality absent for some samples), regression labels."""
    from examples.mfm_sentiment.data import Batch
    from examples.mfm_sentiment.model import build_mfm

    g = torch.Generator().manual_seed(4)
    batch, steps, sizes = 16, 9, {"audio": 6, "video": 5}
    lengths = torch.randint(1, steps + 1, (batch,), generator=g)
    mask = torch.arange(steps)[None, :] >= (steps - lengths)[:, None]
    present = {
        "audio": torch.ones(batch, dtype=torch.bool),
        "video": torch.rand(batch, generator=g) > 0.3,
    }
    x = {
        m: torch.randn(batch, steps, d, generator=g) * (mask & present[m][:, None])[..., None]
        for m, d in sizes.items()
    }
    data = Batch(
        cast(x, device, dtype), mask.to(device), cast(present, device, dtype),
        torch.randn(batch, 2, generator=g).to(device, dtype),
    )  # fmt: skip
    torch.manual_seed(0)
    model = build_mfm(sizes, 2, hidden_size=16, dropout=0.0).to(device, dtype)
    prior = MMDPriorLoss(prior=FixedPrior(batch, 32), check_finite=check_finite)

    def terms(net: nn.Module) -> dict[str, Tensor]:
        out = net(data.x, data.present, mask=data.mask)
        return mfm_loss(
            out,
            data.x,
            data.labels,
            mask=data.mask,
            label_loss="l1",
            prior=prior,
            check_finite=check_finite,
        )

    return Step(model, terms)


STEPS: dict[str, Callable[..., Step]] = {"digits": digits_step, "sentiment": sentiment_step}
"""The examples' training steps; retarget a test by editing its builder above."""


def train_step(step: Step, device: torch.device, prec: str, fused: bool) -> dict[str, Tensor]:
    """Terms, then backward and one AdamW update; returns the terms and the gradients."""
    optimizer = torch.optim.AdamW(step.model.parameters(), lr=1e-3, fused=fused)
    with precision(device, prec):
        terms = step.terms(step.model)
    optimizer.zero_grad(set_to_none=True)
    terms["total"].backward()
    grads = {
        f"grad/{n}": p.grad.clone() for n, p in step.model.named_parameters() if p.grad is not None
    }
    optimizer.step()
    return {**{k: v.detach() for k, v in terms.items()}, **grads}


@pytest.mark.parametrize("prec", PRECISIONS)
@pytest.mark.parametrize("example", sorted(STEPS))
def test_training_step_matches_float64_cpu(device: torch.device, example: str, prec: str) -> None:
    """Loss terms and gradients of one step, then the terms after the AdamW update."""
    cpu = torch.device("cpu")
    ref_step = STEPS[example](cpu, torch.float64)
    step = STEPS[example](device, torch.float32)
    ref = train_step(ref_step, cpu, "float32", fused=False)
    got = train_step(step, device, prec, fused=True)
    out_tol, grad_tol = tolerances(prec)
    assert got.keys() == ref.keys()
    for key, value in ref.items():
        tol = grad_tol if key.startswith("grad/") else out_tol
        assert rel_err(got[key], value) <= tol, (key, rel_err(got[key], value))
    # After the update: the same weights up to Adam's first step (about lr per element).
    with torch.no_grad(), precision(device, prec):
        after = step.terms(step.model)
    with torch.no_grad():
        ref_after = ref_step.terms(ref_step.model)
    assert rel_err(after["total"], ref_after["total"]) <= out_tol * 10
    assert float(after["total"]) < float(got["total"])


# ---------------------------------------------------------------- host syncs


@contextmanager
def sync_sites(device: torch.device) -> Iterator[list[str]]:
    """Collect ``file:line`` of every host sync inside the block (CUDA only; on the CPU
    there is no sync to see and the list stays empty). A sync raised inside torch (e.g.
    ``torch._check`` on a tensor, ``pack_padded_sequence``) is attributed to the innermost
    frame of factorkit or the examples that led to it."""
    sites: list[str] = []
    if device.type != "cuda":
        yield sites
        return
    ours = (str(Path(factorkit.__file__).parent), str(Path(__file__).parents[1] / "examples"))

    def record(message: Any, category: Any, filename: str, lineno: int, *_: Any) -> None:
        if "synchroniz" not in str(message):
            return
        frames = [f for f in traceback.extract_stack() if f.filename.startswith(ours)]
        if frames:
            filename, lineno = frames[-1].filename, frames[-1].lineno or 0
        elif filename == torch.cuda.__file__:
            return  # switching the debug mode itself (torch's lazy CUDA initialisation)
        sites.append(f"{Path(filename).parent.name}/{Path(filename).name}:{lineno}")

    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield sites
        finally:
            torch.cuda.set_sync_debug_mode("default")


# Files whose host syncs are documented (module docstring): the finiteness checks, the
# sequence blocks' padding arguments and torch's pack_padded_sequence (it copies the
# sort order of the host lengths to the device).
_FINITE_CHECKS = {
    "factorkit/_mmd_core.py",
    "factorkit/mmd_loss.py",
    "factorkit/reconstruction.py",
    "factorkit/_validation.py",
}
DOCUMENTED_SYNCS = {
    "digits": _FINITE_CHECKS,
    "sentiment": _FINITE_CHECKS
    | {"factorkit/sequence.py", "factorkit/_padding.py", "factorkit/mfn.py", "utils/rnn.py"},
}
SYNC_FREE = {"digits"}
"""Examples whose step makes no host sync with ``check_finite=False``."""


def _run_steps(step: Step, device: torch.device, prec: str, count: int) -> None:
    optimizer = torch.optim.AdamW(step.model.parameters(), lr=1e-3, fused=True)
    for _ in range(count):
        with precision(device, prec):
            terms = step.terms(step.model)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()


@pytest.mark.parametrize("prec", PRECISIONS)
@pytest.mark.parametrize("example", sorted(STEPS))
def test_training_step_syncs_only_where_documented(
    device: torch.device, example: str, prec: str
) -> None:
    step = STEPS[example](device, torch.float32)
    _run_steps(step, device, prec, 1)  # warm-up: lazy initialisation, optimizer state
    with sync_sites(device) as sites:
        _run_steps(step, device, prec, 2)
    files = {site.split(":")[0] for site in sites}
    assert files <= DOCUMENTED_SYNCS[example], sites


@pytest.mark.parametrize("prec", PRECISIONS)
@pytest.mark.parametrize("example", sorted(SYNC_FREE))
def test_training_step_without_checks_never_syncs(
    device: torch.device, example: str, prec: str
) -> None:
    """``check_finite=False`` everywhere: forward, backward and the fused AdamW update
    run without a host sync (``set_sync_debug_mode("error")`` raises on the first)."""
    step = STEPS[example](device, torch.float32, check_finite=False)
    _run_steps(step, device, prec, 1)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
    try:
        _run_steps(step, device, prec, 3)
    finally:
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("default")
    terms = step.terms(step.model)
    assert torch.isfinite(terms["total"]).all()


def test_fit_syncs_once_per_epoch_not_per_step(device: torch.device) -> None:
    """``examples.training.fit`` with the sync-free objective: the host syncs of an epoch
    (the batch order's copy to the device, the epoch's loss sums, validation, the
    learning-rate schedule) do not grow with the number of steps."""
    from examples import mfm as digits
    from examples.multiview_data import load_uci_mfeat, standardize
    from examples.training import Split, fit

    data, _ = standardize(load_uci_mfeat(seed=0))
    views, labels = data.split("train")
    prior = MMDPriorLoss(check_finite=False)

    def loss(model: nn.Module, x: dict[str, Tensor], y: Tensor, present: Any) -> dict[str, Tensor]:
        return mfm_loss(model(x, present), x, y, prior=prior, check_finite=False)

    def split(rows: int, start: int = 0) -> Split:
        part = {m: v[start : start + rows].to(device) for m, v in views.items()}
        return Split(part, labels[start : start + rows].to(device))

    validation = split(64, start=512)
    counts = []
    for rows in (64, 256):  # 2 and 8 steps of 32 samples
        torch.manual_seed(0)
        model = digits.digits_mfm(data.view_shapes, data.num_classes).to(device)
        epoch = functools.partial(
            fit, model, loss, split(rows), validation, epochs=1, batch_size=32,
            lr_patience=None, predict=digits.logits_of(model),
        )  # fmt: skip
        epoch()
        with sync_sites(device) as sites:  # the second fit: everything initialised
            result = epoch()
        counts.append(len(sites))
        assert len(result.history) == 1 and math.isfinite(result.history[0]["total"])
    assert counts[0] == counts[1], counts


# ---------------------------------------------------------------- the prepared check


@pytest.mark.slow
def test_gpu_check_quick_on_cpu(tmp_path: Path) -> None:
    """``benchmarks/gpu_check.sh --device cpu --quick`` end to end: every part passes and
    the folder holds what the device tool can return (at most 8 plain files)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    cmd = ["bash", "benchmarks/gpu_check.sh", "--device", "cpu", "--quick", "--out", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "gpu_check summary" in proc.stdout
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) <= 8 and all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files), files
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["failed"] == []
    ran = {name for name, part in summary["parts"].items() if part.get("ok")}
    assert ran == {"env", "tests", "digits", "mmd", "step"}
    assert summary["tests"]["tests"] > 0
    assert summary["tests"]["failures"] == summary["tests"]["errors"] == 0
    digits = summary["digits"]
    assert digits["device"] == "cpu" and digits["seconds"] > 0
    for model in ("mfm", "discriminative"):
        assert 0.0 <= digits[model]["test_accuracy"] <= 1.0
        assert digits[model]["epochs"] == 2 and digits[model]["epoch_seconds"] > 0
    assert "| 256 | 16 |" in (tmp_path / "mmd.log").read_text()
    assert "MFM / discriminative:" in (tmp_path / "step.log").read_text()
