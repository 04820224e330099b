"""Robustness curves: the masks, their rate, the same drops for every method, the area."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from examples.robustness import (
    RATES,
    at_every_rate,
    expected_missing_fraction,
    imputed,
    mixed_rate_presence,
    plot_curves,
    rate_key,
    rate_masks,
    robustness_curves,
)
from examples.seeds import summarise
from examples.training import Split

NAMES = ["a", "b", "c"]


def stacked(present: Mapping[str, Tensor]) -> Tensor:
    return torch.stack([present[m] for m in sorted(present)], dim=1)


def test_rates_are_zero_to_ninety_percent() -> None:
    assert [round(10 * r) for r in RATES] == list(range(10))
    assert [rate_key(r) for r in RATES[:2]] == ["rate_0.0", "rate_0.1"]


def test_masks_keep_a_view_and_drop_at_the_expected_rate() -> None:
    n = 20_000
    masks = rate_masks(NAMES, n, seed=5)
    assert stacked(masks[0.0]).all()
    for rate, present in masks.items():
        kept = stacked(present)
        assert kept.any(dim=1).all(), rate
        # Missing views per sample: its mean over samples against r - r^M / M, within
        # four standard errors.
        missing = (~kept).sum(1).double() / len(NAMES)
        error = float(missing.std()) / n**0.5
        expected = expected_missing_fraction(rate, len(NAMES))
        assert abs(float(missing.mean()) - expected) <= 4 * error + 1e-12, rate
    # With six views at r = 0.9 the realised fraction is visibly below r.
    assert expected_missing_fraction(0.9, 6) == pytest.approx(0.9 - 0.9**6 / 6)


def test_masks_are_seeded_and_nested_across_rates() -> None:
    one, again = rate_masks(NAMES, 500, seed=1), rate_masks(NAMES, 500, seed=1)
    other = rate_masks(NAMES, 500, seed=2)
    for r in RATES:
        assert torch.equal(stacked(one[r]), stacked(again[r]))
    assert not torch.equal(stacked(one[0.5]), stacked(other[0.5]))
    # A view dropped at a rate stays dropped at every higher rate, unless it is the one
    # view restored there.
    for low, high in itertools.pairwise(RATES):
        revived = ~stacked(one[low]) & stacked(one[high])
        alone = stacked(one[high]).sum(1) == 1
        assert (alone[revived.any(1)]).all(), (low, high)


def oracle_data(n: int = 2500, classes: int = 4) -> Split:
    """View a is the label one-hot, view b the next class one-hot, c noise."""
    labels = torch.arange(n) % classes
    views = {
        "a": F.one_hot(labels, classes).float(),
        "b": F.one_hot((labels + 1) % classes, classes).float(),
        "c": torch.randn(n, 3),
    }
    return Split(views, labels)


def test_every_method_gets_the_same_masks_and_its_exact_accuracy() -> None:
    test = oracle_data()
    seen: dict[str, list[Tensor]] = {"first": [], "second": []}

    def recorder(name: str):  # type: ignore[no-untyped-def]
        def predict(views: Mapping[str, Tensor], present: Mapping[str, Tensor] | None) -> Tensor:
            assert present is not None
            seen[name].append(stacked(present))
            # Right exactly when view a is observed.
            return torch.where(present["a"][:, None], views["a"], views["b"])

        return predict

    curves = robustness_curves(
        {"first": recorder("first"), "second": recorder("second")}, test, seed=9
    )
    assert torch.equal(torch.cat(seen["first"]), torch.cat(seen["second"]))
    masks = rate_masks(NAMES, len(test), seed=9)
    assert torch.equal(torch.cat(seen["first"]), torch.cat([stacked(masks[r]) for r in RATES]))
    for r in RATES:
        expected = int(masks[r]["a"].sum()) / len(test)
        assert curves["first"][rate_key(r)] == pytest.approx(expected, abs=1e-12)
    values = [curves["first"][rate_key(r)] for r in RATES]
    assert curves["first"]["area"] == pytest.approx(sum(values) / len(values), abs=1e-12)
    assert curves["first"] == curves["second"]
    assert curves["first"][rate_key(0.0)] == 1.0
    # View a survives r = 0.9 with probability 0.1 + 0.9^3 / 3 = 0.343 (std error 0.0095).
    kept = 1 - expected_missing_fraction(0.9, 3)
    assert curves["first"][rate_key(0.9)] == pytest.approx(kept, abs=0.04)


def test_curves_summarise_over_seeds_and_plot(tmp_path: Path) -> None:
    test = oracle_data(600)

    def predict(views: Mapping[str, Tensor], present: Mapping[str, Tensor] | None) -> Tensor:
        assert present is not None
        return torch.where(present["a"][:, None], views["a"], views["b"])

    def always(views: Mapping[str, Tensor], present: Mapping[str, Tensor] | None) -> Tensor:
        return views["a"]

    runs = {
        s: robustness_curves({"oracle": predict, "full": always}, test, seed=s) for s in range(3)
    }
    summary = summarise(runs, reference="full")
    area = summary["models"]["oracle"]["area"]
    assert area["values"] == [round(runs[s]["oracle"]["area"], 4) for s in range(3)]
    assert summary["models"]["full"]["area"] == {"mean": 1.0, "std": 0.0, "values": [1.0] * 3}
    assert summary["differences"]["oracle"]["area"]["low"] > 0
    json.dumps(summary, allow_nan=False)
    for seeds in (summary, summarise({0: runs[0]})):
        path = plot_curves(seeds, tmp_path / f"robustness_{len(seeds['seeds'])}.png", title="t")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000


def test_imputed_fills_absent_rows_only() -> None:
    views = {"a": torch.arange(6.0).reshape(3, 2), "b": torch.ones(3, 1, 2, 2)}
    present = {"a": torch.tensor([True, False, True]), "b": torch.tensor([False, True, True])}
    fill = {"a": torch.tensor([-1.0, -2.0]), "b": torch.full((1, 2, 2), 7.0)}
    seen = {}

    def predict(v: Mapping[str, Tensor], p: Mapping[str, Tensor] | None) -> Tensor:
        assert p is None
        seen.update(v)
        return torch.zeros(3, 2)

    imputed(predict, fill)(views, present)
    assert torch.equal(seen["a"], torch.tensor([[0.0, 1.0], [-1.0, -2.0], [4.0, 5.0]]))
    assert torch.equal(seen["b"][0], torch.full((1, 2, 2), 7.0))
    assert torch.equal(seen["b"][1:], torch.ones(2, 1, 2, 2))
    imputed(predict, fill)(views, None)
    assert seen["a"] is views["a"]


def test_mixed_rate_presence_draws_every_rate() -> None:
    draw = mixed_rate_presence(NAMES, rates=(0.0, 0.9))
    generator = torch.Generator().manual_seed(0)
    high = expected_missing_fraction(0.9, 3)  # 0.657
    counts = {0.0: 0, 0.9: 0}
    for _ in range(40):
        kept = stacked(draw(400, generator))
        assert kept.any(1).all()
        fraction = float((~kept).float().mean())
        # Rate 0 leaves the batch complete; rate 0.9 drops 0.657 +- 0.014 (std error).
        rate = 0.0 if fraction == 0.0 else 0.9
        assert rate == 0.0 or abs(fraction - high) < 0.055, fraction
        counts[rate] += 1
    assert min(counts.values()) >= 10, counts


def test_at_every_rate_stacks_the_masks_of_every_rate() -> None:
    test = oracle_data(50)
    stacked_split = at_every_rate(test, seed=3, rates=(0.0, 0.5, 0.9))
    assert len(stacked_split) == 150
    masks = rate_masks(NAMES, 50, seed=3, rates=(0.0, 0.5, 0.9))
    assert stacked_split.present is not None
    for i, r in enumerate((0.0, 0.5, 0.9)):
        part = slice(50 * i, 50 * (i + 1))
        assert torch.equal(stacked_split.labels[part], test.labels)
        assert torch.equal(stacked_split.views["c"][part], test.views["c"])
        for m in NAMES:
            assert torch.equal(stacked_split.present[m][part], masks[r][m])
