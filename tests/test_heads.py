import pytest
import torch
from torch import nn

from factorkit import ConcatFusion, FactorizedHead

SIZES = {"audio": 6, "video": 4, "text": 5}


def features(batch: int = 7) -> dict[str, torch.Tensor]:
    return {m: torch.randn(batch, d) for m, d in SIZES.items()}


def test_codes_match_a_naive_recomputation() -> None:
    head = FactorizedHead(SIZES, shared_size=3, private_size={"audio": 2, "video": 3, "text": 1})
    x = features()
    z = head(x)
    for m in SIZES:
        ((weight, bias),) = head.private_encoders.layers_of(m)
        torch.testing.assert_close(z.private[m], x[m] @ weight + bias)
    mlp = head.fusion.mlp
    concat = torch.cat([x["audio"], x["text"], x["video"], torch.ones(7, 3)], dim=1)
    hidden = torch.relu(concat @ mlp[0].weight.T + mlp[0].bias)
    torch.testing.assert_close(z.shared, hidden @ mlp[3].weight.T + mlp[3].bias)
    assert z.present is None
    assert z.modalities == ("audio", "text", "video")


def test_private_code_depends_only_on_its_own_modality() -> None:
    head = FactorizedHead(SIZES, shared_size=3, private_size=2)
    x = features(2)
    order = sorted(SIZES)

    def codes(*inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = head(dict(zip(order, inputs, strict=True)))
        return (*tuple(z.private[m] for m in order), z.shared)

    jac = torch.autograd.functional.jacobian(codes, tuple(x[m] for m in order))
    for i, out_name in enumerate(order):
        for j, in_name in enumerate(order):
            block = jac[i][j]
            if i == j:
                assert block.abs().sum() > 0, (out_name, in_name)
            else:
                assert torch.count_nonzero(block) == 0, (out_name, in_name)
    # The shared code sees every modality.
    assert all(jac[len(order)][j].abs().sum() > 0 for j in range(len(order)))


def test_absent_modality_never_reaches_any_output() -> None:
    head = FactorizedHead(SIZES, shared_size=3, private_size=2)
    x = features(4)
    present = {m: torch.ones(4, dtype=torch.bool) for m in SIZES}
    present["video"] = torch.tensor([True, False, True, False])
    z = head(x, present)
    poisoned = dict(x, video=x["video"].clone())
    poisoned["video"][~present["video"]] = float("nan")
    z_nan = head(poisoned, present)
    assert z_nan == z
    assert all(torch.isfinite(t).all() for _, t in z_nan.items())
    assert torch.equal(z.private["video"][1], torch.zeros(2))
    assert torch.equal(z.mask("video"), present["video"])
    # ...and gradients into the absent rows are exactly zero, not NaN.
    leaf = poisoned["video"].requires_grad_()
    out = head(dict(poisoned, video=leaf), present)
    sum(t.sum() for _, t in out.items()).backward()
    assert leaf.grad is not None
    assert torch.equal(leaf.grad[~present["video"]], torch.zeros(2, 4))


def test_masked_head_matches_running_each_sample_alone() -> None:
    head = FactorizedHead(SIZES, shared_size=3, private_size=2)
    x = features(5)
    present = {
        "audio": torch.tensor([True, False, True, True, False]),
        "text": torch.tensor([False, True, True, False, False]),
        "video": torch.tensor([True, True, False, True, True]),
    }
    z = head(x, present)
    for i in range(5):
        zi = head({m: x[m][i : i + 1] for m in SIZES}, {m: present[m][i : i + 1] for m in SIZES})
        torch.testing.assert_close(zi.shared, z.shared[i : i + 1])
        for m in SIZES:
            torch.testing.assert_close(zi.private[m], z.private[m][i : i + 1])


def test_gradients_reach_every_parameter() -> None:
    head = FactorizedHead(SIZES, shared_size=3, private_size=2)
    z = head(features())
    sum(t.square().sum() for _, t in z.items()).backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_custom_fusion_is_used() -> None:
    class MeanOfProjections(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.ModuleDict({m: nn.Linear(d, 3) for m, d in SIZES.items()})

        def forward(self, feats: dict[str, torch.Tensor], present: object = None) -> torch.Tensor:
            return torch.stack([self.proj[m](feats[m]) for m in sorted(feats)]).mean(0)

    fusion = MeanOfProjections()
    head = FactorizedHead(SIZES, shared_size=3, private_size=2, fusion=fusion)
    x = features()
    torch.testing.assert_close(head(x).shared, fusion(x))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"audio": torch.randn(2, 6), "video": torch.randn(2, 4)}, r"missing \['text'\]"),
        (
            {"audio": torch.randn(2, 6), "video": torch.randn(2, 4), "txet": torch.randn(2, 5)},
            r"missing \['text'\], unknown \['txet'\]",
        ),
        (
            {"audio": torch.randn(2, 6), "video": torch.randn(2, 3), "text": torch.randn(2, 5)},
            r"modality 'video': expected features of shape \(B, 4\), got \(2, 3\)",
        ),
        (
            {"audio": torch.randn(2, 6), "video": torch.randn(2, 4), "text": torch.randn(3, 5)},
            r"modality 'video': batch size 2 differs from modality 'text' \(batch size 3\)|"
            r"modality 'text': batch size 3 differs",
        ),
        (
            {"audio": torch.randn(2, 1, 6), "video": torch.randn(2, 4), "text": torch.randn(2, 5)},
            r"modality 'audio': expected features of shape \(B, 6\), got \(2, 1, 6\)",
        ),
    ],
)
def test_bad_input_names_modality_and_shapes(inputs: dict[str, torch.Tensor], message: str) -> None:
    head = FactorizedHead(SIZES, shared_size=3, private_size=2)
    with pytest.raises(ValueError, match=message):
        head(inputs)


