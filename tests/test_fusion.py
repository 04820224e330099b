"""ConcatFusion against a by-hand float64 forward pass with the module's own weights."""

import pytest
import torch
from torch import Tensor, nn

from factorkit import ConcatFusion
from factorkit._layers import mlp

SIZES = {"video": 3, "audio": 2, "text": 4}  # deliberately not in sorted order


def features(batch: int = 5, seed: int = 0) -> dict[str, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, d, generator=gen) for m, d in reversed(SIZES.items())}


def by_hand(fusion: ConcatFusion, feats: dict[str, Tensor], present: dict[str, Tensor]) -> Tensor:
    """Zero the absent rows, append the indicators, Linear -> ReLU -> Linear, in float64."""
    order = sorted(SIZES)  # audio, text, video
    cols = [torch.where(present[m][:, None], feats[m].double(), 0.0) for m in order]
    cols.append(torch.stack([present[m].double() for m in order], dim=1))
    x = torch.cat(cols, dim=1)
    first, last = fusion.mlp[0], fusion.mlp[3]
    assert isinstance(first, nn.Linear) and isinstance(last, nn.Linear)
    h = torch.relu(x @ first.weight.double().T + first.bias.double())
    return h @ last.weight.double().T + last.bias.double()


def test_unmasked_fusion_is_the_mlp_of_the_sorted_concatenation_and_ones() -> None:
    torch.manual_seed(0)
    fusion = ConcatFusion(SIZES, output_size=6, hidden_size=8)
    feats = features()
    everyone = {m: torch.ones(5, dtype=torch.bool) for m in SIZES}
    expected = by_hand(fusion, feats, everyone)
    torch.testing.assert_close(fusion(feats).double(), expected, rtol=1e-5, atol=1e-6)
    # An all-true mask is the same computation as no mask.
    torch.testing.assert_close(fusion(feats, everyone).double(), expected, rtol=1e-5, atol=1e-6)


def test_masked_fusion_zero_fills_absent_rows_and_appends_the_indicators() -> None:
    torch.manual_seed(1)
    fusion = ConcatFusion(SIZES, output_size=4, hidden_size=16)
    feats = features(seed=1)
    present = {
        "audio": torch.tensor([True, False, True, False, True]),
        "text": torch.tensor([True, True, False, False, True]),
        "video": torch.tensor([False, True, True, True, True]),
    }
    feats["audio"][1] = float("nan")  # NaN in an absent slot must not leak
    feats["video"][0] = float("inf")
    out = fusion(feats, present)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), by_hand(fusion, feats, present), rtol=1e-5, atol=1e-6)


def test_absent_rows_get_no_gradient_and_present_rows_do() -> None:
    torch.manual_seed(2)
    fusion = ConcatFusion(SIZES, output_size=3)
    feats = {m: t.requires_grad_() for m, t in features(seed=2).items()}
    present = {m: torch.tensor([True, False, True, True, False]) for m in SIZES}
    fusion(feats, present).sum().backward()
    for m, x in feats.items():
        assert x.grad is not None
        assert torch.all(x.grad[~present[m]] == 0), m
        assert torch.all(x.grad[present[m]].abs().sum(-1) > 0), m


def test_layer_widths_hidden_default_and_dropout() -> None:
    fusion = ConcatFusion(SIZES, output_size=4, dropout=0.25)
    layers = list(fusion.mlp)
    assert [type(layer) for layer in layers] == [nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (layers[0].in_features, layers[0].out_features) == (9 + 3, 64)  # type: ignore[union-attr]
    assert (layers[3].in_features, layers[3].out_features) == (64, 4)  # type: ignore[union-attr]
    assert layers[2].p == 0.25  # type: ignore[union-attr]
    assert ConcatFusion(SIZES, output_size=100).mlp[0].out_features == 100
    assert ConcatFusion(SIZES, output_size=64).mlp[0].out_features == 64
    assert ConcatFusion(SIZES, output_size=4).mlp[2].p == 0.0
    assert ConcatFusion(SIZES, output_size=4, hidden_size=7).mlp[0].out_features == 7
    assert fusion.modalities == ("audio", "text", "video")
    assert fusion.output_size == 4 and fusion.input_sizes == {"audio": 2, "text": 4, "video": 3}


def test_mlp_layout_and_values() -> None:
    torch.manual_seed(3)
    net = mlp([3, 5, 7, 2], dropout=0.5)
    kinds = [type(layer).__name__ for layer in net]
    assert kinds == ["Linear", "ReLU", "Dropout", "Linear", "ReLU", "Dropout", "Linear"]
    assert [(net[i].in_features, net[i].out_features) for i in (0, 3, 6)] == [
        (3, 5),
        (5, 7),
        (7, 2),
    ]
    assert net[2].p == 0.5 and net[5].p == 0.5
    net.eval()
    x = torch.randn(4, 3)
    h = x.double()
    for i in (0, 3, 6):
        h = h @ net[i].weight.double().T + net[i].bias.double()
        h = torch.relu(h) if i < 6 else h  # no activation after the last layer
    torch.testing.assert_close(net(x).double(), h, rtol=1e-5, atol=1e-6)
    assert len(mlp([4, 2])) == 1


def test_wrong_feature_size_names_the_modality() -> None:
    fusion = ConcatFusion(SIZES, output_size=2)
    feats = features()
    feats["text"] = torch.randn(5, 3)
    with pytest.raises(ValueError, match="text"):
        fusion(feats)


def test_size_errors_name_the_argument() -> None:
    with pytest.raises(ValueError, match=r"^output_size must be a positive int, got 0$"):
        ConcatFusion(SIZES, output_size=0)
    with pytest.raises(ValueError, match=r"^hidden_size must be a positive int, got -2$"):
        ConcatFusion(SIZES, output_size=3, hidden_size=-2)
    with pytest.raises(
        ValueError, match=r"^input_sizes\['audio'\] must be a positive int, got 1.5$"
    ):
        ConcatFusion({**SIZES, "audio": 1.5}, output_size=3)  # type: ignore[dict-item]
