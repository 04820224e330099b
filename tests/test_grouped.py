import itertools

import pytest
import torch

from factorkit._grouped import GroupedLinear, GroupedMLP

WIDTHS = {"a": [4, 6, 3], "b": [4, 6, 3], "c": [4, 6, 5], "d": [2, 3]}


def inputs(batch: int = 5, dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {n: torch.randn(batch, w[0], generator=g, dtype=dtype) for n, w in WIDTHS.items()}


def naive(mlps: GroupedMLP, name: str, x: torch.Tensor) -> torch.Tensor:
    layers = mlps.layers_of(name)
    for i, (weight, bias) in enumerate(layers):
        x = x @ weight + bias
        if i < len(layers) - 1 or mlps.output_activation:
            x = torch.relu(x)
    return x


@pytest.mark.parametrize("output_activation", [False, True])
def test_grouped_mlp_equals_one_naive_mlp_per_name(output_activation: bool) -> None:
    mlps = GroupedMLP(WIDTHS, output_activation=output_activation).double()
    x = inputs()
    out = mlps(x)
    assert list(out) == list(x)
    for name in WIDTHS:
        torch.testing.assert_close(out[name], naive(mlps, name, x[name]), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(
            mlps.forward_one(name, x[name]), out[name], rtol=1e-12, atol=1e-12
        )


def test_layers_are_grouped_by_size_and_position() -> None:
    mlps = GroupedMLP(WIDTHS)
    # Layer 0: a, b, c share (4 -> 6, hidden); d is a one-layer MLP (2 -> 3, last).
    assert mlps.groups[0] == [("a", "b", "c"), ("d",)]
    # Layer 1: a, b share (6 -> 3); c's output size differs.
    assert mlps.groups[1] == [("a", "b"), ("c",)]
    assert sum(p.numel() for p in mlps.parameters()) == sum(
        sum(i * o + o for i, o in itertools.pairwise(w)) for w in WIDTHS.values()
    )


def test_each_output_depends_only_on_its_own_input_and_weights() -> None:
    mlps = GroupedMLP(WIDTHS).double()
    x = {n: t.requires_grad_(True) for n, t in inputs().items()}
    out = mlps(x)
    for name in WIDTHS:
        grads = torch.autograd.grad(
            out[name].sum(), [*x.values()], allow_unused=True, retain_graph=True
        )
        for other, grad in zip(x, grads, strict=True):
            assert (grad is not None and bool(grad.abs().sum() > 0)) == (other == name)
        # Weights of the other members of a shared group get exactly zero gradient.
        mlps.zero_grad()
        mlps(x)[name].sum().backward()
        for other in WIDTHS:
            total = 0.0
            for layer, groups in enumerate(mlps.groups):
                for g, names in enumerate(groups):
                    weight = mlps.layers[layer][g].weight  # type: ignore[index]
                    if other in names and weight.grad is not None:
                        total += float(weight.grad[names.index(other)].abs().sum())
            assert (total > 0) == (other == name)


def test_dropout_only_in_training_and_between_layers() -> None:
    mlps = GroupedMLP(WIDTHS, dropout=0.5).double()
    x = inputs(batch=64)
    mlps.eval()
    for name in WIDTHS:
        torch.testing.assert_close(mlps(x)[name], naive(mlps, name, x[name]))
    mlps.train()
    torch.manual_seed(0)
    # "d" has no hidden layer, so no dropout; the others do.
    torch.testing.assert_close(mlps(x)["d"], naive(mlps, "d", x["d"]))
    assert not torch.allclose(mlps(x)["a"], naive(mlps, "a", x["a"]))


def test_state_dict_round_trip_is_bit_identical() -> None:
    first, second = GroupedMLP(WIDTHS), GroupedMLP(WIDTHS)
    second.load_state_dict(first.state_dict())
    x = inputs(dtype=torch.float32)
    for name, value in first(x).items():
        assert torch.equal(value, second(x)[name])


def test_grouped_linear_members_are_initialised_like_nn_linear() -> None:
    layer = GroupedLinear(3, 100, 50).requires_grad_(False)
    bound = 1.0 / 100**0.5
    assert float(layer.weight.abs().max()) <= bound and float(layer.bias.abs().max()) <= bound
    # Uniform on (-b, b): the standard deviation is b / sqrt(3), per member.
    for g in range(3):
        assert abs(float(layer.weight[g].std()) - bound / 3**0.5) < 0.05 * bound
    x = torch.randn(3, 7, 100)
    expected = torch.stack([x[g] @ layer.weight[g] + layer.bias[g] for g in range(3)])
    torch.testing.assert_close(layer(x), expected)


def test_bad_inputs_name_the_member_and_shapes() -> None:
    mlps = GroupedMLP(WIDTHS)
    x = inputs(dtype=torch.float32)
    with pytest.raises(
        ValueError, match=r"modality 'c': expected inputs of shape \(B, 4\), got \(5, 3\)"
    ):
        mlps({**x, "c": torch.randn(5, 3)})
    with pytest.raises(ValueError, match=r"batch size 4 differs"):
        mlps({**x, "d": torch.randn(4, 2)})
    with pytest.raises(ValueError, match=r"missing \['d'\]"):
        mlps({n: t for n, t in x.items() if n != "d"})
    with pytest.raises(ValueError, match=r"no MLP named 'e'"):
        mlps.forward_one("e", x["a"])
    with pytest.raises(
        ValueError, match=r"modality 'a': inputs of dtype torch.float64 .* expected torch.float32"
    ):
        mlps({**x, "a": x["a"].double()})
    with pytest.raises(ValueError, match=r"needs at least two entries"):
        GroupedMLP({"a": [3]})
    with pytest.raises(ValueError, match=r"expected input of shape \(3, B, 4\), got \(2, 5, 4\)"):
        GroupedLinear(3, 4, 2)(torch.randn(2, 5, 4))


def test_grouped_mlp_compiles_without_graph_breaks() -> None:
    mlps = GroupedMLP(WIDTHS, dropout=0.1).eval()
    x = inputs(dtype=torch.float32)
    compiled = torch.compile(mlps, fullgraph=True, backend="aot_eager")
    for name, value in compiled(x).items():
        torch.testing.assert_close(value, mlps(x)[name])
