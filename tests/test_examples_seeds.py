"""Summaries over seeds: hand-computed means, spreads and paired t intervals."""

from __future__ import annotations

import json
import math

import pytest

from examples.seeds import (
    format_mean_std,
    over_seeds,
    paired_interval,
    student_t_quantile,
    summarise,
)
from examples.seeds import student_t_cdf as t_cdf

# Printed tables of the two-sided 95% point t_{0.975, df}.
T_TABLE = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 29: 2.0452}

# The digits example's three seeds (README): MFM and discriminative test accuracies.
MFM = [0.986, 0.982, 0.980]
DISC = [0.976, 0.988, 0.982]


@pytest.mark.parametrize(("df", "value"), sorted(T_TABLE.items()))
def test_t_quantile_matches_the_printed_table(df: int, value: float) -> None:
    assert student_t_quantile(0.975, df) == pytest.approx(value, abs=6e-5)
    assert student_t_quantile(0.025, df) == pytest.approx(-value, abs=6e-5)


def test_t_distribution_closed_forms() -> None:
    # df = 1 is the Cauchy distribution, df = 2 has F(t) = 1/2 + t / (2 sqrt(2 + t^2)).
    for t in (-3.0, -0.5, 0.0, 0.7, 10.0):
        assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-14)
        assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-14)
    # Large df tends to the normal: Phi(1.959964) = 0.975.
    assert student_t_quantile(0.975, 2000) == pytest.approx(1.96, abs=2e-3)


def test_t_quantile_agrees_with_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for df in range(1, 41):
        for p in (0.6, 0.9, 0.975, 0.995):
            assert student_t_quantile(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)


def test_summary_matches_a_hand_computation() -> None:
    runs = {
        s: {"mfm": {"acc": m, "mse": 0.5}, "disc": {"acc": d}}
        for s, m, d in zip((0, 1, 2), MFM, DISC, strict=True)
    }
    summary = summarise(runs, reference="mfm", decimals=6)
    assert summary["seeds"] == [0, 1, 2]
    mfm = summary["models"]["mfm"]["acc"]
    assert mfm["values"] == MFM
    assert mfm["mean"] == pytest.approx(2.948 / 3, abs=1e-6)
    # Sample std: squared deviations from 0.982667 sum to 1.8667e-5 over n - 1 = 2.
    assert mfm["std"] == pytest.approx(math.sqrt(1.86667e-5 / 2), abs=1e-6)
    assert summary["models"]["mfm"]["mse"] == {"mean": 0.5, "std": 0.0, "values": [0.5] * 3}
    # Paired differences 0.010, -0.006, -0.002: mean 0.000667, std 0.008327.
    diff = summary["differences"]["disc"]
    assert list(diff) == ["acc"]  # only the metrics both models report
    d = diff["acc"]
    assert d["values"] == pytest.approx([0.010, -0.006, -0.002], abs=1e-9)
    assert d["mean"] == pytest.approx(0.000667, abs=1e-6)
    sd = math.sqrt((0.009333**2 + 0.006667**2 + 0.002667**2) / 2)
    assert d["std"] == pytest.approx(sd, abs=2e-6)
    half = 4.302653 * sd / math.sqrt(3)
    assert d["low"] == pytest.approx(0.000667 - half, abs=2e-6)
    assert d["high"] == pytest.approx(0.000667 + half, abs=2e-6)


def test_paired_interval_is_the_one_sample_interval_of_the_differences() -> None:
    """Paired: shifting both models by a per-seed amount changes nothing."""
    runs = {s: {"a": {"x": m}, "b": {"x": d}} for s, m, d in zip(range(3), MFM, DISC, strict=True)}
    shifted = {
        s: {"a": {"x": m + s * 0.1}, "b": {"x": d + s * 0.1}}
        for s, m, d in zip(range(3), MFM, DISC, strict=True)
    }
    one = summarise(runs, reference="a")["differences"]["b"]["x"]
    two = summarise(shifted, reference="a")["differences"]["b"]["x"]
    assert (one["low"], one["high"]) == (two["low"], two["high"])
    low, high = paired_interval([m - d for m, d in zip(MFM, DISC, strict=True)])
    assert (one["low"], one["high"]) == (round(low, 4), round(high, 4))


def test_one_seed_has_no_spread_and_no_interval() -> None:
    summary = summarise({7: {"mfm": {"acc": 0.98}, "disc": {"acc": 0.97}}}, reference="mfm")
    assert summary["models"]["mfm"]["acc"] == {"mean": 0.98, "std": None, "values": [0.98]}
    d = summary["differences"]["disc"]["acc"]
    assert d["mean"] == 0.01
    assert d["std"] is d["low"] is d["high"] is None
    assert paired_interval([0.01]) is None


def test_rounding_and_non_finite_values_give_valid_json() -> None:
    runs = {0: {"m": {"acc": 0.123456789, "mse": math.nan}}, 1: {"m": {"acc": 0.5, "mse": 1.0}}}
    summary = summarise(runs)
    assert summary["models"]["m"]["acc"]["values"] == [0.1235, 0.5]
    assert summary["models"]["m"]["mse"] == {"mean": None, "std": None, "values": [None, 1.0]}
    assert summary["differences"] == {}
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


def test_over_seeds_calls_each_seed_once() -> None:
    calls = []

    def run(seed: int) -> dict[str, dict[str, float]]:
        calls.append(seed)
        return {"mfm": {"acc": 0.9 + seed / 100}, "disc": {"acc": 0.9}}

    summary, runs = over_seeds(run, [3, 1, 2], reference="mfm")
    assert calls == [3, 1, 2]
    assert summary["seeds"] == [1, 2, 3]
    assert summary["models"]["mfm"]["acc"]["values"] == [0.91, 0.92, 0.93]
    assert summary["differences"]["disc"]["acc"]["mean"] == 0.02
    assert runs[3]["mfm"]["acc"] == pytest.approx(0.93)
    with pytest.raises(ValueError, match="distinct"):
        over_seeds(run, [1, 1])


def test_inconsistent_runs_and_unknown_reference_are_named() -> None:
    with pytest.raises(ValueError, match="seed 1 reports other models"):
        summarise({0: {"mfm": {"acc": 1.0}}, 1: {"mfm": {"mse": 1.0}}})
    with pytest.raises(ValueError, match="reference model 'mfm'"):
        summarise({0: {"disc": {"acc": 1.0}}}, reference="mfm")


def test_format_mean_std() -> None:
    assert format_mean_std({"mean": 0.98267, "std": 0.00306}) == "98.27 ± 0.31"
    assert format_mean_std({"mean": 0.98267, "std": 0.000306}, decimals=5) == "98.267 ± 0.031"
    # No more places than the summary kept: 4 decimals of a fraction are 2 of a percent.
    assert format_mean_std({"mean": 0.9827, "std": 0.0003}) == "98.27 ± 0.03"
    assert format_mean_std({"mean": 1.0233, "std": 0.0007}, scale=1) == "1.0233 ± 0.0007"
    assert format_mean_std({"mean": 0.98, "std": None}) == "98.00"
    assert format_mean_std({"mean": None, "std": None}) == "n/a"
    assert format_mean_std({"mean": 0.32, "std": 0.0}, scale=1) == "0.32 ± 0.00"