def test_integer_features_are_rejected_with_the_modality_name() -> None:
    head = FactorizedHead(SIZES, shared_size=3, private_size=2)
    x = features(2)
    x["video"] = x["video"].long()
    with pytest.raises(ValueError, match=r"modality 'video': features must be floating point"):
        head(x)


def test_bad_construction_is_rejected() -> None:
    with pytest.raises(ValueError, match="reserved"):
        FactorizedHead({"shared": 3}, shared_size=2, private_size=2)
    with pytest.raises(ValueError, match=r"private_size.*missing \['video'\]"):
        FactorizedHead({"audio": 3, "video": 2}, shared_size=2, private_size={"audio": 2})
    with pytest.raises(ValueError, match="shared_size must be a positive int"):
        FactorizedHead({"audio": 3}, shared_size=0, private_size=2)
    with pytest.raises(ValueError, match="at least one modality"):
        ConcatFusion({}, output_size=3)


def test_masked_path_with_encoders_matches_a_naive_recomputation() -> None:
    raw = {"audio": 5, "text": 4, "video": 3}
    encoders = {m: nn.Sequential(nn.Linear(d, SIZES[m]), nn.Tanh()) for m, d in raw.items()}
    head = FactorizedHead(SIZES, shared_size=3, private_size=2, encoders=encoders).double()
    x = {m: torch.randn(5, d, dtype=torch.float64) for m, d in raw.items()}
    present = {
        "audio": torch.tensor([True, False, True, True, False]),
        "text": torch.tensor([True, True, False, True, False]),
        "video": torch.tensor([False, True, True, True, True]),
    }
    z = head(x, present)
    order = ["audio", "text", "video"]
    features, parts = {}, []
    for m in order:
        keep = present[m][:, None]
        # absent inputs are zeros before the encoder, absent features zeros before fusion
        features[m] = encoders[m].double()(x[m] * keep)
        parts.append(features[m] * keep)
    parts.append(torch.stack([present[m] for m in order], dim=1).double())  # indicators
    mlp = head.fusion.mlp
    hidden = torch.relu(torch.cat(parts, 1) @ mlp[0].weight.T + mlp[0].bias)
    torch.testing.assert_close(z.shared, hidden @ mlp[3].weight.T + mlp[3].bias)
    assert head.private_encoders is not None
    for m in order:
        ((weight, bias),) = head.private_encoders.layers_of(m)
        keep = present[m][:, None]
        expected = torch.where(keep, (features[m] * keep) @ weight + bias, 0.0)
        torch.testing.assert_close(z.private[m], expected)
    # NaN placeholders in absent inputs change nothing.
    poisoned = {m: torch.where(present[m][:, None], x[m], float("nan")) for m in order}
    assert head(poisoned, present) == z


