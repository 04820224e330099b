import io
import itertools
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from factorkit import (
    MFM,
    FactorGenerators,
    FactorizedHead,
    FactorizedLatents,
    ModalityDecoders,
    Predictor,
    SurrogateInference,
    SurrogateLoss,
    VectorDecoder,
    complete_latents,
    random_presence,
    reconstruction_loss,
    surrogate_loss,
)

SIZES = {"audio": 6, "text": 5, "video": 4}
PRIVATE = {"audio": 2, "text": 3, "video": 1}
MODES = ["shared", "experts", "per_pattern"]
NAMES = sorted(SIZES)


def make(mode: str, **kwargs: object) -> SurrogateInference:
    return SurrogateInference(
        SIZES, shared_size=3, private_size=PRIVATE, mode=mode, hidden_size=16, **kwargs
    )


def features(batch: int) -> dict[str, torch.Tensor]:
    return {m: torch.randn(batch, d) for m, d in SIZES.items()}


def every_pattern(repeat: int = 1) -> dict[str, torch.Tensor]:
    """All 7 non-empty patterns of 3 modalities (the full one included), ``repeat`` times."""
    rows = [bits for bits in itertools.product([False, True], repeat=3) if any(bits)] * repeat
    table = torch.tensor(rows)
    return {m: table[:, i] for i, m in enumerate(NAMES)}


