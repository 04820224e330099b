import functools
import math

import pytest
import torch
from torch import Tensor, nn

from factorkit import FactorizedLatents, ImageDecoder, ModalityDecoders, VectorDecoder
from factorkit.interpret import decoder_jacobian_norms, factor_contributions

D64 = torch.float64


def naive_norms(decoder: nn.Module, fa: Tensor, fy: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample Frobenius norms from full per-sample Jacobians (one sample at a time)."""
    shared, private = [], []
    for b in range(fa.shape[0]):
        a_b, y_b = fa[b : b + 1], fy[b : b + 1]
        jy = torch.autograd.functional.jacobian(lambda y, a_b=a_b: decoder(a_b, y[None]), fy[b])
        ja = torch.autograd.functional.jacobian(lambda a, y_b=y_b: decoder(a[None], y_b), fa[b])
        shared.append(jy.norm())
        private.append(ja.norm())
    return torch.stack(shared), torch.stack(private)


class SequenceDecoder(nn.Module):
    """A tiny LSTM decoder (B, Fa), (B, Fy) -> (B, T, D), the factors fed at every step."""

    def __init__(self, fa: int, fy: int, steps: int, out: int) -> None:
        super().__init__()
        self.steps = steps
        self.rnn = nn.LSTM(fa + fy, 5, batch_first=True)
        self.out = nn.Linear(5, out)

    def forward(self, private: Tensor, shared: Tensor) -> Tensor:
        z = torch.cat([private, shared], 1)[:, None].expand(-1, self.steps, -1)
        out: Tensor = self.out(self.rnn(z)[0])
        return out


class Linear2(nn.Module):
    """X = A F_a + B F_y: the Jacobians are A and B for every sample."""

    def __init__(self, a: Tensor, b: Tensor) -> None:
        super().__init__()
        self.a, self.b = a, b

    def forward(self, private: Tensor, shared: Tensor) -> Tensor:
        return private @ self.a.T + shared @ self.b.T


def factors(batch: int, fy: int, private: dict[str, int]) -> FactorizedLatents:
    return FactorizedLatents(
        torch.randn(batch, fy, dtype=D64),
        {m: torch.randn(batch, k, dtype=D64) for m, k in private.items()},
    )


def test_norms_match_explicit_per_sample_jacobians() -> None:
    dec = VectorDecoder(3, 4, 6, hidden_sizes=[8]).double().eval()
    fa, fy = torch.randn(7, 3, dtype=D64), torch.randn(7, 4, dtype=D64)
    norms = decoder_jacobian_norms(dec, fa, fy)
    ref_y, ref_a = naive_norms(dec, fa, fy)
    torch.testing.assert_close(norms.shared, ref_y, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(norms.private, ref_a, rtol=1e-12, atol=1e-14)
    coord = decoder_jacobian_norms(dec, fa, fy, per_coordinate=True)
    torch.testing.assert_close(coord.shared, ref_y / 2.0, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(coord.private, ref_a / math.sqrt(3.0), rtol=1e-12, atol=1e-14)


def test_norms_match_central_finite_differences() -> None:
    dec = VectorDecoder(2, 3, 5, hidden_sizes=[6]).double().eval()
    fa, fy = torch.randn(4, 2, dtype=D64), torch.randn(4, 3, dtype=D64)
    eps = 1e-6
    cols_y = [
        (dec(fa, fy + eps * e) - dec(fa, fy - eps * e)) / (2 * eps) for e in torch.eye(3, dtype=D64)
    ]
    cols_a = [
        (dec(fa + eps * e, fy) - dec(fa - eps * e, fy)) / (2 * eps) for e in torch.eye(2, dtype=D64)
    ]
    fd_y = torch.stack(cols_y, -1).flatten(1).norm(dim=1)
    fd_a = torch.stack(cols_a, -1).flatten(1).norm(dim=1)
    norms = decoder_jacobian_norms(dec, fa, fy)
    torch.testing.assert_close(norms.shared, fd_y.detach(), rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(norms.private, fd_a.detach(), rtol=1e-7, atol=1e-9)


def test_linear_decoder_closed_form() -> None:
    a, b = torch.randn(5, 2, dtype=D64), torch.randn(5, 3, dtype=D64)
    f = factors(6, 3, {"v": 2})
    c = factor_contributions({"v": Linear2(a, b)}, [f])
    torch.testing.assert_close(c.shared["v"], b.norm())
    torch.testing.assert_close(c.private["v"], a.norm())
    torch.testing.assert_close(c.ratio["v"], b.norm() / a.norm())
    torch.testing.assert_close(c.share["v"], b.norm() / (a.norm() + b.norm()))
    assert c.counts["v"].item() == 6 and c.shared["v"].shape == ()


def test_image_decoder_matches_explicit_jacobian() -> None:
    dec = ImageDecoder(2, 3, (1, 6, 5), channels=(4,)).double().eval()
    fa, fy = torch.randn(3, 2, dtype=D64), torch.randn(3, 3, dtype=D64)
    norms = decoder_jacobian_norms(dec, fa, fy)
    ref_y, ref_a = naive_norms(dec, fa, fy)
    torch.testing.assert_close(norms.shared, ref_y, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(norms.private, ref_a, rtol=1e-10, atol=1e-12)


def test_ignored_factor_contributes_exactly_zero() -> None:
    only_shared = {"v": lambda private, shared: torch.tanh(shared @ torch.ones(3, 4, dtype=D64))}
    c = factor_contributions(only_shared, [factors(5, 3, {"v": 2})])
    assert c.private["v"].item() == 0.0 and c.shared["v"].item() > 0.0
    assert c.share["v"].item() == 1.0 and c.ratio["v"].item() == math.inf
    # Used, but with a zero multiplier: still exactly zero, not an unused-input artefact.
    only_private = {"v": lambda private, shared: torch.sin(private) + 0.0 * shared.sum(1, True)}
    c = factor_contributions(only_private, [factors(5, 3, {"v": 2})])
    assert c.shared["v"].item() == 0.0 and c.private["v"].item() > 0.0
    assert c.share["v"].item() == 0.0 and c.ratio["v"].item() == 0.0


def test_batching_does_not_change_the_result() -> None:
    decs = (
        ModalityDecoders(
            {"a": VectorDecoder(2, 4, 6, hidden_sizes=[5]), "b": VectorDecoder(3, 4, 2)}
        )
        .double()
        .eval()
    )
    f = factors(11, 4, {"a": 2, "b": 3})
    whole = factor_contributions(decs, [f])
    parts = [slice(0, 4), slice(4, 5), slice(5, 11)]
    split = factor_contributions(decs, [f.map(lambda _, z, s=s: z[s]) for s in parts])
    for field in ("shared", "private", "ratio", "share"):
        for m in ("a", "b"):
            torch.testing.assert_close(getattr(split, field)[m], getattr(whole, field)[m])
    assert split.counts == whole.counts
    fa, fy = f.private["a"], f.shared
    ref_y, ref_a = naive_norms(functools.partial(decs.decode, "a"), fa, fy)
    torch.testing.assert_close(whole.shared["a"], ref_y.mean())
    torch.testing.assert_close(whole.private["a"], ref_a.mean())


def test_factorize_callable_reads_inputs_and_keeps_no_graph() -> None:
    encoder = nn.Linear(4, 5).double()
    decs = {"v": VectorDecoder(2, 3, 4).double().eval()}

    def factorize(x: Tensor) -> FactorizedLatents:
        h = encoder(x)
        return FactorizedLatents(h[:, :3], {"v": h[:, 3:]})

    inputs = [torch.randn(3, 4, dtype=D64), torch.randn(2, 4, dtype=D64)]
    c = factor_contributions(decs, inputs, factorize=factorize)
    with torch.no_grad():
        direct = factor_contributions(decs, [factorize(x) for x in inputs])
    torch.testing.assert_close(c.shared["v"], direct.shared["v"])
    torch.testing.assert_close(c.private["v"], direct.private["v"])
    assert not c.shared["v"].requires_grad and c.shared["v"].dtype == D64
    assert encoder.weight.grad is None and decs["v"].net[0].weight.grad is None


def test_absent_samples_are_left_out() -> None:
    decs = {
        "a": VectorDecoder(2, 3, 4).double().eval(),
        "b": VectorDecoder(2, 3, 4).double().eval(),
    }
    f = factors(6, 3, {"a": 2, "b": 2})
    present = {
        "a": torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool),
        "b": torch.ones(6, dtype=torch.bool),
    }
    masked = factor_contributions(decs, [FactorizedLatents(f.shared, f.private, present)])
    keep = present["a"]
    kept = factor_contributions(decs, [f.map(lambda _, z: z[keep])])
    torch.testing.assert_close(masked.shared["a"], kept.shared["a"])
    torch.testing.assert_close(masked.private["a"], kept.private["a"])
    assert masked.counts["a"].item() == 4 and masked.counts["b"].item() == 6


def test_per_step_matches_explicit_jacobian_and_honours_masks() -> None:
    dec = SequenceDecoder(2, 3, steps=4, out=3).double().eval()
    fa, fy = torch.randn(5, 2, dtype=D64), torch.randn(5, 3, dtype=D64)
    per_sample = decoder_jacobian_norms(dec, fa, fy, per_step=True)
    assert per_sample.shared.shape == (5, 4)
    for b in range(5):
        jy = torch.autograd.functional.jacobian(
            lambda y, b=b: dec(fa[b : b + 1], y[None])[0], fy[b]
        )
        ja = torch.autograd.functional.jacobian(
            lambda a, b=b: dec(a[None], fy[b : b + 1])[0], fa[b]
        )
        torch.testing.assert_close(per_sample.shared[b], jy.flatten(1).norm(dim=1))
        torch.testing.assert_close(per_sample.private[b], ja.flatten(1).norm(dim=1))

    lengths = torch.tensor([4, 2, 1, 3, 2])
    mask = torch.arange(4) < lengths[:, None]
    f = FactorizedLatents(fy, {"s": fa})
    by_mask = factor_contributions({"s": dec}, [(f, {"s": mask})], per_step=["s"])
    by_lengths = factor_contributions({"s": dec}, [(f, {"s": lengths})], per_step=["s"])
    expected_y = (per_sample.shared * mask).sum(0) / mask.sum(0)
    expected_a = (per_sample.private * mask).sum(0) / mask.sum(0)
    for c in (by_mask, by_lengths):
        torch.testing.assert_close(c.shared["s"], expected_y)
        torch.testing.assert_close(c.private["s"], expected_a)
        assert c.counts["s"].tolist() == [5, 4, 2, 1]


def test_per_step_lengths_may_differ_between_batches() -> None:
    short = SequenceDecoder(2, 3, 2, 3).double().eval()
    long = SequenceDecoder(2, 3, 4, 3).double().eval()
    long.load_state_dict(short.state_dict())
    f1, f2 = factors(3, 3, {"s": 2}), factors(2, 3, {"s": 2})
    calls = iter([short, long])

    def decoder(private: Tensor, shared: Tensor) -> Tensor:
        return next(calls)(private, shared)

    c = factor_contributions(
        {"s": decoder}, [f1, (f2, {"s": torch.tensor([3, 4])})], per_step=["s"]
    )
    n1 = decoder_jacobian_norms(short, f1.private["s"], f1.shared, per_step=True)
    n2 = decoder_jacobian_norms(long, f2.private["s"], f2.shared, per_step=True)
    assert c.counts["s"].tolist() == [5, 5, 2, 1]
    torch.testing.assert_close(c.shared["s"][:2], torch.cat([n1.shared, n2.shared[:, :2]]).mean(0))
    torch.testing.assert_close(c.shared["s"][3], n2.shared[1, 3])
    empty = factor_contributions(
        {"s": short}, [(f1, {"s": torch.tensor([1, 1, 1])})], per_step=["s"]
    )
    assert empty.counts["s"].tolist() == [3, 0] and math.isnan(empty.shared["s"][1].item())


class Broken(SequenceDecoder):
    def forward(self, private: Tensor, shared: Tensor) -> Tensor:
        raise RuntimeError("decoder failed")


def test_rnn_kernel_flags_are_restored() -> None:
    before = (torch.backends.cudnn.enabled, torch.backends.mkldnn.enabled)
    dec = SequenceDecoder(2, 3, 3, 2).eval()
    decoder_jacobian_norms(dec, torch.randn(2, 2), torch.randn(2, 3), per_step=True)
    assert (torch.backends.cudnn.enabled, torch.backends.mkldnn.enabled) == before
    with pytest.raises(RuntimeError, match="decoder failed"):
        decoder_jacobian_norms(Broken(2, 3, 3, 2), torch.randn(2, 2), torch.randn(2, 3))
    assert (torch.backends.cudnn.enabled, torch.backends.mkldnn.enabled) == before


def test_errors_name_the_problem() -> None:
    dec = {"v": VectorDecoder(2, 3, 4).double()}
    f = factors(3, 3, {"v": 2})
    with pytest.raises(ValueError, match=r"per_step names \['w'\] have no decoder"):
        factor_contributions(dec, [f], per_step=["w"])
    with pytest.raises(ValueError, match=r"step masks given for \['v'\]"):
        factor_contributions(dec, [(f, {"v": torch.ones(3, 2, dtype=torch.bool)})])
    with pytest.raises(ValueError, match=r"modality 'w' has a decoder but no factor"):
        factor_contributions({"w": dec["v"]}, [f])
    with pytest.raises(
        ValueError, match=r"decoder output must have shape \(B, T, ...\) with B = 3"
    ):
        factor_contributions({"v": lambda a, y: a.sum()}, [f], per_step=["v"])
    with pytest.raises(ValueError, match="batches is empty"):
        factor_contributions(dec, [])
    seq = {"s": SequenceDecoder(2, 3, 4, 2).double()}
    fs = factors(3, 3, {"s": 2})
    with pytest.raises(
        ValueError, match=r"modality 's': expected a step mask of shape \(3, 4\), got \(3, 5\)"
    ):
        factor_contributions(seq, [(fs, {"s": torch.ones(3, 5, dtype=torch.bool)})], per_step=["s"])
    with pytest.raises(ValueError, match="integer lengths"):
        factor_contributions(seq, [(fs, {"s": torch.ones(3)})], per_step=["s"])
    with pytest.raises(ValueError, match="each batch must be FactorizedLatents"):
        factor_contributions(dec, [torch.randn(3, 5)])


def test_squared_contributions_of_a_linear_decoder_are_its_weight_energies() -> None:
    """X_hat = F_y W_y + F_a W_a: the squared Jacobian norms are ||W_y||_F^2 and
    ||W_a||_F^2 for every sample, the unsquared ones their square roots."""
    g = torch.Generator().manual_seed(0)
    w_y = torch.randn(6, 4, generator=g, dtype=torch.float64)
    w_a = torch.randn(3, 4, generator=g, dtype=torch.float64) * 0.5
    decoders = {"a": lambda private, shared: shared @ w_y + private @ w_a}
    factors = FactorizedLatents(
        torch.randn(7, 6, generator=g, dtype=torch.float64),
        {"a": torch.randn(7, 3, generator=g, dtype=torch.float64)},
    )
    energy_y, energy_a = float(w_y.square().sum()), float(w_a.square().sum())
    squared = factor_contributions(decoders, [factors], squared=True)
    assert float(squared.shared["a"]) == pytest.approx(energy_y, rel=1e-12)
    assert float(squared.private["a"]) == pytest.approx(energy_a, rel=1e-12)
    assert float(squared.share["a"]) == pytest.approx(energy_y / (energy_y + energy_a))
    plain = factor_contributions(decoders, [factors])
    assert float(plain.shared["a"]) == pytest.approx(energy_y**0.5, rel=1e-12)
    assert float(plain.private["a"]) == pytest.approx(energy_a**0.5, rel=1e-12)


def test_vector_valued_decoder_and_per_coordinate_closed_form() -> None:
    """x = F_a . a + F_y . b (one number per sample): the norms are ||a|| and ||b||."""
    a = torch.tensor([3.0, 4.0], dtype=D64)  # ||a|| = 5
    b = torch.tensor([1.0, 2.0, 2.0], dtype=D64)  # ||b|| = 3
    scalar_out = {"v": lambda private, shared: private @ a + shared @ b}
    f = factors(4, 3, {"v": 2})
    norms = decoder_jacobian_norms(scalar_out["v"], f.private["v"], f.shared)
    assert norms.shared.tolist() == [3.0] * 4 and norms.private.tolist() == [5.0] * 4
    c = factor_contributions(scalar_out, [f, factors(2, 3, {"v": 2})], per_coordinate=True)
    assert c.shared["v"].item() == pytest.approx(3.0 / math.sqrt(3), rel=1e-12)
    assert c.private["v"].item() == pytest.approx(5.0 / math.sqrt(2), rel=1e-12)
    assert c.counts["v"].item() == 6


def test_per_step_with_presence_leaves_absent_samples_out() -> None:
    """(B, T) output x_t = t * (F_a . a + F_y . b), B != T; absent samples are not averaged."""
    a, b = torch.tensor([3.0, 4.0], dtype=D64), torch.tensor([1.0, 2.0, 2.0], dtype=D64)
    steps = torch.arange(1, 6, dtype=D64)  # T = 5

    def dec(private: Tensor, shared: Tensor) -> Tensor:
        return (private @ a + shared @ b)[:, None] * steps

    base = factors(3, 3, {"v": 2})
    present = {"v": torch.tensor([True, False, True])}
    f = FactorizedLatents(base.shared, base.private, present)
    c = factor_contributions({"v": dec}, [f], per_step=["v"])
    assert c.shared["v"].tolist() == pytest.approx((3.0 * steps).tolist(), rel=1e-12)
    assert c.private["v"].tolist() == pytest.approx((5.0 * steps).tolist(), rel=1e-12)
    assert c.counts["v"].tolist() == [2] * 5


def test_factor_and_output_shape_errors() -> None:
    dec = VectorDecoder(2, 3, 4).double()
    with pytest.raises(
        ValueError,
        match=r"^expected factors private \(B, Fa\) and shared \(B, Fy\), got private \(3,\) "
        r"and shared \(3, 3\)$",
    ):
        decoder_jacobian_norms(dec, torch.randn(3, dtype=D64), torch.randn(3, 3, dtype=D64))
    with pytest.raises(ValueError, match=r"got private \(3, 2\) and shared \(3,\)$"):
        decoder_jacobian_norms(dec, torch.randn(3, 2, dtype=D64), torch.randn(3, dtype=D64))
    with pytest.raises(ValueError, match=r"got private \(3, 2\) and shared \(4, 3\)$"):
        decoder_jacobian_norms(dec, torch.randn(3, 2, dtype=D64), torch.randn(4, 3, dtype=D64))
    f = factors(3, 3, {"v": 2})
    with pytest.raises(
        ValueError, match=r"^decoder output must have shape \(B, \.\.\.\) with B = 3, got \(\)$"
    ):
        factor_contributions({"v": lambda p, s: p.sum()}, [f])
    with pytest.raises(ValueError, match=r"^at least one decoder is required$"):
        factor_contributions({}, [f])
    with pytest.raises(ValueError, match=r"^batches is empty: nothing to average$"):
        factor_contributions({"v": dec}, [])
    with pytest.raises(
        ValueError,
        match=r"^each batch must be FactorizedLatents or \(FactorizedLatents, step masks by "
        r"modality\), got tuple$",
    ):
        factor_contributions({"v": dec}, [(f, {}, {})])
    with pytest.raises(ValueError, match=r"modality\), got Tensor$"):
        factor_contributions({"v": dec}, [torch.randn(3, 5)])
