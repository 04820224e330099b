import pytest
import torch

from factorkit import FactorizedLatents

# Fixed values, written out so every check compares with numbers, not with another copy.
SHARED = [[1.0, -2.0, 0.5, 3.0], [0.0, 4.0, -1.0, 2.0], [7.0, 0.25, -3.0, 1.5]]
PRIV_A = [[1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5, [-1.0, -2.0, -3.0, -4.0, -5.0]]
PRIV_B = [[0.5, -0.5], [0.0, 0.0], [2.0, 8.0]]
MASK_A = [False, False, True]
MASK_B = [True, False, True]


def make(present: bool = False, requires_grad: bool = False) -> FactorizedLatents:
    mask = {"b": torch.tensor(MASK_B), "a": torch.tensor(MASK_A)}
    return FactorizedLatents(
        torch.tensor(SHARED, requires_grad=requires_grad),
        {"b": torch.tensor(PRIV_B), "a": torch.tensor(PRIV_A)},
        mask if present else None,
    )


def test_items_lists_shared_first_then_modalities_sorted() -> None:
    z = make(present=True)
    assert [(name, t.tolist()) for name, t in z.items()] == [
        ("shared", SHARED),
        ("a", PRIV_A),
        ("b", PRIV_B),
    ]
    assert z.modalities == ("a", "b")
    assert list(z.private) == ["a", "b"]
    assert z.present is not None and list(z.present) == ["a", "b"]
    assert z.batch_size == 3  # B, not Dy = 4


def test_mask_of_shared_is_any_modality_present() -> None:
    z = make(present=True)
    assert z.mask("shared") is not None
    assert z.mask("shared").tolist() == [True, False, True]  # type: ignore[union-attr]
    assert z.mask("a").tolist() == MASK_A  # type: ignore[union-attr]
    assert z.mask("b").tolist() == MASK_B  # type: ignore[union-attr]
    assert make().mask("a") is None and make().mask("shared") is None
    with pytest.raises(KeyError, match=r"no latent named 'c'; have \['shared', 'a', 'b'\]"):
        z.mask("c")


def test_detach_keeps_values_and_masks_and_cuts_the_graph() -> None:
    z = make(present=True, requires_grad=True)
    d = z.detach()
    assert z.shared.requires_grad and not d.shared.requires_grad
    assert [(name, t.tolist()) for name, t in d.items()] == [
        ("shared", SHARED),
        ("a", PRIV_A),
        ("b", PRIV_B),
    ]
    assert d.present is not None
    assert {k: m.tolist() for k, m in d.present.items()} == {"a": MASK_A, "b": MASK_B}
    assert all(t.grad_fn is None for _, t in d.items())


def test_to_casts_codes_but_keeps_masks_bool() -> None:
    z = make(present=True)
    z64 = z.to(torch.float64)
    for name, t in z64.items():
        assert t.dtype == torch.float64, name
    assert z64.shared.tolist() == SHARED and z64.private["a"].tolist() == PRIV_A
    assert z64.present is not None
    assert all(m.dtype == torch.bool for m in z64.present.values())
    assert {k: m.tolist() for k, m in z64.present.items()} == {"a": MASK_A, "b": MASK_B}
    assert make().to(torch.float64).present is None
    assert all(t.dtype == torch.float64 for _, t in z.to(dtype=torch.float64).items())


def test_to_moves_codes_and_masks_to_the_device() -> None:
    moved = make(present=True).to(device="meta")
    assert all(t.device.type == "meta" for _, t in moved.items())
    assert moved.present is not None
    assert all(m.device.type == "meta" and m.dtype == torch.bool for m in moved.present.values())


def test_map_applies_to_every_latent_by_name_and_keeps_the_mask() -> None:
    z = make(present=True)
    seen: list[str] = []

    def fn(name: str, t: torch.Tensor) -> torch.Tensor:
        seen.append(name)
        return t * 2 + (1.0 if name == "b" else 0.0)

    out = z.map(fn)
    assert seen == ["shared", "a", "b"]
    assert out.shared.tolist() == [[2 * v for v in row] for row in SHARED]
    assert out.private["a"].tolist() == [[2 * v for v in row] for row in PRIV_A]
    assert out.private["b"].tolist() == [[2 * v + 1 for v in row] for row in PRIV_B]
    assert out.present is not None
    assert {k: m.tolist() for k, m in out.present.items()} == {"a": MASK_A, "b": MASK_B}


def test_equality_compares_every_code_and_the_masks() -> None:
    assert make(True) == make(True)
    assert make() == make()
    assert make(True) != make()  # masks on one side only
    assert make() != make(True)
    changed_shared = make(True)
    changed_shared.shared[2, 3] = 0.0
    assert make(True) != changed_shared
    changed_private = make(True)
    changed_private.private["b"][0, 1] = 9.0
    assert make(True) != changed_private
    changed_mask = make(True)
    assert changed_mask.present is not None
    changed_mask.present["a"] = torch.tensor([True, False, True])
    assert make(True) != changed_mask
    fewer = FactorizedLatents(torch.tensor(SHARED), {"a": torch.tensor(PRIV_A)})
    assert make() != fewer
    other_mask_names = FactorizedLatents(
        torch.tensor(SHARED),
        {"b": torch.tensor(PRIV_B), "a": torch.tensor(PRIV_A)},
        {"a": torch.tensor(MASK_A), "c": torch.tensor(MASK_B)},
    )
    assert make(True) != other_mask_names
    assert make() != "not latents"
    with pytest.raises(TypeError, match="unhashable"):
        hash(make())


def test_repr_names_shapes() -> None:
    assert repr(make(True)) == "FactorizedLatents(shared=(3, 4), a=(3, 5), b=(3, 2), masked)"
    assert repr(make()) == "FactorizedLatents(shared=(3, 4), a=(3, 5), b=(3, 2))"