def poison(x: dict[str, torch.Tensor], present: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {m: torch.where(present[m][:, None], x[m], float("nan")) for m in x}


@pytest.mark.parametrize("mode", MODES)
def test_absent_input_never_reaches_any_output_or_gradient(mode: str) -> None:
    sur = make(mode)
    present = every_pattern(2)
    x = features(14)
    z = sur(x, present)
    leaves = {m: t.requires_grad_() for m, t in poison(x, present).items()}
    z_nan = sur(leaves, present)
    assert z_nan == z
    assert all(torch.isfinite(t).all() for _, t in z_nan.items())
    sum(t.sum() for _, t in z_nan.items()).backward()
    for m, leaf in leaves.items():
        assert leaf.grad is not None
        assert torch.equal(leaf.grad[~present[m]], torch.zeros_like(leaf.grad[~present[m]])), m


@pytest.mark.parametrize("mode", MODES)
def test_every_pattern_in_one_batch_matches_each_sample_alone(mode: str) -> None:
    sur = make(mode)
    present = every_pattern()
    x = features(7)
    z = sur(x, present)
    assert z.present is not None
    for m in NAMES:
        # The output marks what was inferred: exactly the missing modalities.
        assert torch.equal(z.present[m], ~present[m])
        assert torch.equal(z.private[m][present[m]], torch.zeros_like(z.private[m][present[m]]))
        assert (z.private[m][~present[m]].abs().sum(dim=1) > 0).all()
    complete = torch.stack(list(present.values())).all(dim=0)
    assert torch.equal(z.shared[complete], torch.zeros(1, 3))
    assert (z.shared[~complete].abs().sum(dim=1) > 0).all()
    for i in range(7):
        zi = sur({m: x[m][i : i + 1] for m in NAMES}, {m: present[m][i : i + 1] for m in NAMES})
        torch.testing.assert_close(zi.shared, z.shared[i : i + 1])
        for m in NAMES:
            torch.testing.assert_close(zi.private[m], z.private[m][i : i + 1])


def test_per_pattern_routes_each_sample_to_its_subsets_network() -> None:
    sur = make("per_pattern")
    present = every_pattern()
    x = features(7)
    z = sur(x, present)
    assert len(sur.network.encoders) == 6  # 2^3 - 2 observed subsets
    for i in range(6):  # row 6 is the full pattern: nothing to infer
        observed = [m for m in NAMES if present[m][i]]
        missing = [m for m in NAMES if not present[m][i]]
        encoder = sur.network.encoders["+".join(observed)]
        out = encoder(torch.cat([x[m][i : i + 1] for m in observed], dim=1))
        pieces = out.split([3, *(PRIVATE[m] for m in missing)], dim=1)
        torch.testing.assert_close(z.shared[i : i + 1], pieces[0])
        for m, piece in zip(missing, pieces[1:], strict=True):
            torch.testing.assert_close(z.private[m][i : i + 1], piece)


def test_shared_mode_matches_a_naive_float64_recomputation() -> None:
    sur = make("shared").double()
    present = every_pattern()
    x = {m: t.double() for m, t in features(7).items()}
    z = sur(x, present)
    net = sur.network
    for i in range(6):
        observed = [m for m in NAMES if present[m][i]]
        pooled = sum(net.embeddings[m](x[m][i]) for m in observed) / len(observed)
        bits = torch.tensor([float(present[m][i]) for m in NAMES], dtype=torch.float64)
        out = net.trunk(pooled + net.pattern_embedding(bits))
        torch.testing.assert_close(z.shared[i], out[:3])
        offset = 3
        for m in NAMES:
            if not present[m][i]:
                torch.testing.assert_close(z.private[m][i], out[offset : offset + PRIVATE[m]])
            offset += PRIVATE[m]


def test_experts_mode_is_a_precision_weighted_mean_of_the_observed_experts() -> None:
    sur = make("experts").double()
    present = every_pattern()
    x = {m: t.double() for m, t in features(7).items()}
    z = sur(x, present)
    experts = sur.network.experts
    for i in range(6):
        observed = [m for m in NAMES if present[m][i]]
        proposals = {m: experts[m](x[m][i]) for m in observed}
        width = proposals[observed[0]].shape[0] // 2
        precision = {m: p[width:].exp() for m, p in proposals.items()}
        total = sum(precision.values())
        out = sum(precision[m] * proposals[m][:width] for m in observed) / total
        assert isinstance(out, torch.Tensor)
        torch.testing.assert_close(z.shared[i], out[:3])
        offset = 3
        for m in NAMES:
            if not present[m][i]:
                torch.testing.assert_close(z.private[m][i], out[offset : offset + PRIVATE[m]])
            offset += PRIVATE[m]
    # One observed modality: its expert's proposal alone, whatever its precision.
    alone = {m: torch.tensor([m == "text"]) for m in NAMES}
    single = sur({m: t[:1] for m, t in x.items()}, alone)
    torch.testing.assert_close(single.shared[0], experts["text"](x["text"][0])[:3])


@pytest.mark.parametrize("mode", MODES)
def test_sample_with_every_modality_missing_is_an_error(mode: str) -> None:
    present = {m: torch.tensor([True, False, True]) for m in NAMES}
    with pytest.raises(ValueError, match=r"samples \[1\] have every modality missing"):
        make(mode)(features(3), present)


def test_construction_errors() -> None:
    with pytest.raises(ValueError, match="at most 4 modalities, got 5"):
        SurrogateInference(
            dict.fromkeys("abcde", 2), shared_size=2, private_size=2, mode="per_pattern"
        )
    with pytest.raises(ValueError, match="at least two modalities"):
        SurrogateInference({"a": 2}, shared_size=2, private_size=2)
    with pytest.raises(ValueError, match="mode must be"):
        SurrogateInference(SIZES, shared_size=2, private_size=2, mode="pattern")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"modality 'text': expected features of shape \(B, 5\)"):
        make("shared")(dict(features(2), text=torch.randn(2, 4)), every_pattern())


