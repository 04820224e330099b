import pytest
import torch

from factorkit import (
    FactorizedLatents,
    ImageDecoder,
    ModalityDecoders,
    VectorDecoder,
    VectorDecoders,
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


def test_vector_decoders_equal_one_vector_decoder_per_modality() -> None:
    sizes = {"fac": 7, "fou": 5, "mor": 2}
    grouped = VectorDecoders(sizes, private_size=3, shared_size=4, hidden_sizes=[6]).double()
    single = {m: VectorDecoder(3, 4, d, hidden_sizes=[6]).double() for m, d in sizes.items()}
    with torch.no_grad():
        for m, dec in single.items():
            for linear, (weight, bias) in zip(
                (dec.net[0], dec.net[3]), grouped.mlps.layers_of(m), strict=True
            ):
                linear.weight.copy_(weight.T)
                linear.bias.copy_(bias)
    # Every hidden layer is shared across modalities; the output layers differ in size.
    assert grouped.mlps.groups[0] == [("fac", "fou", "mor")]
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


def test_vector_decoders_reject_bad_factors_by_modality() -> None:
    decs = VectorDecoders({"a": 5, "b": 3}, private_size=2, shared_size=4)
    good = {"a": torch.randn(3, 2), "b": torch.randn(3, 2)}
    with pytest.raises(ValueError, match=r"modality 'b': expected a private factor of shape"):
        decs(FactorizedLatents(torch.randn(3, 4), {**good, "b": torch.randn(3, 5)}))
    with pytest.raises(ValueError, match=r"factors have modalities \['a'\]"):
        decs(FactorizedLatents(torch.randn(3, 4), {"a": good["a"]}))
