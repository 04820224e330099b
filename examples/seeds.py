"""Results over several seeds: mean, spread, every seed's value, and paired differences.

A run of an example is a function of its seed (the split, the initialisation and the
batch order all follow it) that returns, for every model, a flat mapping metric -> value.
:func:`over_seeds` runs it for each seed and :func:`summarise` reduces the runs to, for
every model and metric, the mean, the sample standard deviation and every seed's value,
and for every baseline the paired difference ``reference - baseline`` with a 95% interval
over seeds. The difference is paired because both models of one seed saw the same split:
the split's luck (an easy or a hard test set) cancels, and the interval is the paired
Student-t interval

    mean(d) +- t_{0.975, n-1} * std(d) / sqrt(n),    d_s = reference_s - baseline_s.

With one seed there is no spread and no interval (``None`` in the output).

Every number is rounded to ``decimals`` places (default 4: a test accuracy of 0.9860 is
98.60 %, i.e. 0.01 point, finer than one test sample of any test set under 10,000
samples); a value that is not finite (a metric that does not apply) becomes ``None``, so
the summary is valid JSON.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = [
    "CONFIDENCE",
    "Metrics",
    "format_mean_std",
    "over_seeds",
    "paired_interval",
    "student_t_quantile",
    "summarise",
]

Metrics = Mapping[str, Mapping[str, float]]
"""One seed's results: model name -> metric name -> value."""

CONFIDENCE = 0.95
"""Coverage of the paired intervals."""


def student_t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with an integer number of degrees of freedom.

    The finite series of Abramowitz & Stegun 26.7.3-4 in theta = atan(t / sqrt(df)):
    exact up to round-off for every df, so no scipy is needed.
    """
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    theta = math.atan(abs(t) / math.sqrt(df))
    sin, cos2 = math.sin(theta), math.cos(theta) ** 2
    if df % 2 == 1:
        term, series = math.cos(theta), 0.0
        for k in range(1, (df - 1) // 2 + 1):
            series += term
            term *= cos2 * (2 * k) / (2 * k + 1)
        central = 2 / math.pi * (theta + sin * series)
    else:
        term, series = 1.0, 0.0
        for k in range(1, df // 2 + 1):
            series += term
            term *= cos2 * (2 * k - 1) / (2 * k)
        central = sin * series
    return 0.5 + math.copysign(central, t) / 2


def student_t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (bisection on the CDF).

    Examples:
        >>> round(student_t_quantile(0.975, 4), 4)
        2.7764
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -student_t_quantile(1.0 - p, df)
    low, high = 0.0, 1.0
    while student_t_cdf(high, df) < p:
        low, high = high, 2 * high
    for _ in range(200):  # the bracket halves each time: far below float resolution
        middle = (low + high) / 2
        low, high = (middle, high) if student_t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def paired_interval(
    differences: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float] | None:
    """The paired Student-t interval of the mean difference; ``None`` for one value."""
    n = len(differences)
    if n < 2:
        return None
    mean = statistics.fmean(differences)
    half = student_t_quantile((1 + confidence) / 2, n - 1) * statistics.stdev(differences)
    half /= math.sqrt(n)
    return mean - half, mean + half


def _rounded(value: float | None, decimals: int) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(value, decimals)


def _describe(values: Sequence[float], decimals: int) -> dict[str, Any]:
    """Mean, sample std and every value (``None`` where not finite or undefined)."""
    finite = all(math.isfinite(v) for v in values)
    mean = statistics.fmean(values) if finite else None
    std = statistics.stdev(values) if finite and len(values) > 1 else None
    return {
        "mean": _rounded(mean, decimals),
        "std": _rounded(std, decimals),
        "values": [_rounded(v, decimals) for v in values],
    }


def _check_same_keys(seeds: Sequence[int], runs: Sequence[Metrics]) -> None:
    first = {model: sorted(metrics) for model, metrics in runs[0].items()}
    for seed, run in zip(seeds[1:], runs[1:], strict=True):
        keys = {model: sorted(metrics) for model, metrics in run.items()}
        if keys != first:
            raise ValueError(
                f"seed {seed} reports other models or metrics than seed {seeds[0]}: "
                f"{keys} vs {first}"
            )


def summarise(
    runs: Mapping[int, Metrics],
    *,
    reference: str | None = None,
    decimals: int = 4,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """Mean, sample std and values of every model and metric, and paired differences.

    Args:
        runs: seed -> that seed's :data:`Metrics`; every seed must report the same
            models and metrics.
        reference: the model compared with every other model (e.g. ``"mfm"``), on every
            metric they share; ``None`` for no differences.
        decimals: places every reported number is rounded to.
        confidence: coverage of the intervals.

    Returns:
        ``{"seeds": [...], "models": {model: {metric: {"mean", "std", "values"}}},
        "differences": {baseline: {metric: {"mean", "std", "low", "high", "values"}}}}``
        where a difference is ``reference - baseline`` seed by seed, and ``low``/``high``
        bound its mean at ``confidence`` (``None`` with one seed).
    """
    if not runs:
        raise ValueError("no runs to summarise")
    seeds = sorted(runs)
    ordered = [runs[s] for s in seeds]
    _check_same_keys(seeds, ordered)
    if reference is not None and reference not in ordered[0]:
        raise ValueError(f"reference model {reference!r} is not among {sorted(ordered[0])}")
    models = {
        model: {
            metric: _describe([float(run[model][metric]) for run in ordered], decimals)
            for metric in metrics
        }
        for model, metrics in ordered[0].items()
    }
    differences: dict[str, dict[str, Any]] = {}
    for model, metrics in ordered[0].items():
        if reference is None or model == reference:
            continue
        shared = [m for m in metrics if m in ordered[0][reference]]
        differences[model] = {}
        for metric in shared:
            d = [float(run[reference][metric]) - float(run[model][metric]) for run in ordered]
            entry = _describe(d, decimals)
            finite = entry["mean"] is not None
            interval = paired_interval(d, confidence) if finite else None
            entry["low"], entry["high"] = (
                (None, None) if interval is None else (_rounded(v, decimals) for v in interval)
            )
            differences[model][metric] = entry
    return {"seeds": seeds, "reference": reference, "models": models, "differences": differences}


def over_seeds(
    run: Callable[[int], Metrics],
    seeds: Sequence[int],
    *,
    reference: str | None = None,
    decimals: int = 4,
) -> tuple[dict[str, Any], dict[int, Metrics]]:
    """Call ``run(seed)`` for every seed; return the :func:`summarise` summary and the runs."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct, got {list(seeds)}")
    runs = {seed: run(seed) for seed in seeds}
    return summarise(runs, reference=reference, decimals=decimals), runs


def format_mean_std(entry: Mapping[str, Any], scale: float = 100.0, decimals: int = 4) -> str:
    """``"98.27 ± 0.31"``: the mean and std of a summary entry, times ``scale``.

    The std gets two significant digits and the mean as many decimals: at least two, and
    no more than the summary kept (``decimals`` places before scaling). One seed gives
    the mean alone.
    """
    mean, std = entry["mean"], entry.get("std")
    if mean is None:
        return "n/a"
    kept = max(0, decimals - round(math.log10(scale)))
    if std is None:
        return f"{scale * mean:.{min(2, kept)}f}"
    spread = scale * std
    places = 2 if spread == 0 else max(2, 1 - math.floor(math.log10(spread)))
    places = min(places, kept)
    return f"{scale * mean:.{places}f} ± {spread:.{places}f}"