@pytest.mark.parametrize("mode", MODES)
def test_base_codes_are_added_on_the_inferred_rows_only(mode: str) -> None:
    sur, present, x = make(mode), every_pattern(2), features(14)
    plain = sur(x, present)
    base = FactorizedLatents(
        torch.randn(14, 3), {m: torch.randn(14, PRIVATE[m]) for m in NAMES}, present
    )
    refined = sur(x, present, base=base)
    assert refined.present is not None and plain.present is not None
    assert all(torch.equal(refined.present[m], plain.present[m]) for m in NAMES)
    for (name, z), (_, z0), (_, b) in zip(
        refined.items(), plain.items(), base.items(), strict=True
    ):
        rows = plain.mask(name)
        assert rows is not None
        torch.testing.assert_close(z[rows], z0[rows] + b[rows], rtol=0, atol=0)
        assert torch.equal(z[~rows], torch.zeros_like(z[~rows]))
    # Rows that are not inferred never see the base codes, NaN included.
    nan_base = base.map(
        lambda name, b: torch.where(plain.mask(name)[:, None], b, float("nan"))  # type: ignore[index]
    )
    assert sur(x, present, base=nan_base) == refined


def test_base_codes_of_other_modalities_or_shapes_are_errors() -> None:
    sur, present, x = make("experts"), every_pattern(), features(7)
    other = FactorizedLatents(torch.zeros(7, 3), {"a": torch.zeros(7, 2), "b": torch.zeros(7, 2)})
    with pytest.raises(ValueError, match=r"base codes have modalities \['a', 'b'\]"):
        sur(x, present, base=other)
    short = FactorizedLatents(torch.zeros(7, 3), {m: torch.zeros(7, 1) for m in NAMES})
    with pytest.raises(
        ValueError, match=r"base code 'audio': expected shape \(7, 2\), got \(7, 1\)"
    ):
        sur(x, present, base=short)


def test_for_head_matches_the_heads_sizes_and_four_modalities_per_pattern() -> None:
    head = FactorizedHead({"a": 3, "b": 2, "c": 4, "d": 1}, shared_size=5, private_size=2)
    sur = SurrogateInference.for_head(head, mode="per_pattern", hidden_size=8)
    assert len(sur.network.encoders) == 14
    x = {m: torch.randn(15, d) for m, d in head.input_sizes.items()}
    table = torch.tensor(list(itertools.product([False, True], repeat=4))[1:])
    present = {m: table[:, i] for i, m in enumerate("abcd")}
    z, z_head = sur(x, present), head(x, present)
    assert all(a.shape == b.shape for (_, a), (_, b) in zip(z.items(), z_head.items(), strict=True))


def test_complete_latents_takes_observed_slots_from_the_head() -> None:
    sur = make("shared")
    head = FactorizedHead(SIZES, shared_size=3, private_size=PRIVATE)
    present = every_pattern()
    x = features(7)
    z_head, z_sur = head(x, present), sur(x, present)
    z = complete_latents(z_head, z_sur)
    assert z.present is None
    for m in NAMES:
        expected = torch.where(present[m][:, None], z_head.private[m], z_sur.private[m])
        assert torch.equal(z.private[m], expected)
    assert torch.equal(z.shared[6], z_head.shared[6])
    assert torch.equal(z.shared[:6], z_sur.shared[:6])
    # Full-data codes with the simulated mask give the same result (one head pass).
    assert complete_latents(head(x), z_sur, present) == z


def naive_surrogate_loss(
    sur: FactorizedLatents, target: FactorizedLatents, observed: dict[str, torch.Tensor]
) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for name, code in sur.items():
        rows = (
            [i for i in range(code.shape[0]) if not all(observed[m][i] for m in NAMES)]
            if name == "shared"
            else [i for i in range(code.shape[0]) if not observed[name][i]]
        )
        ref = dict(target.items())[name].double()
        if rows:
            total += sum(((code[i].double() - ref[i]) ** 2).mean() for i in rows) / len(rows)
    return total


