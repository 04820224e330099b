import pytest
import torch

from factorkit import (
    FactorizedLatents,
    ImageDecoder,
    ModalityDecoders,
    VectorDecoder,
    factor_contributions,
)


def test_vector_decoder_matches_manual_mlp() -> None:
    dec = VectorDecoder(private_size=2, shared_size=3, output_size=4, hidden_sizes=[6])
    fa, fy = torch.randn(5, 2), torch.randn(5, 3)
    l1, l2 = dec.net[0], dec.net[3]
    hidden = torch.relu(torch.cat([fa, fy], 1) @ l1.weight.T + l1.bias)
    torch.testing.assert_close(dec(fa, fy), hidden @ l2.weight.T + l2.bias)


@pytest.mark.parametrize("shape", [(1, 16, 15), (3, 8, 8), (1, 4, 8), (2, 7, 5)])
def test_image_decoder_reaches_any_size(shape: tuple[int, int, int]) -> None:
    dec = ImageDecoder(private_size=2, shared_size=3, output_shape=shape, channels=(8, 4))
    out = dec(torch.randn(2, 2), torch.randn(2, 3))
    assert out.shape == (2, *shape)


def test_image_decoder_output_depends_on_both_factors_per_sample() -> None:
    dec = ImageDecoder(private_size=2, shared_size=3, output_shape=(1, 6, 6), channels=(4,))
    fa, fy = torch.randn(3, 2), torch.randn(3, 3)
    jac_a, jac_y = torch.autograd.functional.jacobian(dec, (fa, fy))
    # Each output image depends on its own sample's factors only (no mixing across the batch).
    for i in range(3):
        for j in range(3):
            nonzero_a = torch.count_nonzero(jac_a[i, :, :, :, j]) > 0
            nonzero_y = torch.count_nonzero(jac_y[i, :, :, :, j]) > 0
            assert bool(nonzero_a) == (i == j) and bool(nonzero_y) == (i == j)


def test_modality_decoders_route_factors_by_name() -> None:
    decs = ModalityDecoders(
        {"pix": ImageDecoder(2, 3, (1, 4, 4), channels=(4,)), "fou": VectorDecoder(1, 3, 7)}
    )
    f = FactorizedLatents(torch.randn(2, 3), {"pix": torch.randn(2, 2), "fou": torch.randn(2, 1)})
    out = decs(f)
    torch.testing.assert_close(out["fou"], decs.decoders["fou"](f.private["fou"], f.shared))
    assert out["pix"].shape == (2, 1, 4, 4)


def test_decoder_errors_name_modality_and_shapes() -> None:
    decs = ModalityDecoders({"fou": VectorDecoder(1, 3, 7)})
    bad = FactorizedLatents(torch.randn(2, 3), {"fou": torch.randn(2, 2)})
    with pytest.raises(
        ValueError,
        match=r"modality 'fou': expected a private factor of shape \(B, 1\), got \(2, 2\)",
    ):
        decs(bad)
    with pytest.raises(
        ValueError, match=r"expected a shared factor of shape \(2, 3\), got \(3, 3\)"
    ):
        VectorDecoder(1, 3, 7)(torch.randn(2, 1), torch.randn(3, 3))
    with pytest.raises(ValueError, match=r"factors have modalities \['pix'\]"):
        decs(FactorizedLatents(torch.randn(2, 3), {"pix": torch.randn(2, 1)}))
    with pytest.raises(ValueError, match="output_shape must be"):
        ImageDecoder(1, 1, (4, 4))  # type: ignore[arg-type]


def test_modality_decoders_group_vector_decoders_into_the_same_functions() -> None:
    sizes = {"fac": 7, "fou": 5, "mor": 2}
    single = {m: VectorDecoder(3, 4, d, hidden_sizes=[6]).double() for m, d in sizes.items()}
    grouped = ModalityDecoders(single)
    # Every hidden layer is shared across modalities; the output layers differ in size.
    (mlps,) = grouped.vector_groups
    assert mlps.groups[0] == [("fac", "fou", "mor")]
    assert not grouped.decoders
    private = {m: torch.randn(9, 3, dtype=torch.float64) for m in sizes}
    f = FactorizedLatents(torch.randn(9, 4, dtype=torch.float64), private)
    out = grouped(f)
    for m, dec in single.items():
        torch.testing.assert_close(out[m], dec(f.private[m], f.shared), rtol=1e-12, atol=1e-12)
        alone = grouped.decode(m, f.private[m], f.shared)
        torch.testing.assert_close(alone, out[m], rtol=1e-12, atol=1e-12)
    # Interpretation sees the same decoders either way.
    from_grouped = factor_contributions(grouped, [f])
    from_single = factor_contributions(single, [f])  # type: ignore[arg-type]
    for m in sizes:
        torch.testing.assert_close(from_grouped.share[m], from_single.share[m])


