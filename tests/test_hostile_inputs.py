"""Hostile inputs to the metrics, the mask helpers and the example data loaders.

Inputs a careless or hostile user could pass (issue 14, items 5 and 6): each case asserts
either the correct value, against an exact (``Decimal``/``Fraction``) or float64
reference, or the error's type and message. Damaged files are made from valid ones by
truncation, byte flips and random bytes; every outcome must be a correct load or a
ValueError that names the file.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
from collections.abc import Callable
from decimal import Decimal, localcontext
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from examples.multiview_data import load_npz
from examples.sentiment_data import load_csd, load_mfn_h5, load_multibench_pickle
from factorkit import any_present, check_presence, fill_absent, random_presence
from factorkit.metrics import (
    accuracy,
    accuracy_2,
    accuracy_7,
    f1,
    mae,
    pearson_corr,
    per_target_corr,
    per_target_mae,
    weighted_f1,
)

Call = Callable[[], object]

# ---------------------------------------------------------------------------- metrics


def _exact_corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of float64 data in 60-digit decimal arithmetic."""
    with localcontext() as context:
        context.prec = 60
        a, b = [Decimal(float(v)) for v in x], [Decimal(float(v)) for v in y]
        ma, mb = sum(a) / len(a), sum(b) / len(b)
        da, db = [v - ma for v in a], [v - mb for v in b]
        cov = sum(p * q for p, q in zip(da, db, strict=True))
        norm = (sum(p * p for p in da) * sum(q * q for q in db)).sqrt()
        return float(cov / norm)


@pytest.mark.parametrize("scale_y", [1e-200, 1.0, 1e200])
@pytest.mark.parametrize("scale_hat", [1e-300, 1e-200, 1e-100, 1.0, 1e100, 1e200, 1e300])
def test_pearson_corr_is_exact_at_every_scale(scale_hat: float, scale_y: float) -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=40)
    y = 0.6 * x + rng.normal(size=40)
    a, b = (x + 3.0) * scale_hat, (y - 2.0) * scale_y
    expected = torch.tensor(_exact_corr(a, b), dtype=torch.float64)
    assert_close(pearson_corr(a, b), expected, rtol=1e-12, atol=0)
    columns = per_target_corr(np.stack([a, b], 1), np.stack([b, a], 1))
    assert_close(columns, expected.repeat(2), rtol=1e-12, atol=0)


def test_pearson_corr_of_a_constant_is_nan_at_every_scale() -> None:
    ramp = np.arange(7.0)
    for value in (0.1, 1e-300, 1e300, 0.0, 5e-324):
        assert torch.isnan(pearson_corr(np.full(7, value), ramp))


def test_f1_counts_the_labels_present_not_the_largest_value() -> None:
    # Old code allocated bincounts of length largest + 1: 2**62 cannot be allocated.
    assert f1([0, 2**62], [0, 1]) == 0.5
    assert f1([0, 10**8], [0, 1]) == 0.5
    assert_close(f1([0, 10**8], [0, 1], average="macro"), torch.tensor(1 / 3, dtype=torch.float64))
    assert f1([0, 10**9], [0, 10**9], num_classes=10**9 + 1) == 1.0
    # F1 does not depend on the label values: far-apart labels equal compact ones.
    rng = np.random.default_rng(3)
    pred, true = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    far = np.array([3, 10**6, 7 * 10**12, 2**40, 2**62])
    for average in ("weighted", "macro"):
        assert f1(far[pred], far[true], average=average) == f1(pred, true, average=average)  # type: ignore[arg-type]


def test_mae_near_the_float64_limit() -> None:
    big = 1.7e308

    def exact(a: list[float], b: list[float]) -> float:
        return float(
            sum(abs(Fraction(p) - Fraction(q)) for p, q in zip(a, b, strict=True)) / len(a)
        )

    for a, b in (
        ([big, big], [0.0, 0.0]),
        ([1e308, 0.0], [-1e308, 0.0]),
        ([big, -big], [0.0, 0.0]),
    ):
        assert mae(np.array(a), np.array(b)).item() == exact(a, b)
    assert mae(np.array([big]), np.array([-big])).item() == math.inf  # 3.4e308 > max
    out = per_target_mae(np.array([[big, 1e-300], [big, 3e-300]]), np.zeros((2, 2)))
    assert out.tolist() == [big, exact([1e-300, 3e-300], [0.0, 0.0])]