def test_shared_only_head_has_no_private_codes() -> None:
    head = FactorizedHead(SIZES, shared_size=3, private_size=None)
    z = head(features(4))
    assert z.private == {} and z.shared.shape == (4, 3) and head.private_encoders is None
    assert not any("private" in name for name, _ in head.named_parameters())


def test_check_finite_names_the_modality_and_rows_of_present_inputs() -> None:
    head = FactorizedHead(SIZES, shared_size=3, private_size=2, check_finite=True)
    x = features(6)
    x["video"][4, 1] = float("inf")
    x["audio"][2, 0] = float("nan")
    present = {m: torch.ones(6, dtype=torch.bool) for m in SIZES}
    with pytest.raises(ValueError, match=r"modality 'audio': 1 non-finite value .*rows \[2\]"):
        head(x, present)
    with pytest.raises(ValueError, match=r"modality 'video': 1 non-finite value .*rows \[4\]"):
        head(x)
    present["audio"][2] = False
    present["video"][4] = False
    assert all(torch.isfinite(t).all() for _, t in head(x, present).items())
    unchecked = FactorizedHead(SIZES, shared_size=3, private_size=2)
    assert not torch.isfinite(unchecked(x).shared).all()  # opt-in: off by default


def test_nan_in_absent_features_reaches_no_gradient() -> None:
    head = FactorizedHead(SIZES, shared_size=3, private_size=2)
    x = features(4)
    present = {m: torch.tensor([True, False, True, True]) for m in SIZES}
    poisoned = {m: torch.where(present[m][:, None], v, float("nan")) for m, v in x.items()}
    z = head(poisoned, present)
    sum(t.sum() for _, t in z.items()).backward()  # type: ignore[union-attr]
    for name, p in head.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


class StepSum(nn.Module):
    """Sum of the valid steps, then a linear map: a stand-in for a sequence encoder."""

    def __init__(self, d: int, out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(d, out)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None) -> torch.Tensor:
        keep = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else mask
        return self.linear(torch.where(keep[..., None], x, 0.0).sum(1))


class SharedStepSum(nn.Module):
    def __init__(self, sizes: dict[str, int], out: int) -> None:
        super().__init__()
        self.each = nn.ModuleDict({m: StepSum(d, out) for m, d in sizes.items()})

    def forward(
        self, inputs: dict[str, torch.Tensor], *, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return sum(self.each[m](inputs[m], mask=mask) for m in sorted(inputs))  # type: ignore[return-value]


def test_factorized_encoder_zero_fills_masks_and_passes_the_step_mask() -> None:
    from factorkit import FactorizedEncoder

    sizes = {"a": 3, "b": 2}
    encoder = FactorizedEncoder(
        SharedStepSum(sizes, 4), {m: StepSum(d, 2) for m, d in sizes.items()}
    ).double()
    x = {m: torch.randn(3, 5, d, dtype=torch.float64) for m, d in sizes.items()}
    mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] + [False] * 4])
    present = {"a": torch.tensor([True, False, True]), "b": torch.ones(3, dtype=torch.bool)}
    x["a"][1] = float("nan")  # absent: may hold anything
    z = encoder(x, present, mask=mask)
    filled = {m: torch.where(present[m][:, None, None], v, 0.0) for m, v in x.items()}
    valid = {m: torch.where(mask[..., None], v, 0.0).sum(1) for m, v in filled.items()}
    shared = sum(
        valid[m] @ encoder.shared.each[m].linear.weight.T + encoder.shared.each[m].linear.bias
        for m in sizes
    )
    torch.testing.assert_close(z.shared, shared)
    for m in sizes:
        lin = encoder.private[m].linear
        expected = torch.where(present[m][:, None], valid[m] @ lin.weight.T + lin.bias, 0.0)
        torch.testing.assert_close(z.private[m], expected)
    assert z.present is not None and torch.equal(z.present["a"], present["a"])
    with pytest.raises(ValueError, match=r"inputs modalities: missing \['b'\]"):
        encoder({"a": x["a"]})