def test_modality_decoders_hold_any_mix_and_pass_the_step_mask() -> None:
    seen: dict[str, torch.Tensor | None] = {}

    class StepDecoder(torch.nn.Module):
        def forward(
            self, private: torch.Tensor, shared: torch.Tensor, *, mask: torch.Tensor | None = None
        ) -> torch.Tensor:
            seen["mask"] = mask
            return (private.sum(1, keepdim=True) + shared.sum(1, keepdim=True)).expand(-1, 4)

    decs = ModalityDecoders(
        {
            "a": VectorDecoder(2, 3, 5),
            "b": VectorDecoder(2, 3, 6),
            "c": VectorDecoder(2, 3, 4, dropout=0.5),
            "img": ImageDecoder(2, 3, (1, 4, 4), channels=(4,)),
            "seq": StepDecoder(),
        }
    ).eval()
    assert sorted(decs.decoders) == ["c", "img", "seq"]  # "c": its own dropout
    f = FactorizedLatents(
        torch.randn(2, 3), {m: torch.randn(2, 2) for m in ("a", "b", "c", "img", "seq")}
    )
    step_mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    out = decs(f, mask=step_mask)
    assert seen["mask"] is step_mask
    assert list(out) == ["a", "b", "c", "img", "seq"]
    torch.testing.assert_close(
        out["seq"], (f.private["seq"].sum(1) + f.shared.sum(1))[:, None].expand(-1, 4)
    )
    decs(f)
    assert seen["mask"] is None


def test_image_decoder_output_values_match_a_naive_computation() -> None:
    dec = ImageDecoder(2, 3, (1, 5, 3), channels=(4, 2)).double()
    fa, fy = torch.randn(2, 2, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    x = torch.cat([fa, fy], 1) @ dec.project.weight.T + dec.project.bias
    # base map: ceil(5 / 4) x ceil(3 / 4) = 2 x 1 with 4 channels, channel-major.
    x = x.reshape(2, 4, 2, 1)
    up1, up2, conv = dec.upsample[1], dec.upsample[3], dec.upsample[5]
    x = torch.nn.functional.conv_transpose2d(x.relu(), up1.weight, up1.bias, stride=2, padding=1)
    x = torch.nn.functional.conv_transpose2d(x.relu(), up2.weight, up2.bias, stride=2, padding=1)
    x = torch.nn.functional.conv2d(x.relu(), conv.weight, conv.bias, padding=1)
    assert x.shape == (2, 1, 8, 4)
    # centre crop of (8, 4) to (5, 3): rows 1..5, columns 0..2
    torch.testing.assert_close(dec(fa, fy), x[:, :, 1:6, 0:3], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("channels", [(0,), (-3,), (4, 0), (2.5,)])
def test_image_decoder_rejects_bad_channels(channels: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="channels entries"):
        ImageDecoder(1, 1, (1, 4, 4), channels=channels)


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_decoders_name_the_modality_and_dtype(dtype: torch.dtype) -> None:
    decs = ModalityDecoders(
        {
            "a": VectorDecoder(2, 3, 5),
            "b": VectorDecoder(2, 3, 4),
            "img": ImageDecoder(2, 3, (1, 4, 4)),
        }
    )
    good = {m: torch.randn(2, 2) for m in ("a", "b", "img")}
    for m in good:
        bad = dict(good)
        bad[m] = torch.ones(2, 2, dtype=dtype)
        with pytest.raises(ValueError, match=rf"modality '{m}': private factor .*{dtype}"):
            decs(FactorizedLatents(torch.randn(2, 3), bad))
    with pytest.raises(ValueError, match=rf"shared factor .*{dtype}"):
        VectorDecoder(2, 3, 5)(torch.randn(2, 2), torch.ones(2, 3, dtype=dtype))


def test_decoders_name_the_device() -> None:
    dec = VectorDecoder(2, 3, 5).to("meta")
    with pytest.raises(
        ValueError, match=r"private factor is on cpu, VectorDecoder's parameters on meta"
    ):
        dec(torch.randn(2, 2), torch.randn(2, 3))
