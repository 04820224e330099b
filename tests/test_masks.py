import pytest
import torch

from factorkit import any_present, check_presence, fill_absent, random_presence


def test_random_presence_keeps_one_modality_and_matches_rate() -> None:
    gen = torch.Generator().manual_seed(1)
    present = random_presence(["a", "b", "c"], 20000, 0.3, generator=gen)
    stacked = torch.stack(list(present.values()))
    assert stacked.any(dim=0).all()
    # Drop rate 0.3; all-dropped samples (0.3^3 = 2.7%) get one modality back: 0.3 - 0.027/3.
    assert abs((~stacked).float().mean().item() - (0.3 - 0.3**3 / 3)) < 0.01
    assert list(present) == ["a", "b", "c"]


def test_random_presence_is_reproducible_and_validates_rate() -> None:
    a = random_presence(["x", "y"], 50, 0.5, generator=torch.Generator().manual_seed(3))
    b = random_presence(["x", "y"], 50, 0.5, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="missing_rate"):
        random_presence(["x"], 3, 1.0)


def test_fill_absent_is_nan_safe() -> None:
    x = torch.tensor([[1.0, 2.0], [float("nan"), float("inf")]])
    out = fill_absent(x, torch.tensor([True, False]))
    assert torch.equal(out, torch.tensor([[1.0, 2.0], [0.0, 0.0]]))
    images = torch.full((2, 1, 2, 2), float("nan"))
    assert torch.equal(fill_absent(images, torch.tensor([False, False])), torch.zeros(2, 1, 2, 2))


def test_check_presence_errors_name_modality_and_shapes() -> None:
    with pytest.raises(ValueError, match=r"modality 'a'.*shape \(4,\), got \(3,\)"):
        check_presence({"a": torch.ones(3, dtype=torch.bool)}, ["a"], 4)
    with pytest.raises(ValueError, match=r"modality 'a'.*bool"):
        check_presence({"a": torch.ones(4)}, ["a"], 4)
    with pytest.raises(ValueError, match=r"missing \['b'\].*unknown \['c'\]"):
        check_presence(
            {"a": torch.ones(4, dtype=torch.bool), "c": torch.ones(4, dtype=torch.bool)},
            ["a", "b"],
            4,
        )


def test_any_present() -> None:
    m = {"a": torch.tensor([True, False, False]), "b": torch.tensor([False, False, True])}
    assert torch.equal(any_present(m), torch.tensor([True, False, True]))


def test_random_presence_edge_values_of_size_and_rate() -> None:
    # batch_size 0 is allowed: empty masks, one per modality.
    empty = random_presence(["b", "a"], 0, 0.5)
    assert list(empty) == ["a", "b"] and all(m.shape == (0,) for m in empty.values())
    # missing_rate 0 keeps everything.
    full = random_presence(["b", "a", "c"], 6, 0.0, generator=torch.Generator().manual_seed(0))
    assert all(m.tolist() == [True] * 6 for m in full.values())
    # With a rate near 1 almost every sample keeps exactly the one rescued modality.
    sparse = random_presence(
        ["a", "b", "c"], 500, 0.999, generator=torch.Generator().manual_seed(1)
    )
    kept = torch.stack(list(sparse.values())).sum(0)
    assert kept.min() == 1 and (kept == 1).float().mean() > 0.99


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("ab", 4, 0.5), "not the string 'ab'"),
        ((["a", "a"], 4, 0.5), r"names repeat a modality: \['a', 'a'\]"),
        ((["a"], -1, 0.5), "batch_size must be an int >= 0, got -1"),
        ((["a"], 2.0, 0.5), "batch_size must be an int >= 0, got 2.0"),
        ((["a"], True, 0.5), "batch_size must be an int >= 0, got True"),
        ((["a"], 4, "0.5"), r"missing_rate must be a number in \[0, 1\), got '0.5'"),
        ((["a"], 4, True), r"missing_rate must be a number in \[0, 1\), got True"),
        ((["a"], 4, -0.1), r"missing_rate must be a number in \[0, 1\), got -0.1"),
        ((["a"], 4, 1.0), r"missing_rate must be a number in \[0, 1\), got 1.0"),
    ],
)
def test_random_presence_errors_name_the_argument_and_value(
    args: tuple[object, object, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        random_presence(*args)  # type: ignore[arg-type]


def test_random_presence_masks_live_on_the_requested_device() -> None:
    present = random_presence(["a", "b"], 5, 0.5, device="meta")
    assert all(m.device.type == "meta" and m.shape == (5,) for m in present.values())


def test_fill_absent_keeps_dtype_and_accepts_vectors_and_a_fill_value() -> None:
    ints = torch.tensor([[1, 2], [3, 4], [5, 6]])
    out = fill_absent(ints, torch.tensor([False, True, False]), value=-7)
    assert out.dtype == torch.int64 and out.tolist() == [[-7, -7], [3, 4], [-7, -7]]
    doubles = torch.tensor([0.1, 0.2], dtype=torch.float64)
    out = fill_absent(doubles, torch.tensor([True, False]), value=2.5)
    assert out.dtype == torch.float64 and out.tolist() == [0.1, 2.5]


def test_mask_errors_name_the_problem_and_the_shapes() -> None:
    with pytest.raises(
        ValueError,
        match=r"^fill_absent: expected a bool presence mask of shape \(B,\) for x of shape "
        r"\(3, 2\) \(B, \.\.\.\), got torch.int64 \(3,\)$",
    ):
        fill_absent(torch.zeros(3, 2), torch.ones(3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got torch.bool \(2,\)$"):
        fill_absent(torch.zeros(3, 2), torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"for x of shape \(\) \(B, \.\.\.\)"):
        fill_absent(torch.tensor(1.0), torch.ones((), dtype=torch.bool))
    with pytest.raises(ValueError, match=r"^any_present: the presence mask names no modality$"):
        any_present({})
    with pytest.raises(
        ValueError,
        match=r"^any_present: presence masks differ in shape: \{'a': \(3,\), 'b': \(4,\)\}$",
    ):
        any_present({"b": torch.ones(4, dtype=torch.bool), "a": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(
        ValueError, match=r"^modality 'a': presence mask must be a bool tensor, got list$"
    ):
        check_presence({"a": [True, False]}, ["a"], 2)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="presence mask modalities"):
        check_presence({}, ["a"], 2)