def test_surrogate_loss_matches_a_naive_float64_reference() -> None:
    present = every_pattern(3)
    z_sur = make("per_pattern")(features(21), present)
    head = FactorizedHead(SIZES, shared_size=3, private_size=PRIVATE)
    target = head(features(21))
    loss, terms = surrogate_loss(z_sur, target, per_latent=True)
    torch.testing.assert_close(loss.double(), naive_surrogate_loss(z_sur, target, present))
    weighted = surrogate_loss(z_sur, target, weights={"shared": 2.0, "video": 0.5})
    expected = 2.0 * terms["shared"] + terms["audio"] + terms["text"] + 0.5 * terms["video"]
    torch.testing.assert_close(weighted, expected)
    assert torch.equal(SurrogateLoss()(z_sur, target), loss)


def test_surrogate_loss_drops_rows_the_target_did_not_see() -> None:
    # Training data with "video" missing in sample 0: its surrogate Z_a_video has no target.
    present = {m: torch.tensor([False, True]) for m in NAMES}
    present["audio"] = torch.tensor([True, False])
    z_sur = make("shared")(features(2), present)
    target_seen = {m: torch.ones(2, dtype=torch.bool) for m in NAMES}
    target_seen["video"] = torch.tensor([False, True])
    head = FactorizedHead(SIZES, shared_size=3, private_size=PRIVATE)
    target = head(features(2), target_seen)
    _, terms = surrogate_loss(z_sur, target, per_latent=True)
    assert terms["video"] == 0.0
    expected = (z_sur.private["text"][0] - target.private["text"][0]).square().mean()
    torch.testing.assert_close(terms["text"], expected)


def test_surrogate_loss_with_nothing_missing_is_zero_without_nan() -> None:
    z_sur = make("shared")(features(4))
    target = FactorizedHead(SIZES, shared_size=3, private_size=PRIVATE)(features(4))
    loss = surrogate_loss(z_sur, target)
    assert loss == 0.0
    assert not torch.isnan(loss)