_Y = torch.tensor([-1.0, 0.5, 2.0, -0.5], dtype=torch.float64)
_L = torch.tensor([0, 1, 2, 1])
METRIC_ERRORS: list[Any] = [
    pytest.param(
        lambda: accuracy_2(_Y, _Y, exclude_zero=False, threshold=math.nan),
        "accuracy_2: threshold must be a finite real number, got nan",
        id="threshold-nan",
    ),
    pytest.param(
        lambda: accuracy_2(_Y, _Y, exclude_zero=True, threshold=math.inf),
        "threshold must be a finite real number, got inf",
        id="threshold-inf",
    ),
    pytest.param(
        lambda: weighted_f1(_Y, _Y, exclude_zero=False, threshold=-math.inf),
        "weighted_f1: threshold must be a finite real number, got -inf",
        id="f1-threshold-minus-inf",
    ),
    pytest.param(
        lambda: accuracy_2(_Y, _Y, exclude_zero=False, threshold=None),
        "threshold must be a finite real number, got None",
        id="threshold-none",
    ),
    pytest.param(
        lambda: accuracy_2(_Y, _Y, exclude_zero=False, threshold="0"),
        "threshold must be a finite real number, got '0'",
        id="threshold-string",
    ),
    pytest.param(
        lambda: accuracy_2(_Y, _Y, exclude_zero=False, threshold=torch.tensor(0.0)),
        "threshold must be a finite real number",
        id="threshold-tensor",
    ),
    pytest.param(
        lambda: accuracy_2(_Y, _Y, exclude_zero=None),
        "accuracy_2: exclude_zero must be True or False, got None",
        id="exclude-zero-none",
    ),
    pytest.param(
        lambda: weighted_f1(_Y, _Y, exclude_zero="no"),
        "exclude_zero must be True or False, got 'no'",
        id="exclude-zero-string",
    ),
    pytest.param(
        lambda: f1(_L, _L, num_classes=0),
        "f1: num_classes must be a positive int or None, got 0",
        id="num-classes-0",
    ),
    pytest.param(
        lambda: f1(_L, _L, num_classes=-3),
        "num_classes must be a positive int",
        id="num-classes-neg",
    ),
    pytest.param(
        lambda: f1(_L, _L, num_classes=2.5),
        "num_classes must be a positive int",
        id="num-classes-float",
    ),
    pytest.param(
        lambda: f1(_L, _L, num_classes=True),
        "num_classes must be a positive int",
        id="num-classes-bool",
    ),
    pytest.param(
        lambda: f1(_L, _L, num_classes=2),
        "label 2 is out of range for num_classes=2",
        id="num-classes-small",
    ),
    pytest.param(
        lambda: f1([0, 2**70], [0, 1]), "f1: y_hat is not a numeric array", id="label-beyond-int64"
    ),
    pytest.param(lambda: f1(_L, -_L), "class labels must be non-negative", id="negative-labels"),
    pytest.param(lambda: f1(_Y, _Y), "must hold integer class labels", id="float-labels"),
    pytest.param(
        lambda: accuracy(torch.tensor([0, 1j]), torch.tensor([0, 1])),
        "accuracy: y_hat must be real, got torch.complex64",
        id="complex-labels",
    ),
    pytest.param(
        lambda: pearson_corr(_Y, _Y + 0j), "pearson_corr: y must be real", id="complex-scores"
    ),
    pytest.param(
        lambda: mae(["a", "b"], ["c", "d"]), "mae: y_hat is not a numeric array", id="strings"
    ),
    pytest.param(
        lambda: per_target_mae(np.array([[None]]), np.zeros((1, 1))),
        "per_target_mae: y_hat is not a numeric array",
        id="object-array",
    ),
    pytest.param(
        lambda: f1(_L, _L, average="micro"), "average must be 'weighted' or 'macro'", id="average"
    ),
    pytest.param(
        lambda: accuracy_7(torch.tensor([math.nan]), torch.tensor([0.0])),
        "accuracy_7: y_hat holds 1 non-finite value",
        id="nan-score",
    ),
    pytest.param(
        lambda: pearson_corr(_Y, torch.tensor([math.inf, 0, 0, 0])),
        "pearson_corr: y holds 1 non-finite value",
        id="inf-label",
    ),
    pytest.param(
        lambda: per_target_corr(torch.zeros(5, 0), torch.zeros(5, 0)),
        "got empty inputs",
        id="no-targets",
    ),
    pytest.param(lambda: accuracy(_L, _L[:3]), r"got \(4,\) and \(3,\)", id="lengths-differ"),
    pytest.param(
        lambda: mae(_Y, _Y[:, None]), r"same shape, got \(4,\) and \(4, 1\)", id="broadcast"
    ),
    pytest.param(
        lambda: accuracy_2(_Y * 0, _Y * 0, exclude_zero=True),
        "every label equals 0",
        id="all-neutral",
    ),
]


