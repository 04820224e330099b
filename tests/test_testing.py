import pytest
import torch

from factorkit.probes import linear_probe_accuracy, linear_probe_r2
from factorkit.testing import make_synthetic_views


def test_deterministic_by_seed() -> None:
    a = make_synthetic_views(50, seed=3)
    b = make_synthetic_views(50, seed=3)
    c = make_synthetic_views(50, seed=4)
    for m in a.views:
        assert torch.equal(a.views[m], b.views[m]) and torch.equal(a.private[m], b.private[m])
        assert not torch.equal(a.views[m], c.views[m])
    assert torch.equal(a.shared, b.shared) and torch.equal(a.labels, b.labels)


def test_sample_seed_draws_new_samples_from_the_same_world() -> None:
    first = make_synthetic_views(30, seed=0, sample_seed=7)
    other_world = make_synthetic_views(30, seed=1, sample_seed=7)
    fresh = make_synthetic_views(30, seed=0, sample_seed=8)
    # The sample seed alone fixes the factors; the world (seed) fixes the mixing.
    assert torch.equal(first.shared, other_world.shared)
    assert torch.equal(first.private["a"], other_world.private["a"])
    assert not torch.equal(first.views["a"], other_world.views["a"])
    assert not torch.equal(first.shared, fresh.shared)


def test_shapes_names_and_dtypes() -> None:
    data = make_synthetic_views(
        40, view_sizes={"z": 5, "b": 7}, shared_size=3, private_size={"z": 1, "b": 2}
    )
    assert list(data.views) == ["b", "z"] and list(data.private) == ["b", "z"]
    assert data.views["z"].shape == (40, 5) and data.views["b"].shape == (40, 7)
    assert data.private["z"].shape == (40, 1) and data.private["b"].shape == (40, 2)
    assert data.shared.shape == (40, 3) and data.labels.shape == (40,)
    assert data.labels.dtype == torch.int64 and data.views["b"].dtype == torch.float32


def test_noise_is_additive_gaussian_with_the_given_scale() -> None:
    clean = make_synthetic_views(4000, noise=0.0, seed=2)
    noisy = make_synthetic_views(4000, noise=0.3, seed=2)
    for m in clean.views:
        diff = noisy.views[m] - clean.views[m]
        assert abs(diff.std().item() - 0.3) < 0.01 and abs(diff.mean().item()) < 0.01


def test_factor_structure() -> None:
    data = make_synthetic_views(4000, noise=0.0, num_classes=3, seed=5)
    # The label is a linear argmax of the shared factors, independent of the private ones.
    assert linear_probe_accuracy(data.shared, data.labels, weight_decay=1e-6).item() >= 0.98
    counts = torch.bincount(data.labels, minlength=3)
    majority = counts.max().item() / 4000
    assert counts.min().item() > 400
    for m in data.views:
        assert linear_probe_accuracy(data.private[m], data.labels).item() < majority + 0.03
    a_from = torch.cat([data.shared, data.private["a"]], 1)
    # View a depends on s and p_a only, non-linearly: linear in them explains part, not all.
    explained = linear_probe_r2(a_from, data.views["a"]).item()
    assert 0.5 < explained < 0.95
    assert abs(linear_probe_r2(data.private["b"], data.views["a"]).item()) < 0.02
    # Both factors are recoverable from the noise-free view they drive.
    assert linear_probe_r2(data.views["a"], data.private["a"]).item() > 0.8
    assert linear_probe_r2(data.views["a"], data.shared).item() > 0.8


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        make_synthetic_views(10, num_classes=1)
    with pytest.raises(ValueError, match="noise must be >= 0"):
        make_synthetic_views(10, noise=-1.0)
    with pytest.raises(ValueError, match=r"private_size: missing \['b'\]"):
        make_synthetic_views(10, private_size={"a": 2})
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        make_synthetic_views(0)


def test_documented_defaults() -> None:
    data = make_synthetic_views(20)
    assert {m: tuple(x.shape) for m, x in data.views.items()} == {"a": (20, 24), "b": (20, 32)}
    assert {m: tuple(p.shape) for m, p in data.private.items()} == {"a": (20, 2), "b": (20, 2)}
    assert data.shared.shape == (20, 2) and int(data.labels.max()) <= 2
    explicit = make_synthetic_views(
        20,
        view_sizes={"a": 24, "b": 32},
        shared_size=2,
        private_size=2,
        num_classes=3,
        hidden_size=32,
        noise=0.1,
        seed=0,
    )
    for m in ("a", "b"):
        assert torch.equal(data.views[m], explicit.views[m])
    assert torch.equal(data.labels, explicit.labels)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_samples": 0}, r"^num_samples must be a positive int, got 0$"),
        ({"shared_size": 0}, r"^shared_size must be a positive int, got 0$"),
        ({"hidden_size": -1}, r"^hidden_size must be a positive int, got -1$"),
        ({"view_sizes": {"a": 3, "b": 0}}, r"^view_sizes\['b'\] must be a positive int, got 0$"),
        ({"private_size": {"a": 1, "b": 2.0}}, r"^private_size\['b'\] must be a positive int"),
    ],
)
def test_size_errors_name_the_argument(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"num_samples": 10, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_synthetic_views(**args)  # type: ignore[arg-type]