@pytest.mark.parametrize("detach", [True, False])
def test_detach_target_controls_the_gradient_into_the_target(detach: bool) -> None:
    head = FactorizedHead(SIZES, shared_size=3, private_size=PRIVATE)
    x = features(7)
    z_sur = make("shared")(x, every_pattern())
    surrogate_loss(z_sur, head(x), detach_target=detach).backward()
    grads = [p.grad for p in head.parameters()]
    if detach:
        assert all(g is None for g in grads)
    else:
        assert all(g is not None and g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("mode", MODES)
def test_gradients_reach_every_parameter(mode: str) -> None:
    sur = make(mode)
    target = FactorizedHead(SIZES, shared_size=3, private_size=PRIVATE)(features(14))
    surrogate_loss(sur(features(14), every_pattern(2)), target).backward()
    for name, p in sur.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("mode", MODES)
def test_state_dict_round_trip_is_bit_identical(mode: str) -> None:
    sur = make(mode)
    buffer = io.BytesIO()
    torch.save(sur.state_dict(), buffer)
    torch.manual_seed(1)
    fresh = make(mode)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x, present = features(7), every_pattern()
    assert fresh(x, present) == sur(x, present)


def test_shared_mode_compiles_without_graph_breaks() -> None:
    sur = make("shared")
    compiled = torch.compile(sur, fullgraph=True)
    x, present = features(7), every_pattern()
    expected, got = sur(x, present), compiled(x, present)
    for (_, a), (_, b) in zip(expected.items(), got.items(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert got.present is not None and expected.present is not None
    assert all(torch.equal(got.present[m], expected.present[m]) for m in NAMES)


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Tiny networks gain nothing from threads; on a shared 2-core machine they lose 10x.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("mode", MODES)
def test_learns_the_held_out_codes_of_a_synthetic_model(mode: str) -> None:
    # Three views of a 3-dim source; the "head" codes are fixed linear maps of the views,
    # so a missing view's code is predictable from the others, but not from nothing.
    sources = {m: torch.randn(d, 3) for m, d in SIZES.items()}
    to_shared = {m: torch.randn(3, d) / d**0.5 for m, d in SIZES.items()}
    to_private = {m: torch.randn(PRIVATE[m], d) / d**0.5 for m, d in SIZES.items()}

    def batch(n: int, gen: torch.Generator) -> tuple[dict[str, torch.Tensor], FactorizedLatents]:
        s = torch.randn(n, 3, generator=gen)
        x = {
            m: s @ a.T + 0.1 * torch.randn(n, a.shape[0], generator=gen) for m, a in sources.items()
        }
        shared = sum(x[m] @ to_shared[m].T for m in NAMES)
        assert isinstance(shared, torch.Tensor)
        return x, FactorizedLatents(shared, {m: x[m] @ to_private[m].T for m in NAMES})

    sur = SurrogateInference(SIZES, shared_size=3, private_size=PRIVATE, mode=mode, hidden_size=32)
    opt = torch.optim.Adam(sur.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        x, z = batch(128, gen)
        loss = surrogate_loss(sur(x, random_presence(NAMES, 128, 0.5, generator=gen)), z)
        opt.zero_grad()
        loss.backward()
        opt.step()
    test_gen = torch.Generator().manual_seed(2)
    x, z = batch(2000, test_gen)
    with torch.no_grad():
        z_sur = sur(x, random_presence(NAMES, 2000, 0.5, generator=test_gen))
    _, terms = surrogate_loss(z_sur, z, per_latent=True)
    # The best constant is the (near-zero) mean code: compare with its error.
    mean = z.map(lambda _, t: t.mean(dim=0, keepdim=True).expand_as(t))
    baseline = FactorizedLatents(mean.shared, mean.private, z_sur.present)
    _, base = surrogate_loss(baseline, z, per_latent=True)
    for name, term in terms.items():
        assert term < 0.05 * base[name], (name, term.item(), base[name].item())


@pytest.mark.parametrize("mode", MODES)
def test_autocast_bf16_on_cpu(mode: str) -> None:
    sur = make(mode)
    x, present = features(7), every_pattern()
    reference = sur(x, present)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = sur(x, present)
    for (_, a), (_, b) in zip(reference.items(), low.items(), strict=True):
        assert torch.isfinite(b).all()
        torch.testing.assert_close(b.float(), a, rtol=0.1, atol=0.05)


def tiny_mfm() -> MFM:
    head = FactorizedHead(SIZES, shared_size=3, private_size=PRIVATE)
    decoders = ModalityDecoders({m: VectorDecoder(8, 8, d) for m, d in SIZES.items()})
    return MFM(head, FactorGenerators.for_head(head, factor_size=8), decoders, Predictor(8, 4))


@pytest.mark.parametrize("frozen", [False, True])
def test_documented_training_recipes_send_gradients_where_they_belong(frozen: bool) -> None:
    mfm, sur = tiny_mfm(), make("shared")
    if frozen:
        mfm.requires_grad_(False)
    x, y = features(14), torch.randint(4, (14,))
    observed = every_pattern(2)
    missing = {m: ~observed[m] for m in observed}
    z = mfm.encode(x)
    z_sur = sur(x, observed)
    out = mfm.decode(complete_latents(z, z_sur, observed))
    assert out.reconstructions is not None
    label = F.cross_entropy(out.prediction, y)
    recon = reconstruction_loss(out.reconstructions, x, missing)
    # Label and reconstruction reach the surrogate through the (possibly frozen) model.
    for term in (label, recon):
        grads = torch.autograd.grad(term, list(sur.parameters()), retain_graph=True)
        assert sum(g.abs().sum() for g in grads) > 0
    (label + recon + surrogate_loss(z_sur, z)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in sur.parameters())
    if frozen:
        assert all(p.grad is None for p in mfm.parameters())
        return
    for name, p in mfm.named_parameters():
        # Only missing modalities are reconstructed, so the head's private codes (used for
        # observed slots only) get no gradient here; everything else trains jointly.
        if name.startswith("encoder.private_encoders"):
            assert p.grad is None or torch.count_nonzero(p.grad) == 0, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
