import pytest
import torch

from factorkit import FactorGenerator, FactorGenerators, FactorizedHead, FactorizedLatents


def test_generator_is_linear_relu_dropout_linear_relu() -> None:
    gen = FactorGenerator(4, 6, hidden_size=5, dropout=0.5).eval()
    z = torch.randn(3, 4)
    l1, l2 = gen.net[0], gen.net[3]
    expected = torch.relu(torch.relu(z @ l1.weight.T + l1.bias) @ l2.weight.T + l2.bias)
    torch.testing.assert_close(gen(z), expected)
    assert (gen(z) >= 0).all()
    gen.train()
    torch.manual_seed(1)
    assert not torch.equal(gen(z), expected)  # dropout is active in training


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