@pytest.mark.parametrize(("call", "message"), METRIC_ERRORS)
def test_metric_arguments_give_clear_errors(call: Call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# ---------------------------------------------------------------------------- masks

_MASK = torch.tensor([True, False, True])
MASK_ERRORS: list[Any] = [
    pytest.param(
        lambda: random_presence([], 4, 0.5), "at least one modality is required", id="no-names"
    ),
    pytest.param(
        lambda: random_presence(["a", "a"], 4, 0.5),
        r"names repeat a modality: \['a', 'a'\]",
        id="repeat",
    ),
    pytest.param(lambda: random_presence("ab", 4, 0.5), "not the string 'ab'", id="names-string"),
    pytest.param(lambda: random_presence([""], 4, 0.5), "non-empty strings", id="empty-name"),
    pytest.param(lambda: random_presence([3], 4, 0.5), "non-empty strings, got 3", id="int-name"),
    pytest.param(
        lambda: random_presence(["a"], -1, 0.5),
        "batch_size must be an int >= 0, got -1",
        id="batch-neg",
    ),
    pytest.param(lambda: random_presence(["a"], 2.5, 0.5), "got 2.5", id="batch-float"),
    pytest.param(lambda: random_presence(["a"], True, 0.5), "got True", id="batch-bool"),
    pytest.param(
        lambda: random_presence(["a"], 4, math.nan),
        r"missing_rate must be a number in \[0, 1\), got nan",
        id="rate-nan",
    ),
    pytest.param(lambda: random_presence(["a"], 4, 1.0), "got 1.0", id="rate-1"),
    pytest.param(lambda: random_presence(["a"], 4, -0.1), "got -0.1", id="rate-neg"),
    pytest.param(lambda: random_presence(["a"], 4, True), "got True", id="rate-bool"),
    pytest.param(lambda: random_presence(["a"], 4, "0.5"), "got '0.5'", id="rate-string"),
    pytest.param(lambda: any_present({}), "names no modality", id="any-empty"),
    pytest.param(
        lambda: any_present({"a": _MASK, "b": _MASK[:2]}),
        r"differ in shape: \{'a': \(3,\), 'b': \(2,\)\}",
        id="any-shapes",
    ),
    pytest.param(
        lambda: fill_absent(torch.ones(1, 2), _MASK),
        r"shape \(B,\) for x of shape \(1, 2\) \(B, \.\.\.\), got torch.bool \(3,\)",
        id="fill-broadcast",
    ),
    pytest.param(
        lambda: fill_absent(torch.ones(3, 2), _MASK.long()), "got torch.int64", id="fill-long"
    ),
    pytest.param(
        lambda: fill_absent(torch.tensor(1.0), _MASK[0]), r"x of shape \(\)", id="fill-scalar"
    ),
    pytest.param(
        lambda: check_presence({"a": [True, False, True]}, ["a"], 3),
        "modality 'a': presence mask must be a bool tensor, got list",
        id="presence-list",
    ),
    pytest.param(
        lambda: check_presence({"a": _MASK.float()}, ["a"], 3),
        "must be bool, got torch.float32",
        id="presence-float",
    ),
]


@pytest.mark.parametrize(("call", "message"), MASK_ERRORS)
def test_mask_helpers_give_clear_errors(call: Call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_mask_helpers_at_their_edges() -> None:
    empty = random_presence(["b", "a"], 0, 0.5)
    assert list(empty) == ["a", "b"] and all(
        m.shape == (0,) and m.dtype == torch.bool for m in empty.values()
    )
    alone = random_presence(["a"], 50, 0.99, generator=torch.Generator().manual_seed(0))
    assert bool(alone["a"].all())  # a single modality is always restored
    assert any_present({"a": torch.zeros(0, dtype=torch.bool)}).shape == (0,)
    x = torch.tensor([[math.nan], [2.0], [math.inf]])
    assert fill_absent(x, ~_MASK, value=-1.0).tolist() == [[-1.0], [2.0], [-1.0]]


# ---------------------------------------------------------------------------- loaders

T, D = 3, 2


def _h5(path: Path, **arrays: Any) -> Path:
    h5py = pytest.importorskip("h5py")
    with h5py.File(path, "w") as f:
        for key, value in arrays.items():
            f[key] = value  # "root/data/id/features" keys create the groups on the way
    return path


def _mfn(folder: Path) -> Path:
    """A valid MMMO layout: audio and labels for each split, two samples each."""
    for split in ("train", "valid", "test"):
        _h5(
            folder / f"audio_{split}.h5",
            d1=np.arange(2 * T * D, dtype=np.float64).reshape(2, T, D) + 1,
        )
        _h5(folder / f"y_{split}.h5", d1=np.array([1.0, 4.0]))
    return folder


def _csd(path: Path, values: dict[str, np.ndarray], root: str = "COVAREP") -> Path:
    entries: dict[str, Any] = {}
    for video, x in values.items():
        entries[f"{root}/data/{video}/features"] = x
        entries[f"{root}/data/{video}/intervals"] = np.zeros((len(x), 2))
    return _h5(path, **entries)


def _csd_pair(folder: Path) -> tuple[Path, Path]:
    ids = [f"v{i}[0]" for i in range(6)]
    audio = _csd(folder / "audio.csd", {v: np.full((2, D), i + 1.0) for i, v in enumerate(ids)})
    labels = _csd(
        folder / "labels.csd", {v: np.array([[i - 2.5]]) for i, v in enumerate(ids)}, "Labels"
    )
    return audio, labels


def _mosi_pickle(path: Path, audio: np.ndarray | None = None) -> Path:
    x = np.arange(2 * T * D, dtype=np.float64).reshape(2, T, D) + 1 if audio is None else audio
    split = {"audio": x, "labels": np.zeros((2, 1, 1)), "id": [b"a", b"b"]}
    with open(path, "wb") as f:
        pickle.dump({"train": split, "valid": split, "test": split}, f)
    return path


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random":
        path.write_bytes(np.random.default_rng(0).bytes(len(data)))
    else:  # the first bytes, where every format keeps its signature or header
        path.write_bytes(bytes(b ^ 0xFF for b in data[:64]) + data[64:])


DAMAGE = ["truncated", "empty", "random", "header"]


def _raises_naming(path: Path, call: Call, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        call()
    assert str(path) in str(info.value)


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("victim", ["audio_valid.h5", "y_test.h5"])
def test_mfn_damaged_file_is_named(tmp_path: Path, victim: str, how: str) -> None:
    folder = _mfn(tmp_path)
    _damage(folder / victim, how)
    _raises_naming(
        folder / victim,
        lambda: load_mfn_h5(folder, "mmmo"),
        "unreadable HDF5 file, truncated or corrupt",
    )


@pytest.mark.parametrize("how", DAMAGE)
@pytest.mark.parametrize("victim", [0, 1])
def test_csd_damaged_file_is_named(tmp_path: Path, victim: int, how: str) -> None:
    audio, labels = _csd_pair(tmp_path)
    path = (audio, labels)[victim]
    _damage(path, how)
    _raises_naming(
        path,
        lambda: load_csd({"audio": audio}, labels),
        "unreadable HDF5 file, truncated or corrupt",
    )


@pytest.mark.parametrize("how", DAMAGE)
def test_pickle_damaged_file_is_named(tmp_path: Path, how: str) -> None:
    path = _mosi_pickle(tmp_path / "mosi.pkl")
    _damage(path, how)
    _raises_naming(
        path, lambda: load_multibench_pickle(path), "unreadable pickle, truncated or corrupt"
    )


def test_npz_crc_error_and_damage_are_named(tmp_path: Path) -> None:
    labels = np.arange(40) % 2
    path = tmp_path / "views.npz"
    np.savez(path, labels=labels, view_a=np.zeros((40, 200)))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside view_a's stored bytes: the CRC no longer matches
    path.write_bytes(bytes(data))
    message = "cannot read 'view_a', the archive is truncated or corrupt (BadZipFile: Bad CRC-32"
    _raises_naming(path, lambda: load_npz(path), message)
    np.savez_compressed(path, labels=labels, view_a=np.zeros((40, 200)))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    _raises_naming(
        path, lambda: load_npz(path), "cannot read 'view_a', the archive is truncated or corrupt"
    )
    for how in DAMAGE:
        np.savez(path, labels=labels, view_a=np.zeros((40, 200)))
        _damage(path, how)
        with pytest.raises(ValueError, match=re.escape(str(path))):
            load_npz(path)


# numpy reports some damaged array states while unpickling as "unraisable" errors.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_every_byte_flip_and_truncation_loads_or_names_the_file(tmp_path: Path) -> None:
    """Sweep: damage at many offsets of each format; a correct load or a named ValueError."""
    audio, labels = _csd_pair(tmp_path)
    pkl = _mosi_pickle(tmp_path / "mosi.pkl")
    npz = tmp_path / "views.npz"
    np.savez_compressed(npz, labels=np.arange(40) % 2, view_a=np.arange(80.0).reshape(40, 2))
    loaders: dict[Path, Call] = {
        audio: lambda: load_csd({"audio": audio}, labels),
        pkl: lambda: load_multibench_pickle(pkl),
        npz: lambda: load_npz(npz),
    }
    tried, unnamed = 0, []
    for path, load in loaders.items():
        original = path.read_bytes()
        for offset in range(0, len(original), max(1, len(original) // 150)):
            for data in (
                original[:offset],
                original[:offset] + bytes([original[offset] ^ 0xFF]) + original[offset + 1 :],
            ):
                path.write_bytes(data)
                tried += 1
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        load()
                except ValueError as error:
                    if str(path) not in str(error):
                        unnamed.append(f"{path.name} at byte {offset}: {error}")
        path.write_bytes(original)
    assert tried > 800
    assert unnamed == []


def test_d1_that_is_a_group_and_csd_nodes_of_the_wrong_kind(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py")
    folder = _mfn(tmp_path)
    victim = folder / "audio_train.h5"
    with h5py.File(victim, "w") as f:
        f.create_group("d1")
    _raises_naming(
        victim, lambda: load_mfn_h5(folder, "mmmo"), "'d1' is a Group, expected a dataset"
    )
    audio, labels = _csd_pair(tmp_path)
    with h5py.File(audio, "a") as f:
        del f["COVAREP/data/v1[0]/features"]
        f.create_group("COVAREP/data/v1[0]/features")
    _raises_naming(audio, lambda: load_csd({"audio": audio}, labels), "'v1[0]/features' is a Group")
    with h5py.File(audio, "a") as f:
        del f["COVAREP/data/v1[0]"]
        f["COVAREP/data/v1[0]"] = np.zeros(3)
    _raises_naming(
        audio,
        lambda: load_csd({"audio": audio}, labels),
        "'v1[0]' needs 'features' and 'intervals'",
    )
    _h5(audio, **{"COVAREP/data": np.zeros(3)})
    message = "'COVAREP/data' must be a group of ids, got a dataset"
    _raises_naming(audio, lambda: load_csd({"audio": audio}, labels), message)


# One rule for finite values beyond float32: an error naming the file, in every loader.
HUGE = [1e300, -1e300, 3.5e38, np.finfo(np.float64).max]


@pytest.mark.parametrize("value", HUGE)
def test_mfn_huge_finite_values_are_an_error_naming_the_file(tmp_path: Path, value: float) -> None:
    folder = _mfn(tmp_path)
    x = np.ones((2, T, D))
    x[1, 2, 0] = value
    _h5(folder / "audio_valid.h5", d1=x)
    message = f"{folder / 'audio_valid.h5'}: 1 finite values beyond the float32 range"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_mfn_h5(folder, "mmmo")
    _mfn(folder)
    _h5(folder / "y_test.h5", d1=np.array([1.0, value]))
    with pytest.raises(
        ValueError, match=re.escape(f"{folder / 'y_test.h5'}: 1 finite values beyond")
    ):
        load_mfn_h5(folder, "mmmo")


@pytest.mark.parametrize("value", HUGE)
def test_pickle_and_csd_huge_finite_values_are_an_error(tmp_path: Path, value: float) -> None:
    x = np.ones((2, T, D))
    x[0, 0, 1] = value
    path = _mosi_pickle(tmp_path / "m.pkl", x)
    with pytest.raises(
        ValueError, match=re.escape("m.pkl [train]['audio']: 1 finite values beyond")
    ):
        load_multibench_pickle(path)
    audio, labels = _csd_pair(tmp_path)
    _csd(audio, {f"v{i}[0]": np.full((2, D), value if i == 3 else 1.0) for i in range(6)})
    message = f"{audio} 'v3[0]' features: 4 finite values beyond the float32 range"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_csd({"audio": audio}, labels)


def test_values_at_the_float32_limit_and_non_finite_markers_still_load(tmp_path: Path) -> None:
    edge = float(np.finfo(np.float32).max)
    x = np.ones((2, T, D))
    x[0, 0, 0], x[1, 1, 1], x[1, 2, 1] = edge, -np.inf, np.nan
    with pytest.warns(
        UserWarning, match=re.escape("audio: replaced 3 -inf, 0 +inf and 3 NaN values by 0")
    ):
        data = load_multibench_pickle(_mosi_pickle(tmp_path / "m.pkl", x))
    expected = torch.tensor(np.nan_to_num(x, nan=0.0, neginf=0.0), dtype=torch.float32)
    assert torch.equal(data.train.modalities["audio"], expected)


def test_csd_arguments_and_splits_that_match_nothing(tmp_path: Path) -> None:
    audio, labels = _csd_pair(tmp_path)

    def load(**kwargs: Any) -> object:
        return load_csd({"audio": audio}, labels, **kwargs)

    nothing = {"train": ["x"], "valid": ["y"], "test": []}
    with pytest.raises(
        ValueError, match=re.escape("splits: the ids of train, valid match no sample")
    ):
        load(splits=nothing)
    some = {"train": ["v0", "v1"], "valid": ["v2"], "test": ["w9"]}
    with pytest.raises(ValueError, match=r"the ids of test match no sample \(\{'test': \['w9'\]\}"):
        load(splits=some)
    with pytest.raises(ValueError, match=re.escape("splits['train'] must be a list of ids")):
        load(splits={"train": "v0", "valid": [], "test": []})
    for bad in (
        {"valid_fraction": math.nan},
        {"test_fraction": -0.1},
        {"valid_fraction": 0.5, "test_fraction": 0.5},
    ):
        with pytest.raises(ValueError, match="must lie in \\[0, 1\\) and sum to less than 1"):
            load(**bad)
    for steps in (2.5, True, 0):
        with pytest.raises(
            ValueError,
            match=re.escape(
                "need an int num_steps >= 1, keep in ('first', 'last'), padding in ('front', "
                f"'end'); got {steps!r}, 'last', 'front'"
            ),
        ):
            load(num_steps=steps)
    data = load(splits={"train": ["v0", "v1", "v2"], "valid": ["v3"], "test": ["v4", "v5"]})
    assert [len(part) for part in data.splits().values()] == [3, 1, 2]
    assert data.test.labels.tolist() == [1.5, 2.5]


def test_npz_fractions_with_nan_give_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "v.npz"
    np.savez(path, labels=np.arange(40) % 2, view_a=np.ones((40, 2)))
    for fractions in ((0.6, math.nan, 0.4), (math.nan, 0.2, 0.2), (0.7, 0.4, -0.1)):
        with pytest.raises(
            ValueError, match=re.escape("fractions must be (train, validation, test) >= 0")
        ):
            load_npz(path, fractions=fractions)


def test_missing_files_raise_file_not_found(tmp_path: Path) -> None:
    _, labels = _csd_pair(tmp_path)
    for call in (
        lambda: load_csd({"audio": tmp_path / "none.csd"}, labels),
        lambda: load_multibench_pickle(tmp_path / "none.pkl"),
        lambda: load_npz(tmp_path / "none.npz"),
    ):
        with pytest.raises(FileNotFoundError, match="none"):
            call()
