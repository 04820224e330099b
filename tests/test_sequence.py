"""Tests for factorkit.sequence: values, padding invariance, errors, composition."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.testing import assert_close

from factorkit import reconstruction_loss
from factorkit.mfn import MemoryFusionEncoder
from factorkit.sequence import (
    SequenceDecoder,
    SequenceEncoder,
    infer_padding_mask,
    lengths_to_mask,
)

B, T = 5, 7
LENGTHS = torch.tensor([7, 3, 1, 5, 4])
SIZES = {"video": 4, "audio": 3}


def _front_pad(x: Tensor, lengths: Tensor) -> Tensor:
    """Move the valid steps of an end-padded batch to the end of each row."""
    out = torch.zeros_like(x)
    for b, n in enumerate(lengths.tolist()):
        out[b, x.shape[1] - n :] = x[b, :n]
    return out


def _fill_padding(x: Tensor, mask: Tensor, value: float) -> Tensor:
    return x.masked_fill(~mask[:, :, None], value)


def _grads(module: nn.Module) -> dict[str, Tensor]:
    return {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}


@pytest.fixture
def x() -> Tensor:
    torch.manual_seed(0)
    return torch.randn(B, T, 6)


@pytest.fixture
def inputs() -> dict[str, Tensor]:
    torch.manual_seed(1)
    return {name: torch.randn(B, T, d) for name, d in SIZES.items()}


# ----------------------------------------------------------------------------- masks


def test_lengths_to_mask_both_layouts() -> None:
    lengths = torch.tensor([3, 1])
    assert lengths_to_mask(lengths, 4).tolist() == [
        [True, True, True, False],
        [True, False, False, False],
    ]
    assert lengths_to_mask(lengths, 4, layout="front").tolist() == [
        [False, True, True, True],
        [False, False, False, True],
    ]


@pytest.mark.parametrize(
    ("lengths", "steps", "match"),
    [
        (
            torch.tensor([3, 5]),
            4,
            r"lengths must lie in \[0, T\] = \[0, 4\]; rows 1 have lengths \[5\]",
        ),
        (torch.tensor([-1, 2]), 4, r"lengths must lie in \[0, T\] = \[0, 4\]; rows 0 .* \[-1\]"),
        (torch.tensor([2.5, 1.0]), 4, "lengths must be an integer tensor, got torch.float32"),
        (torch.tensor([True, False]), 4, "lengths must be an integer tensor, got torch.bool"),
        (torch.tensor([[1, 2]]), 4, r"lengths must have shape \(B,\), got \(1, 2\)"),
        (torch.tensor([1, 2]), 0, "steps must be a positive int, got 0"),
    ],
)
def test_lengths_to_mask_rejects_bad_lengths(lengths: Tensor, steps: int, match: str) -> None:
    with pytest.raises(ValueError, match=f"^lengths_to_mask: {match}"):
        lengths_to_mask(lengths, steps)


def test_lengths_to_mask_of_zero_length_is_an_empty_row() -> None:
    assert lengths_to_mask(torch.tensor([0, 2]), 2, layout="front").tolist() == [
        [False, False],
        [True, True],
    ]


def test_infer_padding_mask_keeps_inner_zero_steps_and_unions_modalities() -> None:
    a = torch.tensor([[0.0, 0.0, 1.0, 0.0, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]])[:, :, None]
    v = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0, 0.0]])[:, :, None]
    assert infer_padding_mask(a).tolist() == [
        [False, False, True, True, True],
        [False] * 5,
    ]
    union = infer_padding_mask({"audio": a, "video": v})
    assert union.tolist() == [[False, False, True, True, True], [False, False, False, True, True]]
    end = infer_padding_mask({"audio": a.flip(1), "video": v.flip(1)}, layout="end")
    assert_close(end, union.flip(1))


# -------------------------------------------------------------------- SequenceEncoder


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_encoder_full_lengths_equals_plain_rnn(x: Tensor, cell: str) -> None:
    torch.manual_seed(2)
    enc = SequenceEncoder(6, 8, 3, cell=cell, num_layers=2)  # type: ignore[arg-type]
    _, state = enc.rnn(x)
    last = (state[0] if isinstance(state, tuple) else state)[-1]
    expected = last @ enc.to_code.weight.T + enc.to_code.bias
    assert_close(enc(x), expected)
    assert_close(enc(x, torch.full((B,), T)), expected)
    assert_close(enc(x, mask=torch.ones(B, T, dtype=torch.bool)), expected)


def test_encoder_matches_each_sample_encoded_alone(x: Tensor) -> None:
    torch.manual_seed(3)
    enc = SequenceEncoder(6, 8, 3)
    expected = torch.cat([enc(x[b : b + 1, :n]) for b, n in enumerate(LENGTHS.tolist())])
    assert_close(enc(x, LENGTHS), expected)


def test_encoder_padding_values_never_matter(x: Tensor) -> None:
    torch.manual_seed(4)
    enc = SequenceEncoder(6, 8, 3, cell="gru")
    mask = lengths_to_mask(LENGTHS, T)
    codes, grads = [], []
    for value in (0.0, 1e6, float("nan")):
        enc.zero_grad()
        code = enc(_fill_padding(x, mask, value), LENGTHS)
        code.square().sum().backward()
        codes.append(code)
        grads.append(_grads(enc))
    for code, grad in zip(codes[1:], grads[1:], strict=True):
        assert_close(code, codes[0], rtol=0, atol=0)
        assert_close(grad, grads[0], rtol=0, atol=0)


def test_encoder_front_end_and_middle_padding_agree(x: Tensor) -> None:
    torch.manual_seed(5)
    enc = SequenceEncoder(6, 8, 3)
    expected = enc(x, LENGTHS)
    front = _front_pad(x, LENGTHS)
    assert_close(enc(front, LENGTHS, layout="front"), expected)
    assert_close(enc(front, mask=lengths_to_mask(LENGTHS, T, layout="front")), expected)
    # One contiguous run anywhere in the row is valid: pad one step at the front too.
    middle = torch.cat([torch.full((B, 1, 6), 9.0), x], 1)
    mask = torch.cat([torch.zeros(B, 1, dtype=torch.bool), lengths_to_mask(LENGTHS, T)], 1)
    assert_close(enc(middle, mask=mask), expected)


def test_encoder_gradients_reach_every_parameter(x: Tensor) -> None:
    enc = SequenceEncoder(6, 8, 3, num_layers=2, dropout=0.1)
    enc(x, LENGTHS, layout="front").sum().backward()
    for name, p in enc.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_encoder_of_an_empty_batch_is_an_empty_code(x: Tensor) -> None:
    enc = SequenceEncoder(6, 8, 3)
    empty = torch.zeros(0, dtype=torch.long)
    for code in (enc(x[:0], empty), enc(x[:0], empty, layout="front"), enc(x[:0])):
        assert code.shape == (0, 3)
    code = enc(x[:0], mask=torch.zeros(0, T, dtype=torch.bool))
    assert code.shape == (0, 3)


def test_encoder_dtype_and_device_errors(x: Tensor) -> None:
    enc = SequenceEncoder(6, 8, 3)
    with pytest.raises(
        ValueError,
        match=r"^SequenceEncoder: sequence has dtype torch.float64 \(shape \(5, 7, 6\)\), "
        r"expected torch.float32 \(the dtype of SequenceEncoder's parameters\)",
    ):
        enc(x.double(), LENGTHS)
    with pytest.raises(ValueError, match=r"sequence must be floating point, got torch.int64"):
        enc(x.long())
    with pytest.raises(
        ValueError, match="sequence is on meta, SequenceEncoder's parameters on cpu"
    ):
        enc(x.to("meta"))
    # A float64 module takes float64 input.
    assert enc.double()(x.double(), LENGTHS).dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lengths": torch.tensor([7, 3, 0, 5, 4])}, r"lengths must lie in \[1, T\] = \[1, 7\]"),
        ({"lengths": torch.tensor([7, 3, 8, 5, 4])}, r"rows 2 have lengths \[8\]"),
        ({"lengths": torch.tensor([7, 3])}, r"shape \(B,\) = \(5,\), got \(2,\)"),
        ({"lengths": torch.full((B,), 7.0)}, "integer tensor"),
        ({"mask": torch.ones(B, T)}, "bool tensor"),
        ({"mask": torch.ones(B, T - 1, dtype=torch.bool)}, r"\(B, T\) = \(5, 7\)"),
        ({"mask": torch.zeros(B, T, dtype=torch.bool)}, "have no valid step"),
        ({"lengths": LENGTHS, "mask": torch.ones(B, T, dtype=torch.bool)}, "not both"),
        ({"lengths": LENGTHS, "layout": "left"}, "layout must be one of"),
    ],
)
def test_encoder_rejects_bad_padding_arguments(x: Tensor, kwargs: dict, match: str) -> None:
    enc = SequenceEncoder(6, 8, 3)
    lengths = kwargs.pop("lengths", None)
    with pytest.raises(ValueError, match=match):
        enc(x, lengths, **kwargs)


def test_encoder_rejects_non_contiguous_mask_clearly(x: Tensor) -> None:
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[3, 2] = False
    with pytest.raises(ValueError, match=r"mask rows 3 are not contiguous.*not padding"):
        SequenceEncoder(6, 8, 3)(x, mask=mask)


def test_encoder_rejects_bad_shapes_and_config(x: Tensor) -> None:
    enc = SequenceEncoder(6, 8, 3)
    with pytest.raises(ValueError, match=r"expected a sequence of shape \(B, T, 6\), got \(5, 6\)"):
        enc(x[:, 0])
    with pytest.raises(ValueError, match=r"\(B, T, 6\), got \(5, 7, 5\)"):
        enc(x[:, :, :5])
    with pytest.raises(ValueError, match="cell must be one of"):
        SequenceEncoder(6, 8, 3, cell="rnn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hidden_size must be a positive int"):
        SequenceEncoder(6, 0, 3)


# ---------------------------------------------------------------- MemoryFusionEncoder


def _reference_mfn(mfn: MemoryFusionEncoder, inputs: dict[str, Tensor]) -> Tensor:
    """The MFN recurrence written out for unpadded inputs, one sample set at a time."""
    names = sorted(inputs)
    batch, steps = inputs[names[0]].shape[:2]
    h = {n: torch.zeros(batch, mfn.cells[n].hidden_size) for n in names}
    c = {n: torch.zeros(batch, mfn.cells[n].hidden_size) for n in names}
    mem = torch.zeros(batch, mfn.memory_size)
    for t in range(steps):
        prev_c = torch.cat([c[n] for n in names], 1)
        for n in names:
            h[n], c[n] = mfn.cells[n](inputs[n][:, t], (h[n], c[n]))
        c_star = torch.cat([prev_c, *(c[n] for n in names)], 1)
        att = torch.softmax(mfn.attention(c_star), 1) * c_star
        both = torch.cat([att, mem], 1)
        gamma1 = torch.sigmoid(mfn.retain_gate(both))
        gamma2 = torch.sigmoid(mfn.update_gate(both))
        mem = gamma1 * mem + gamma2 * torch.tanh(mfn.candidate(att))
    return mfn.to_code(torch.cat([*(h[n] for n in names), mem], 1))


def _mfn() -> MemoryFusionEncoder:
    torch.manual_seed(6)
    return MemoryFusionEncoder(
        SIZES,
        {"audio": 5, "video": 4},
        6,
        3,
        attention_hidden_size=7,
        memory_hidden_size=5,
        gate_hidden_size=4,
    )


def test_mfn_matches_reference_recurrence(inputs: dict[str, Tensor]) -> None:
    mfn = _mfn()
    assert_close(mfn(inputs), _reference_mfn(mfn, inputs))
    # Modality order in the mapping does not matter.
    assert_close(mfn(dict(reversed(inputs.items()))), mfn(inputs))


def test_mfn_padded_batch_matches_each_sample_alone(inputs: dict[str, Tensor]) -> None:
    mfn = _mfn()
    expected = torch.cat(
        [
            _reference_mfn(mfn, {k: v[b : b + 1, :n] for k, v in inputs.items()})
            for b, n in enumerate(LENGTHS.tolist())
        ]
    )
    assert_close(mfn(inputs, LENGTHS), expected)
    front = {k: _front_pad(v, LENGTHS) for k, v in inputs.items()}
    assert_close(mfn(front, LENGTHS, layout="front"), expected)
    assert_close(mfn(front, mask=lengths_to_mask(LENGTHS, T, layout="front")), expected)
    per_modality = dict.fromkeys(SIZES, LENGTHS)
    assert_close(mfn(front, per_modality, layout="front"), expected)


def test_mfn_padding_values_never_matter(inputs: dict[str, Tensor]) -> None:
    mfn = _mfn()
    mask = lengths_to_mask(LENGTHS, T, layout="front")
    front = {k: _front_pad(v, LENGTHS) for k, v in inputs.items()}
    codes, grads = [], []
    for value in (0.0, -1e6, float("nan")):
        mfn.zero_grad()
        code = mfn({k: _fill_padding(v, mask, value) for k, v in front.items()}, mask=mask)
        code.square().sum().backward()
        codes.append(code)
        grads.append(_grads(mfn))
    for code, grad in zip(codes[1:], grads[1:], strict=True):
        assert_close(code, codes[0], rtol=0, atol=0)
        assert_close(grad, grads[0], rtol=0, atol=0)


def test_mfn_gradients_reach_every_parameter(inputs: dict[str, Tensor]) -> None:
    mfn = _mfn()
    mfn(inputs, LENGTHS).sum().backward()
    for name, p in mfn.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_mfn_errors_name_the_modality(inputs: dict[str, Tensor]) -> None:
    mfn = _mfn()
    with pytest.raises(
        ValueError, match=r"MemoryFusionEncoder: input modalities: unknown \['text'\]"
    ):
        mfn({**inputs, "text": inputs["audio"]})
    with pytest.raises(ValueError, match=r"input modalities: missing \['video'\]"):
        mfn({"audio": inputs["audio"]})
    with pytest.raises(ValueError, match=r"modality 'video'.*\(B, T, 4\), got \(5, 7, 3\)"):
        mfn({"audio": inputs["audio"], "video": inputs["audio"]})
    with pytest.raises(ValueError, match=r"modality 'video': \(B, T\) = \(5, 6\) differs"):
        mfn({"audio": inputs["audio"], "video": inputs["video"][:, :6]})
    with pytest.raises(ValueError, match=r"modality 'video': \(B, T\) = \(4, 7\) differs"):
        mfn({"audio": inputs["audio"], "video": inputs["video"][:4]})
    with pytest.raises(ValueError, match=r"lengths modalities: missing \['video'\]"):
        mfn(inputs, {"audio": LENGTHS})
    with pytest.raises(ValueError, match=r"modality 'audio': lengths must lie in \[1, T\]"):
        mfn(inputs, {"audio": LENGTHS * 2, "video": LENGTHS})
    with pytest.raises(ValueError, match=r"hidden_size: missing \['video'\]"):
        MemoryFusionEncoder(SIZES, {"audio": 3}, 4, 2)
    with pytest.raises(ValueError, match="MemoryFusionEncoder: input_sizes: at least one modality"):
        MemoryFusionEncoder({}, 3, 4, 2)


@pytest.mark.parametrize(
    ("cast", "match"),
    [
        (
            lambda t: t.double(),
            r"modality 'video': sequence has dtype torch.float64 \(shape \(5, 7, 4\)\), "
            r"expected torch.float32 \(the dtype of MemoryFusionEncoder's parameters\)",
        ),
        (
            lambda t: t.long(),
            r"modality 'video': sequence must be floating point, got torch.int64 .* "
            r"expected torch.float32",
        ),
        (
            lambda t: t.to("meta"),
            r"modality 'video': sequence is on meta, MemoryFusionEncoder's parameters on cpu",
        ),
    ],
    ids=["float64", "int64", "device"],
)
def test_mfn_dtype_and_device_errors_name_the_modality(
    inputs: dict[str, Tensor], cast: Callable[[Tensor], Tensor], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        _mfn()({**inputs, "video": cast(inputs["video"])})


def test_mfn_checkpoint_of_other_modalities_is_refused() -> None:
    source = MemoryFusionEncoder({"audio": 3, "text": 4}, 5, 6, 3)
    target = MemoryFusionEncoder({"audio": 3, "video": 4}, 5, 6, 3)
    with pytest.raises(ValueError, match=r"MemoryFusionEncoder: the checkpoint was saved for"):
        target.load_state_dict(source.state_dict())
    wider = MemoryFusionEncoder({"audio": 3, "video": 4}, {"audio": 5, "video": 6}, 6, 3)
    with pytest.raises(ValueError, match=r"'hidden_sizes': \{'audio': 5, 'video': 6\}"):
        target.load_state_dict(wider.state_dict())


def test_mfn_of_an_empty_batch_is_an_empty_code(inputs: dict[str, Tensor]) -> None:
    empty = {k: v[:0] for k, v in inputs.items()}
    code = _mfn()(empty, torch.zeros(0, dtype=torch.long))
    assert code.shape == (0, 3)


# -------------------------------------------------------------------- SequenceDecoder


def _factors(private_size: int, shared_size: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, private_size, generator=gen), torch.randn(B, shared_size, generator=gen)


def test_decoder_every_step_feed_equals_plain_rnn_on_the_joined_factors() -> None:
    torch.manual_seed(7)
    dec = SequenceDecoder(3, 2, 3, hidden_size=6)
    private, shared = _factors(3, 2, 0)
    joined = torch.cat([private, shared], 1)  # the order of the MFM: [F_a_m, F_y]
    hidden, _ = dec.rnn(joined[:, None].repeat(1, T, 1))
    assert_close(dec(private, shared, steps=T), dec.to_output(hidden))


def test_decoder_hidden_feed_equals_the_reference_loop() -> None:
    """The reference decoder: cat[F_a, F_y] at step 0, then its own hidden state."""
    torch.manual_seed(8)
    dec = SequenceDecoder(4, 2, 3, feed="hidden")
    assert dec.rnn.hidden_size == 6  # the reference's hidden size: the joined input's
    cell = nn.LSTMCell(6, 6)
    cell.load_state_dict({k[:-3]: v for k, v in dec.rnn.state_dict().items()})
    private, shared = _factors(4, 2, 1)
    h, c, step_input, outs = (
        torch.zeros(B, 6),
        torch.zeros(B, 6),
        torch.cat([private, shared], 1),
        [],
    )
    for _ in range(T):
        h, c = cell(step_input, (h, c))
        outs.append(dec.to_output(h))
        step_input = h
    assert_close(dec(private, shared, steps=T), torch.stack(outs, 1))


@pytest.mark.parametrize("feed", ["every", "first", "hidden"])
def test_decoder_lengths_zero_padding_and_layouts(feed: str) -> None:
    torch.manual_seed(9)
    dec = SequenceDecoder(4, 2, 3, cell="gru", feed=feed)  # type: ignore[arg-type]
    private, shared = _factors(4, 2, 2)
    full = dec(private, shared, steps=T)
    end = dec(private, shared, steps=T, lengths=LENGTHS)
    mask = lengths_to_mask(LENGTHS, T)
    assert_close(end, full * mask[:, :, None])  # causal: valid steps equal the full run
    assert_close(dec(private, shared, mask=mask), end)
    front = dec(private, shared, steps=T, lengths=LENGTHS, layout="front")
    assert_close(front, _front_pad(end, LENGTHS))
    assert_close(dec(private, shared, mask=lengths_to_mask(LENGTHS, T, layout="front")), front)


def test_decoder_errors() -> None:
    dec = SequenceDecoder(4, 2, 3, hidden_size=6)
    private, shared = _factors(4, 2, 3)
    with pytest.raises(ValueError, match=r"private factor of shape \(B, 4\), got \(5, 5\)"):
        dec(torch.randn(B, 5), shared, steps=T)
    with pytest.raises(ValueError, match=r"shared factor of shape \(5, 2\), got \(4, 2\)"):
        dec(private, shared[:4], steps=T)
    with pytest.raises(ValueError, match="pass steps"):
        dec(private, shared, lengths=LENGTHS)
    with pytest.raises(ValueError, match="steps is 6 but the mask has 7"):
        dec(private, shared, steps=6, mask=torch.ones(B, T, dtype=torch.bool))
    with pytest.raises(
        ValueError, match=r"hidden_size \(6\) must equal private_size \+ shared_size \(5\)"
    ):
        SequenceDecoder(3, 2, 3, hidden_size=6, feed="hidden")
    with pytest.raises(
        ValueError,
        match=r"SequenceDecoder: shared factor has dtype torch.float64 .* expected torch.float32",
    ):
        dec(private, shared.double(), steps=T)
    with pytest.raises(
        ValueError, match=r"SequenceDecoder: private factor must be floating point, got torch.int64"
    ):
        dec(private.long(), shared, steps=T)
    with pytest.raises(
        ValueError, match=r"private factor is on meta, SequenceDecoder's parameters on cpu"
    ):
        dec(private.to("meta"), shared, steps=T)


# --------------------------------------------------------------------- composition


def _family() -> tuple[SequenceEncoder, MemoryFusionEncoder, SequenceDecoder]:
    torch.manual_seed(12)
    return SequenceEncoder(3, 8, 4), _mfn(), SequenceDecoder(4, 3, 3, hidden_size=8)


def _run_family(
    modules: tuple[SequenceEncoder, MemoryFusionEncoder, SequenceDecoder],
    inputs: dict[str, Tensor],
    mask: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    enc, mfn, dec = modules
    z_a = enc(inputs["audio"], mask=mask)
    z_y = mfn(inputs, mask=mask)
    x_hat = dec(z_a, z_y, mask=mask)
    return z_a, z_y, reconstruction_loss({"audio": x_hat}, {"audio": inputs["audio"]}, mask=mask)


def test_state_dict_round_trip_gives_identical_outputs(inputs: dict[str, Tensor]) -> None:
    mask = lengths_to_mask(LENGTHS, T, layout="front")
    first = _family()
    torch.manual_seed(99)
    second = (SequenceEncoder(3, 8, 4), _mfn(), SequenceDecoder(4, 3, 3, hidden_size=8))
    for src, dst in zip(first, second, strict=True):
        buffer = io.BytesIO()
        torch.save(src.state_dict(), buffer)
        buffer.seek(0)
        dst.load_state_dict(torch.load(buffer))
    for a, b in zip(
        _run_family(first, inputs, mask), _run_family(second, inputs, mask), strict=True
    ):
        assert_close(a, b, rtol=0, atol=0)


def test_family_runs_under_cpu_bf16_autocast(inputs: dict[str, Tensor]) -> None:
    mask = lengths_to_mask(LENGTHS, T, layout="front")
    modules = _family()
    expected = _run_family(modules, inputs, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = _run_family(modules, inputs, mask)
    assert got[2].dtype == torch.float32  # the loss is summed in float32
    for a, b in zip(got, expected, strict=True):
        assert torch.isfinite(a).all()
        assert_close(a.float(), b, rtol=0.1, atol=0.05)
    got[2].backward()


def test_family_runs_under_torch_compile(inputs: dict[str, Tensor]) -> None:
    torch._dynamo.reset()
    mask = lengths_to_mask(LENGTHS, T, layout="front")
    modules = _family()
    expected = _run_family(modules, inputs, mask)
    compiled = torch.compile(_run_family, backend="eager")
    got = compiled(modules, inputs, mask)
    for a, b in zip(got, expected, strict=True):
        assert_close(a, b)


# ------------------------------------------------------------------ real MFN h5 data


def test_real_pom_sequences_are_front_padded_and_encoding_ignores_padding(
    mfn_sentiment: Callable[[str], Path],
) -> None:
    import h5py  # the mfn_sentiment fixture skips when it is not installed

    pom = mfn_sentiment("pom")
    seqs = {}
    for name in ("audio", "video"):
        with h5py.File(pom / f"{name}_train.h5", "r") as f:
            seqs[name] = torch.from_numpy(f["d1"][:24]).float()
    mask = infer_padding_mask(seqs, layout="front")
    lengths = mask.sum(1)
    assert (lengths >= 1).all()
    assert (lengths < seqs["audio"].shape[1]).any()
    assert (mask == lengths_to_mask(lengths, mask.shape[1], layout="front")).all()
    for seq in seqs.values():
        assert (seq[~mask] == 0).all()

    torch.manual_seed(13)
    enc = SequenceEncoder(43, 16, 8)
    mfn = MemoryFusionEncoder({"audio": 43, "video": 41}, 8, 8, 8)
    poisoned = {k: _fill_padding(v, mask, float("nan")) for k, v in seqs.items()}
    end = {
        k: torch.stack([row.roll(int(n), 0) for row, n in zip(v, lengths, strict=True)])
        for k, v in seqs.items()
    }
    z_a, z_y = enc(seqs["audio"], mask=mask), mfn(seqs, mask=mask)
    assert_close(enc(poisoned["audio"], mask=mask), z_a, rtol=0, atol=0)
    assert_close(mfn(poisoned, mask=mask), z_y, rtol=0, atol=0)
    assert_close(enc(end["audio"], lengths), z_a)
    assert_close(mfn(end, lengths), z_y)
