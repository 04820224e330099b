import pytest
import torch

from factorkit import FactorizedLatents


def make(present: bool = False) -> FactorizedLatents:
    mask = {"b": torch.tensor([True, False, True]), "a": torch.tensor([False, False, True])}
    return FactorizedLatents(
        torch.randn(3, 4, requires_grad=True),
        {"b": torch.randn(3, 2), "a": torch.randn(3, 5)},
        mask if present else None,
    )


def test_items_lists_shared_first_then_modalities_sorted() -> None:
    z = make()
    assert [name for name, _ in z.items()] == ["shared", "a", "b"]
    assert z.modalities == ("a", "b")
    assert z.batch_size == 3


def test_mask_of_shared_is_any_modality_present() -> None:
    z = make(present=True)
    assert torch.equal(z.mask("shared"), torch.tensor([True, False, True]))
    assert torch.equal(z.mask("a"), torch.tensor([False, False, True]))
    assert make().mask("a") is None
    with pytest.raises(KeyError, match="no latent named 'c'"):
        z.mask("c")


def test_detach_and_to_keep_values_and_masks() -> None:
    z = make(present=True)
    d = z.detach()
    assert not d.shared.requires_grad
    assert d == z.detach()
    z64 = z.to(torch.float64)
    assert z64.shared.dtype == torch.float64
    assert torch.equal(z64.private["a"], z.private["a"].double())
    assert z64.present is not None and torch.equal(z64.present["b"], z.present["b"])  # type: ignore[index]


def test_map_applies_to_every_latent() -> None:
    z = make()
    doubled = z.map(lambda _, t: 2 * t)
    for (_, a), (_, b) in zip(z.items(), doubled.items(), strict=True):
        torch.testing.assert_close(2 * a, b)


def test_repr_names_shapes() -> None:
    assert repr(make(True)) == "FactorizedLatents(shared=(3, 4), a=(3, 5), b=(3, 2), masked)"
