"""Every foundation block under torch.compile, autocast and a state_dict round trip."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
import torch
from torch import nn

from factorkit import (
    MFM,
    FactorGenerators,
    FactorizedHead,
    ImageDecoder,
    ModalityDecoders,
    Predictor,
    VectorDecoder,
)

SIZES = {"fou": 6, "pix": 5}


def tiny_mfm() -> MFM:
    """Head -> generators -> decoders + predictor: every block family in one graph."""
    head = FactorizedHead(SIZES, shared_size=4, private_size=3, dropout=0.1)
    decoders = ModalityDecoders(
        {"fou": VectorDecoder(8, 8, 6), "pix": ImageDecoder(8, 8, (1, 5, 3), channels=(4, 4))}
    )
    generators = FactorGenerators.for_head(head, factor_size=8, dropout=0.1)
    return MFM(head, generators, decoders, Predictor(8, 3))


def inputs(batch: int = 4) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    x = {m: torch.randn(batch, d) for m, d in SIZES.items()}
    present = {
        "fou": torch.tensor([True, False, True, True]),
        "pix": torch.ones(batch, dtype=torch.bool),
    }
    return x, present


BLOCKS: dict[str, Callable[[], tuple[nn.Module, Callable[[nn.Module], object]]]] = {
    "head": lambda: (FactorizedHead(SIZES, shared_size=4, private_size=3), lambda m: m(*inputs())),
    "generators": lambda: (
        FactorGenerators(4, {"fou": 3}, factor_size=5),
        lambda m: m(
            FactorizedHead({"fou": 6}, shared_size=4, private_size=3)({"fou": torch.ones(2, 6)})
        ),
    ),
    "vector_decoder": lambda: (
        VectorDecoder(3, 4, 5),
        lambda m: m(torch.randn(2, 3), torch.randn(2, 4)),
    ),
    "image_decoder": lambda: (
        ImageDecoder(3, 4, (2, 7, 9)),
        lambda m: m(torch.randn(2, 3), torch.randn(2, 4)),
    ),
    "predictor": lambda: (Predictor(4, 3), lambda m: m(torch.randn(2, 4))),
    "mfm": lambda: (tiny_mfm(), lambda m: m(*inputs())),
}


def flatten(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if hasattr(out, "items"):
        return [t for _, t in out.items()]
    assert isinstance(out, tuple)
    return [t for o in out for t in flatten(o)]


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_state_dict_round_trip_is_bit_identical(name: str) -> None:
    torch.manual_seed(0)
    block, call = BLOCKS[name]()
    block.eval()
    buffer = io.BytesIO()
    torch.save(block.state_dict(), buffer)
    torch.manual_seed(1)
    fresh, _ = BLOCKS[name]()
    fresh.eval()
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    torch.manual_seed(2)
    expected = flatten(call(block))
    torch.manual_seed(2)
    got = flatten(call(fresh))
    assert len(got) == len(expected)
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_autocast_bf16_on_cpu(name: str) -> None:
    block, call = BLOCKS[name]()
    block.eval()
    torch.manual_seed(2)
    reference = flatten(call(block))
    torch.manual_seed(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = flatten(call(block))
    assert any(t.dtype == torch.bfloat16 for t in low)
    for a, b in zip(reference, low, strict=True):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b.float(), a, rtol=0.1, atol=0.1)


def test_whole_block_stack_compiles_without_graph_breaks() -> None:
    torch.manual_seed(0)
    model = tiny_mfm().eval()
    compiled = torch.compile(model, fullgraph=True)
    x, present = inputs()
    expected = flatten(model(x, present))
    got = flatten(compiled(x, present))
    assert len(got) == len(expected)
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # Backward through the compiled graph reaches every parameter.
    model.train()
    sum(t.sum() for t in flatten(compiled(x, present))).backward()
    assert all(p.grad is not None for p in model.parameters())
