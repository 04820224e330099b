import pytest
import torch

from factorkit import FactorGenerators, FactorizedHead, FactorizedLatents


def naive_generator(
    weights: list[tuple[torch.Tensor, torch.Tensor]], z: torch.Tensor
) -> torch.Tensor:
    # An independent float64 recomputation: Linear, ReLU, (Dropout), Linear, ReLU.
    (w1, b1), (w2, b2) = ((w.double(), b.double()) for w, b in weights)
    return torch.relu(torch.relu(z.double() @ w1 + b1) @ w2 + b2)


def test_generators_are_linear_relu_dropout_linear_relu_with_a_final_relu() -> None:
    gens = FactorGenerators(4, {"a": 3, "b": 3}, factor_size=6, hidden_size=5, dropout=0.5).eval()
    with torch.no_grad():  # half the last biases low: some outputs are clamped by the last ReLU
        for _, bias in (gens.generators.layers_of(n)[1] for n in ("shared", "a", "b")):
            bias[:3] -= 2.0
    z = FactorizedLatents(torch.randn(8, 4), {"a": torch.randn(8, 3), "b": torch.randn(8, 3)})
    f = gens(z)
    for name, code in z.items():
        expected = naive_generator(gens.generators.layers_of(name), code)
        torch.testing.assert_close(dict(f.items())[name].double(), expected, rtol=1e-5, atol=1e-6)
        assert (expected == 0).any() and (expected > 0).any()  # the final ReLU is exercised
    gens.train()
    torch.manual_seed(1)
    assert not torch.equal(gens(z).shared, f.shared)  # dropout is active in training


def test_shared_generator_alone() -> None:
    gens = FactorGenerators(4, {}, factor_size=6)
    z = FactorizedLatents(torch.randn(3, 4), {})
    f = gens(z)
    assert f.modalities == () and f.shared.shape == (3, 6)
    torch.testing.assert_close(f.shared, gens.generate("shared", z.shared))


@pytest.mark.parametrize("dtype", [torch.float64, torch.int64])
def test_generators_name_the_latent_and_dtype(dtype: torch.dtype) -> None:
    gens = FactorGenerators(3, {"a": 2}, factor_size=4)
    with pytest.raises(ValueError, match=rf"latent 'a': code .*{dtype}"):
        gens(FactorizedLatents(torch.randn(2, 3), {"a": torch.ones(2, 2, dtype=dtype)}))
    with pytest.raises(ValueError, match=rf"latent 'shared': code .*{dtype}"):
        gens.generate("shared", torch.ones(2, 3, dtype=dtype))


def test_generators_name_the_device() -> None:
    gens = FactorGenerators(3, {"a": 2}, factor_size=4).to("meta")
    with pytest.raises(ValueError, match=r"latent 'shared': code is on cpu, .* on meta"):
        gens(FactorizedLatents(torch.randn(2, 3), {"a": torch.randn(2, 2)}))


def test_generators_follow_latent_names_and_sizes() -> None:
    head = FactorizedHead({"a": 6, "b": 3}, shared_size=4, private_size={"a": 2, "b": 3})
    gens = FactorGenerators.for_head(head, factor_size={"shared": 8, "a": 5, "b": 7})
    z = head({"a": torch.randn(2, 6), "b": torch.randn(2, 3)})
    f = gens(z)
    assert {n: t.shape[1] for n, t in f.items()} == {"shared": 8, "a": 5, "b": 7}
    torch.testing.assert_close(f.private["b"], gens.generate("b", z.private["b"]))
    torch.testing.assert_close(f.shared, gens.generate("shared", z.shared))


def test_generators_keep_the_presence_mask() -> None:
    gens = FactorGenerators(3, {"a": 2}, factor_size=4)
    mask = {"a": torch.tensor([True, False])}
    f = gens(FactorizedLatents(torch.randn(2, 3), {"a": torch.zeros(2, 2)}, mask))
    assert f.present is not None and torch.equal(f.present["a"], mask["a"])


def test_generators_reject_wrong_latents() -> None:
    gens = FactorGenerators(3, {"a": 2}, factor_size=4)
    with pytest.raises(ValueError, match=r"latents have modalities \['b'\]"):
        gens(FactorizedLatents(torch.randn(2, 3), {"b": torch.randn(2, 2)}))
    with pytest.raises(
        ValueError, match=r"latent 'a': expected a code of shape \(B, 2\), got \(2, 5\)"
    ):
        gens(FactorizedLatents(torch.randn(2, 3), {"a": torch.randn(2, 5)}))
