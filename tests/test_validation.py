"""Input checks: dtypes, devices and checkpoints of other modalities."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from factorkit import ConcatFusion, FactorizedHead, SurrogateInference
from factorkit._validation import check_finite, check_vectors, parameter_dtype

SIZES = {"audio": 3, "video": 2}


def features(dtype: torch.dtype = torch.float32, **dtypes: torch.dtype) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {m: torch.randn(4, d, generator=gen).to(dtypes.get(m, dtype)) for m, d in SIZES.items()}


def test_parameter_dtype_follows_the_module_and_is_none_without_parameters() -> None:
    fusion = ConcatFusion(SIZES, output_size=2)
    assert parameter_dtype(fusion) == torch.float32
    assert parameter_dtype(fusion.to(torch.float64)) == torch.float64
    assert parameter_dtype(torch.nn.ReLU()) is None


@pytest.mark.parametrize(
    "build",
    [
        lambda: FactorizedHead(SIZES, shared_size=4, private_size=2),
        lambda: ConcatFusion(SIZES, output_size=4),
        lambda: SurrogateInference(SIZES, shared_size=4, private_size=2),
    ],
    ids=["head", "fusion", "surrogate"],
)
def test_float64_features_into_a_float32_module_name_the_modality(
    build: Callable[[], torch.nn.Module],
) -> None:
    module = build()
    # The head checks the modalities against each other, its default fusion against its
    # parameters: either way the message names the first modality and both dtypes.
    with pytest.raises(
        ValueError,
        match=r"modality 'audio': features of dtype torch.float64 and shape \(4, 3\), "
        r"expected torch.float32 \(the dtype of \w+'s parameters\)",
    ):
        module(features(torch.float64))


def test_modalities_of_different_dtypes_name_the_odd_one() -> None:
    head = FactorizedHead(SIZES, shared_size=4, private_size=2)
    with pytest.raises(
        ValueError,
        match=r"modality 'video': features of dtype torch.float64 and shape \(4, 2\), "
        r"expected torch.float32 \(the dtype of (modality 'audio'|FactorizedHead's parameters)\)",
    ):
        head(features(video=torch.float64))
    with pytest.raises(ValueError, match=r"expected torch.float64 \(the dtype of modality 'audio'"):
        check_vectors(features(audio=torch.float64), SIZES)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
def test_integer_and_bool_features_name_the_modality_and_the_expected_dtype(
    dtype: torch.dtype,
) -> None:
    fusion = ConcatFusion(SIZES, output_size=4)
    x = features()
    x["video"] = x["video"] > 0 if dtype == torch.bool else x["video"].long()
    with pytest.raises(
        ValueError,
        match=rf"modality 'video': features must be floating point, got {dtype} of shape "
        r"\(4, 2\); expected torch.float32 \(the dtype of ConcatFusion's parameters\)",
    ):
        fusion(x)


def test_a_float64_module_takes_float64_features_exactly() -> None:
    head = FactorizedHead(SIZES, shared_size=4, private_size=2)
    x = features()
    reference = head(x)
    z = head.to(torch.float64)({m: t.double() for m, t in x.items()})
    assert z.shared.dtype == torch.float64
    torch.testing.assert_close(z.shared.float(), reference.shared, rtol=1e-5, atol=1e-6)


def test_autocast_accepts_float32_and_bfloat16_features_but_not_float64() -> None:
    head = FactorizedHead(SIZES, shared_size=4, private_size=2)
    surrogate = SurrogateInference(SIZES, shared_size=4, private_size=2)
    x = features()
    present = {"audio": torch.tensor([True, False, True, True]), "video": torch.ones(4).bool()}
    reference = head(x), surrogate(x, present)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for inputs in (x, features(video=torch.bfloat16)):
            low = head(inputs), surrogate(inputs, present)
            for ref, out in zip(reference, low, strict=True):
                assert out.shared.dtype == torch.bfloat16
                # bf16 keeps 8 bits of mantissa: within a few percent of the float32 codes.
                torch.testing.assert_close(out.shared.float(), ref.shared, rtol=0.05, atol=0.05)
        with pytest.raises(ValueError, match=r"modality 'audio': features of dtype torch.float64"):
            head(features(torch.float64))
    # Outside autocast a bfloat16 modality is a mismatch again.
    with pytest.raises(ValueError, match=r"modality 'video': features of dtype torch.bfloat16"):
        head(features(video=torch.bfloat16))


class SumFusion(torch.nn.Module):
    """A user fusion that checks nothing: the head's own check must name the dtype."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(1, 4)

    def forward(
        self, features: dict[str, torch.Tensor], present: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        total = sum(x.sum(1, keepdim=True) for x in features.values())
        assert isinstance(total, torch.Tensor)
        out: torch.Tensor = self.proj(total)
        return out


def test_the_head_checks_its_own_parameters_dtype_with_any_fusion() -> None:
    head = FactorizedHead(SIZES, shared_size=4, private_size=2, fusion=SumFusion())
    assert head(features()).shared.shape == (4, 4)
    with pytest.raises(
        ValueError,
        match=r"modality 'audio': features of dtype torch.float64 and shape \(4, 3\), "
        r"expected torch.float32 \(the dtype of FactorizedHead's parameters\)",
    ):
        head(features(torch.float64))


def modality_blocks(names: tuple[str, str], size: int = 4) -> list[torch.nn.Module]:
    from factorkit import (
        ConcatFusion,
        FactorGenerators,
        FactorizedEncoder,
        FactorizedHead,
        ModalityDecoders,
        SurrogateInference,
        VectorDecoder,
    )

    sizes = dict.fromkeys(names, size)
    return [
        FactorizedHead(sizes, shared_size=3, private_size=2),
        ConcatFusion(sizes, 3),
        FactorGenerators(3, dict.fromkeys(names, size), factor_size=5),
        ModalityDecoders({m: VectorDecoder(2, 3, size) for m in names}),
        SurrogateInference(sizes, shared_size=3, private_size=2),
        FactorizedEncoder(torch.nn.Linear(1, 1), {m: torch.nn.Linear(size, 2) for m in names}),
    ]


@pytest.mark.parametrize("index", range(6))
def test_checkpoints_refuse_other_modality_names(index: int) -> None:
    saved = modality_blocks(("x", "y"))[index]
    target = modality_blocks(("y", "z"))[index]
    before = {k: v.clone() for k, v in target.state_dict().items() if torch.is_tensor(v)}
    # The tensors line up key for key (same sizes): only the record tells the modalities apart.
    with pytest.raises(ValueError, match=r"saved for modalities .*'x'.*this block has .*'z'"):
        target.load_state_dict(saved.state_dict())
    after = target.state_dict()
    assert all(torch.equal(after[k], v) for k, v in before.items())  # nothing was loaded


@pytest.mark.parametrize("index", range(6))
def test_checkpoints_refuse_other_sizes_and_round_trip(index: int, tmp_path: Path) -> None:
    saved = modality_blocks(("x", "y"), size=4)[index]
    with pytest.raises(ValueError, match=r"saved for modalities"):
        modality_blocks(("x", "y"), size=5)[index].load_state_dict(saved.state_dict())
    torch.save(saved.state_dict(), tmp_path / "block.pt")
    same = modality_blocks(("x", "y"), size=4)[index]
    same.load_state_dict(torch.load(tmp_path / "block.pt", weights_only=True))
    assert all(
        torch.equal(a, b)
        for a, b in zip(same.state_dict().values(), saved.state_dict().values(), strict=True)
        if torch.is_tensor(a)
    )


def test_check_finite_counts_only_present_rows_and_names_each_offender() -> None:
    nan, inf = float("nan"), float("inf")
    target = {
        "video": torch.tensor([[[nan, 1.0]], [[inf, -inf]], [[0.0, 0.0]]]),  # (3, 1, 2)
        "audio": torch.tensor([[0.0], [nan], [1.0]]),  # (3, 1)
    }
    present = {
        "audio": torch.tensor([True, False, True]),
        "video": torch.tensor([False, True, True]),
    }
    # audio's NaN sits in an absent row; video's row 0 is absent, row 1 has two non-finite.
    with pytest.raises(ValueError, match="non-finite") as info:
        check_finite({"target": target}, present)
    assert str(info.value) == (
        "modality 'video': 2 non-finite values in the present rows of the target (shape (3, 1, 2))"
    )
    # Without a mask every row counts, and several roles and names are all listed.
    recon = {"audio": torch.tensor([[inf], [0.0], [0.0]])}
    with pytest.raises(ValueError, match="non-finite") as info:
        check_finite({"target": target, "reconstruction": recon}, None, kind="latent")
    assert str(info.value) == (
        "latent 'audio': 1 non-finite value in the present rows of the target (shape (3, 1)); "
        "latent 'video': 3 non-finite values in the present rows of the target (shape (3, 1, 2)); "
        "latent 'audio': 1 non-finite value in the present rows of the reconstruction "
        "(shape (3, 1))"
    )
    # Finite present rows pass, whatever the absent rows hold.
    check_finite(
        {"target": {"audio": target["audio"]}}, {"audio": torch.tensor([True, False, True])}
    )


def test_check_vectors_messages_name_the_modality_and_shapes() -> None:
    ok = features()
    with pytest.raises(
        ValueError, match=r"^modality 'audio': expected features of shape \(B, 3\), got \(4,\)$"
    ):
        check_vectors({**ok, "audio": torch.zeros(4)}, SIZES)
    with pytest.raises(
        ValueError, match=r"^modality 'video': expected features of shape \(B, 2\), got \(4, 5\)$"
    ):
        check_vectors({**ok, "video": torch.zeros(4, 5)}, SIZES)
    with pytest.raises(
        ValueError,
        match=r"^modality 'video': batch size 5 differs from modality 'audio' \(batch size 4\)$",
    ):
        check_vectors({**ok, "video": torch.zeros(5, 2)}, SIZES)
    with pytest.raises(
        ValueError,
        match=r"^modality 'audio': features must be floating point, got torch.int64 of shape "
        r"\(4, 3\)$",
    ):
        check_vectors({**ok, "audio": torch.zeros(4, 3, dtype=torch.long)}, SIZES)
    with pytest.raises(ValueError, match="features modalities"):
        check_vectors({"audio": ok["audio"]}, SIZES)
    assert check_vectors(ok, SIZES) == 4
