"""Sentiment loaders (examples/sentiment_data.py) on small files written in each layout."""

from __future__ import annotations

import pickle
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from examples.sentiment_data import (
    SequenceSplit,
    load_csd,
    load_mfn_h5,
    load_multibench_pickle,
)

T = 4


def _sequences(lengths: list[int], dim: int, padding: str, offset: float) -> np.ndarray:
    """(N, T, dim) float64 with non-zero values on the valid steps only."""
    x = np.zeros((len(lengths), T, dim))
    for i, length in enumerate(lengths):
        values = offset + 10 * i + 1 + np.arange(length * dim).reshape(length, dim)
        if padding == "front":
            x[i, T - length :] = values
        else:
            x[i, :length] = values
    return x


def _write_h5(path: Path, key: str, array: np.ndarray) -> None:
    h5py = pytest.importorskip("h5py", reason="needs h5py: pip install -e '.[examples]'")
    with h5py.File(path, "w") as f:
        f.create_dataset(key, data=array)


def _assert_only_warning(record: list[warnings.WarningMessage], text: str) -> None:
    assert [str(w.message) for w in record] == [text]


# ---------------------------------------------------------------- MFN h5 layout

LENGTHS = {"train": [4, 2, 1], "valid": [3, 0], "test": [1]}


def _mfn_folder(tmp_path: Path, key: str, padding: str, labels: dict[str, np.ndarray]) -> Path:
    for split, lengths in LENGTHS.items():
        _write_h5(tmp_path / f"audio_{split}.h5", key, _sequences(lengths, 2, padding, 0.0))
        _write_h5(tmp_path / f"video_{split}.h5", key, _sequences(lengths, 3, padding, 0.5))
        _write_h5(tmp_path / f"y_{split}.h5", key, labels[split])
    return tmp_path


def _pom_labels() -> dict[str, np.ndarray]:
    return {s: 1 + np.arange(len(n) * 17).reshape(len(n), 17) % 7 for s, n in LENGTHS.items()}


def test_mfn_h5_pom_layout_d1_front_padding(tmp_path: Path) -> None:
    folder = _mfn_folder(tmp_path, "d1", "front", _pom_labels())
    data = load_mfn_h5(folder, "pom")
    assert (data.task, data.output_size) == ("regression", 17)
    assert data.modalities == ("audio", "video")
    assert data.feature_sizes == {"audio": 2, "video": 3}
    for split, lengths in LENGTHS.items():
        part = data.splits()[split]
        assert part.padding == "front"
        assert part.ids is None
        assert part.lengths.tolist() == lengths
        assert part.lengths.dtype == torch.int64
        expected = _sequences(lengths, 2, "front", 0.0)
        torch.testing.assert_close(part.modalities["audio"], torch.tensor(expected).float())
        torch.testing.assert_close(part.labels, torch.tensor(_pom_labels()[split]).float())
        assert part.present["video"].tolist() == [n > 0 for n in lengths]
    mask = data.train.step_mask()
    assert mask.tolist()[1] == [False, False, True, True]
    assert bool((data.train.modalities["audio"][~mask] == 0).all())


def test_mfn_h5_data_key_youtube_one_hot_end_padding_text_dropped(tmp_path: Path) -> None:
    one_hot = {s: np.eye(3, dtype=np.float32)[[2, 0, 1][: len(n)]] for s, n in LENGTHS.items()}
    folder = _mfn_folder(tmp_path, "data", "end", one_hot)
    for split in ("valid", "test"):
        _write_h5(folder / f"text_{split}_emb.h5", "data", np.ones((len(LENGTHS[split]), T, 5)))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = load_mfn_h5(folder, "youtube")
    _assert_only_warning(
        record,
        f"{folder}: modality 'text' is only in split(s) valid, test; dropped (a modality "
        "must exist in every split)",
    )
    assert (data.task, data.output_size, data.modalities) == (
        "classification",
        3,
        ("audio", "video"),
    )
    assert data.train.labels.tolist() == [2.0, 0.0, 1.0]
    assert data.valid.labels.tolist() == [2.0, 0.0]
    assert data.train.padding == "end"
    assert data.train.lengths.tolist() == [4, 2, 1]
    assert data.valid.lengths.tolist() == [3, 0]
    assert data.valid.present["audio"].tolist() == [True, False]
    assert data.train.step_mask().tolist()[2] == [True, False, False, False]
    # Forcing the other side: the zeros after the data become part of the sequence.
    with pytest.warns(UserWarning, match="modality 'text' is only in"):
        forced = load_mfn_h5(folder, "youtube", padding="front")
    assert forced.train.lengths.tolist() == [4, 4, 4]


def test_mfn_h5_mmmo_labels_and_inner_zero_steps(tmp_path: Path) -> None:
    labels = {s: np.linspace(1, 5, len(n)) for s, n in LENGTHS.items()}
    folder = _mfn_folder(tmp_path, "d1", "front", labels)
    audio = _sequences(LENGTHS["train"], 2, "front", 0.0)
    video = _sequences(LENGTHS["train"], 3, "front", 0.5)
    audio[0, 1], video[0, 1] = 0.0, 0.0  # a silent step inside the sequence stays valid
    _write_h5(folder / "audio_train.h5", "d1", audio)
    _write_h5(folder / "video_train.h5", "d1", video)
    data = load_mfn_h5(folder, "mmmo")
    assert (data.task, data.output_size) == ("regression", 1)
    torch.testing.assert_close(data.train.labels, torch.tensor([1.0, 3.0, 5.0]))
    assert data.train.lengths.tolist() == [4, 2, 1]


def test_mfn_h5_nonfinite_replaced_with_one_warning_per_modality(tmp_path: Path) -> None:
    folder = _mfn_folder(tmp_path, "d1", "front", _pom_labels())
    train = _sequences(LENGTHS["train"], 2, "front", 0.0)
    train[0, 0, :] = -np.inf
    train[1, 3, 1] = np.nan
    valid = _sequences(LENGTHS["valid"], 2, "front", 0.0)
    valid[0, 2, 0], valid[0, 3, 0] = np.inf, -np.inf
    _write_h5(folder / "audio_train.h5", "d1", train)
    _write_h5(folder / "audio_valid.h5", "d1", valid)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = load_mfn_h5(folder, "pom")
    _assert_only_warning(record, "audio: replaced 3 -inf, 1 +inf and 1 NaN values by 0")
    assert record[0].filename == __file__
    expected = np.nan_to_num(train, nan=0.0, posinf=0.0, neginf=0.0)
    torch.testing.assert_close(data.train.modalities["audio"], torch.tensor(expected).float())
    assert data.valid.modalities["audio"][0, 2:, 0].tolist() == [0.0, 0.0]
    # Step 0 of sample 0 was all -inf in audio but video has data there: still valid.
    assert data.train.lengths.tolist() == [4, 2, 1]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("no_test", "split 'test' is missing (no label file y_test.h5)"),
        (
            "short_labels",
            "train: labels and modalities disagree on N: audio (3, 4, 2) from "
            "audio_train.h5, video (3, 4, 3) from video_train.h5, labels (2, 17) from y_train.h5",
        ),
        ("short_video", "train: modalities disagree on (N, T)"),
        ("rank", "train: modality 'audio' from audio_train.h5 must be (N, T, D), got shape (3, 8)"),
        ("key", "expected a dataset under key 'd1' or 'data', got ['features']"),
        ("labels_17", "POM labels must be (N, 17), got (3, 16)"),
    ],
)
def test_mfn_h5_bad_files(tmp_path: Path, change: str, message: str) -> None:
    folder = _mfn_folder(tmp_path, "d1", "front", _pom_labels())
    train_audio = folder / "audio_train.h5"
    if change == "no_test":
        (folder / "y_test.h5").unlink()
    elif change == "short_labels":
        _write_h5(folder / "y_train.h5", "d1", _pom_labels()["train"][:2])
    elif change == "short_video":
        _write_h5(folder / "video_train.h5", "d1", np.ones((3, 5, 3)))
    elif change == "rank":
        _write_h5(train_audio, "d1", np.ones((3, 8)))
    elif change == "key":
        _write_h5(train_audio, "features", np.ones((3, T, 2)))
    else:
        _write_h5(folder / "y_train.h5", "d1", _pom_labels()["train"][:, :16])
    with pytest.raises(ValueError, match=re.escape(message)):
        load_mfn_h5(folder, "pom")


def test_mfn_h5_youtube_rejects_non_one_hot_and_unknown_dataset(tmp_path: Path) -> None:
    labels = {s: np.full((len(n), 3), 0.5) for s, n in LENGTHS.items()}
    folder = _mfn_folder(tmp_path, "d1", "front", labels)
    with pytest.raises(ValueError, match="3 label rows are not one-hot"):
        load_mfn_h5(folder, "youtube")
    with pytest.raises(ValueError, match="dataset must be one of"):
        load_mfn_h5(folder, "mosi")


def test_h5_loaders_explain_missing_h5py(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _mfn_folder(tmp_path, "d1", "front", _pom_labels())
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(ImportError, match=r'pip install "factorkit\[examples\]"'):
        load_mfn_h5(folder, "pom")
    with pytest.raises(ImportError, match=r'pip install "factorkit\[examples\]"'):
        load_csd({"audio": folder / "a.csd"}, folder / "labels.csd")


# ---------------------------------------------------------------- MultiBench / MulT pickles


def _pickle_split(lengths: list[int], labels: np.ndarray, split: str) -> dict[str, object]:
    return {
        "text": _sequences(lengths, 3, "front", 0.0),
        "audio": _sequences(lengths, 2, "front", 0.25),
        "vision": _sequences(lengths, 1, "front", 0.75),
        "labels": labels,
        "id": [f"{split}{i}".encode() for i in range(len(lengths))],
        "raw_text": ["a sentence"] * len(lengths),
    }


def _write_pickle(path: Path, data: object) -> Path:
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return path


def _mosi_like() -> dict[str, dict[str, object]]:
    return {
        s: _pickle_split(n, np.linspace(-3, 3, len(n)).reshape(-1, 1, 1), s)
        for s, n in LENGTHS.items()
    }


def test_multibench_pickle_mosi_like(tmp_path: Path) -> None:
    content = _mosi_like()
    audio = content["train"]["audio"]
    assert isinstance(audio, np.ndarray)
    audio[0, 0, 0], audio[1, 3, 1] = -np.inf, -np.inf
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = load_multibench_pickle(_write_pickle(tmp_path / "mosi_data.pkl", content))
    _assert_only_warning(record, "audio: replaced 2 -inf, 0 +inf and 0 NaN values by 0")
    assert (data.task, data.output_size) == ("regression", 1)
    assert data.modalities == ("audio", "text", "vision")
    assert data.feature_sizes == {"audio": 2, "text": 3, "vision": 1}
    torch.testing.assert_close(data.train.labels, torch.tensor([-3.0, 0.0, 3.0]))
    assert data.train.ids == ("train0", "train1", "train2")
    assert data.train.padding == "front"
    assert data.valid.lengths.tolist() == [3, 0]
    expected = _sequences(LENGTHS["train"], 3, "front", 0.0)
    torch.testing.assert_close(data.train.modalities["text"], torch.tensor(expected).float())
    assert data.train.modalities["audio"][0, 0, 0].item() == 0.0


def test_multibench_pickle_iemocap_like_multilabel_and_array_ids(tmp_path: Path) -> None:
    def emotions(flags: list[list[int]]) -> np.ndarray:
        return np.eye(2)[np.array(flags)]  # (N, 4) flags -> (N, 4, 2) one-hot [no, yes]

    flags = {
        "train": [[1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]],
        "valid": [[0, 0, 0, 0], [1, 1, 1, 1]],
    }
    flags["test"] = [[0, 1, 0, 1]]
    content = {s: _pickle_split(n, emotions(flags[s]), s) for s, n in LENGTHS.items()}
    for part in content.values():
        count = len(part["raw_text"])  # type: ignore[arg-type]
        part["id"] = np.array([[b"vid", str(i).encode(), b"7.5"] for i in range(count)])
    del content["test"]["raw_text"]
    data = load_multibench_pickle(_write_pickle(tmp_path / "iemocap_data.pkl", content))
    assert (data.task, data.output_size) == ("multilabel", 4)
    for split, expected in flags.items():
        assert data.splits()[split].labels.tolist() == expected
    assert data.train.ids == ("vid_0_7.5", "vid_1_7.5", "vid_2_7.5")


def test_multibench_pickle_padding_override_and_missing_ids(tmp_path: Path) -> None:
    content = _mosi_like()
    for part in content.values():
        del part["id"]
    data = load_multibench_pickle(_write_pickle(tmp_path / "m.pkl", content), padding="end")
    assert data.train.ids is None
    assert data.train.padding == "end"
    # Front-padded data read as end-padded: the leading zeros count as valid steps.
    assert data.train.lengths.tolist() == [4, 4, 4]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            "no_valid",
            "m.pkl: expected a dict with keys ('train', 'valid', 'test'), got ['test', 'train']",
        ),
        (
            "short_vision",
            "valid: modalities disagree on (N, T): audio (2, 4, 2) from m.pkl [valid]",
        ),
        (
            "labels_shape",
            "m.pkl [test]['labels']: labels must be (N,), (N, K), (N, 1, K) or "
            "(N, C, 2) one-hot, got (1, 2, 2, 1)",
        ),
        ("ids", "train: 2 ids for 3 samples"),
        ("vision_train_only", "no modality"),
    ],
)
def test_multibench_pickle_bad_files(tmp_path: Path, change: str, message: str) -> None:
    content = _mosi_like()
    if change == "no_valid":
        del content["valid"]
    elif change == "short_vision":
        content["valid"]["vision"] = np.ones((1, T, 1))
    elif change == "labels_shape":
        content["test"]["labels"] = np.ones((1, 2, 2, 1))
    elif change == "ids":
        content["train"]["id"] = ["a", "b"]
    else:
        for split in ("valid", "test"):
            for name in ("text", "audio", "vision"):
                del content[split][name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the modality-dropped warnings of the last case
        with pytest.raises(ValueError, match=re.escape(message)):
            load_multibench_pickle(_write_pickle(tmp_path / "m.pkl", content))


# ---------------------------------------------------------------- CMU-MultimodalSDK .csd


def _write_csd(path: Path, root: str, features: dict[str, np.ndarray]) -> Path:
    """A computational sequence as the SDK writes it: <root>/data/<id>/..., <root>/metadata."""
    h5py = pytest.importorskip("h5py", reason="needs h5py: pip install -e '.[examples]'")
    with h5py.File(path, "w") as f:
        data = f.create_group(root).create_group("data")
        for video, x in features.items():
            entry = data.create_group(video)
            entry.create_dataset("features", data=x)
            starts = np.arange(len(x), dtype=np.float64)
            entry.create_dataset("intervals", data=np.stack([starts, starts + 1], axis=1))
        metadata = f[root].create_group("metadata")
        metadata.create_dataset("root name", data=[root.encode()])
    return path


def _rows(length: int, dim: int, start: float) -> np.ndarray:
    return start + np.arange(length * dim, dtype=np.float64).reshape(length, dim) + 1


def _csd_files(tmp_path: Path) -> tuple[dict[str, Path], Path]:
    # "a[0]" lacks audio and "c[1]" a label: both dropped. "d[0]" is in no fold of the
    # first test. "b[0]" is longer than T in text only; "b[1]" has 2 text rows, 1 audio row.
    text = {
        "a[0]": _rows(3, 2, 0),
        "b[0]": _rows(6, 2, 100),
        "b[1]": _rows(2, 2, 200),
        "c[0]": _rows(4, 2, 300),
        "c[1]": _rows(1, 2, 400),
        "d[0]": _rows(1, 2, 500),
    }
    audio = {
        "b[0]": _rows(2, 1, 0.5),
        "b[1]": _rows(1, 1, 0.5),
        "c[0]": _rows(4, 1, 0.5),
        "c[1]": _rows(1, 1, 0.5),
        "d[0]": _rows(1, 1, 0.5),
    }
    labels = {"a[0]": [[1.5]], "b[0]": [[-2.0]], "b[1]": [[0.5]], "c[0]": [[3.0]], "d[0]": [[0.0]]}
    paths = {
        "text": _write_csd(tmp_path / "words.csd", "glove_vectors", text),
        "audio": _write_csd(tmp_path / "covarep.csd", "COVAREP", audio),
    }
    label_arrays = {k: np.array(v) for k, v in labels.items()}
    return paths, _write_csd(tmp_path / "labels.csd", "Opinion Segment Labels", label_arrays)


def test_csd_alignment_truncation_front_padding_and_folds(tmp_path: Path) -> None:
    paths, labels = _csd_files(tmp_path)
    folds = {"train": ["b", "z"], "valid": ["c[0]"], "test": []}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = load_csd(paths, labels, num_steps=T, splits=folds)
    assert [str(w.message) for w in record] == [
        "2 ids are not in every sequence and were dropped (missing per sequence: audio: 1, "
        "text: 0, labels: 1)",
        "1 ids are in no split; dropped",
    ]
    assert (data.task, data.output_size, data.modalities) == ("regression", 1, ("audio", "text"))
    assert data.train.ids == ("b[0]", "b[1]")
    assert data.valid.ids == ("c[0]",)
    assert len(data.test) == 0
    assert data.train.labels.tolist() == [-2.0, 0.5]
    assert data.train.lengths.tolist() == [4, 2]
    assert data.train.padding == "front"
    text = data.train.modalities["text"]
    torch.testing.assert_close(text[0], torch.tensor(_rows(6, 2, 100)[-T:]).float())
    torch.testing.assert_close(text[1, 2:], torch.tensor(_rows(2, 2, 200)).float())
    assert text[1, :2].abs().sum().item() == 0.0
    audio = data.train.modalities["audio"]
    assert audio[:, :, 0].tolist() == [[0.0, 0.0, 1.5, 2.5], [0.0, 0.0, 0.0, 1.5]]
    assert data.train.step_mask().tolist() == [[True] * 4, [False, False, True, True]]


def test_csd_keep_first_end_padding_and_seeded_split(tmp_path: Path) -> None:
    paths, labels = _csd_files(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the dropped ids, tested above
        data = load_csd(
            paths,
            labels,
            num_steps=3,
            keep="first",
            padding="end",
            valid_fraction=1 / 3,
            test_fraction=1 / 3,
            seed=1,
        )
        again = load_csd(
            paths,
            labels,
            num_steps=3,
            keep="first",
            padding="end",
            valid_fraction=1 / 3,
            test_fraction=1 / 3,
            seed=1,
        )
    split_ids = [data.splits()[s].ids for s in ("train", "valid", "test")]
    assert split_ids == [again.splits()[s].ids for s in ("train", "valid", "test")]
    assert sorted(i for ids in split_ids for i in ids) == ["b[0]", "b[1]", "c[0]", "d[0]"]
    assert [len(ids) for ids in split_ids] == [2, 1, 1]
    everything = {i: (s, k) for s in data.splits().values() for k, i in enumerate(s.ids)}
    part, row = everything["b[0]"]
    torch.testing.assert_close(
        part.modalities["text"][row], torch.tensor(_rows(6, 2, 100)[:3]).float()
    )
    assert part.modalities["audio"][row, :, 0].tolist() == [1.5, 2.5, 0.0]
    assert part.lengths[row].item() == 3
    assert part.padding == "end"


def test_csd_multi_target_labels_and_nonfinite(tmp_path: Path) -> None:
    ids = [f"v[{i}]" for i in range(5)]
    audio = {i: _rows(2, 2, k) for k, i in enumerate(ids)}
    audio["v[3]"][0, 1] = -np.inf
    audio["v[4]"][1, 0] = np.nan
    paths = {"audio": _write_csd(tmp_path / "a.csd", "COVAREP", audio)}
    all_labels = {i: np.arange(7, dtype=np.float64)[None] + k for k, i in enumerate(ids)}
    labels = _write_csd(tmp_path / "l.csd", "All Labels", all_labels)
    with pytest.warns(UserWarning, match="audio: replaced") as record:
        data = load_csd(paths, labels, num_steps=2, valid_fraction=0.2, test_fraction=0.2)
    assert [str(w.message) for w in record] == [
        "audio: replaced 1 -inf, 0 +inf and 1 NaN values by 0"
    ]
    assert (data.task, data.output_size) == ("regression", 7)
    assert tuple(data.train.labels.shape) == (3, 7)
    for part in data.splits().values():
        for row, video in enumerate(part.ids or ()):
            k = ids.index(video)
            torch.testing.assert_close(part.labels[row], torch.arange(7.0) + k)
            expected = np.nan_to_num(audio[video], nan=0.0, neginf=0.0)
            torch.testing.assert_close(
                part.modalities["audio"][row], torch.tensor(expected).float()
            )


@pytest.mark.filterwarnings("ignore:.*ids are not in every sequence")
def test_csd_bad_files(tmp_path: Path) -> None:
    h5py = pytest.importorskip("h5py", reason="needs h5py: pip install -e '.[examples]'")
    paths, labels = _csd_files(tmp_path)
    segments = _write_csd(tmp_path / "video_labels.csd", "Labels", {"b[0]": np.ones((2, 1))})
    with pytest.raises(ValueError, match=r"1 ids hold more than one label row .*align"):
        load_csd(
            {"text": paths["text"]},
            segments,
            num_steps=T,
            splits={"train": ["b"], "valid": [], "test": []},
        )
    with h5py.File(paths["audio"], "a") as f:
        del f["COVAREP/data/c[0]/intervals"]
        f["COVAREP/data/c[0]"].create_dataset("intervals", data=np.zeros((3, 2)))
    with pytest.raises(
        ValueError, match=re.escape("'c[0]' has features (4, 1) and intervals (3, 2)")
    ):
        load_csd(paths, labels)
    message = "splits must have keys ('train', 'valid', 'test'), got ['train']"
    with pytest.raises(ValueError, match=re.escape(message)):
        load_csd({"text": paths["text"]}, labels, splits={"train": ["b"]})


def test_split_select_keeps_ids_and_padding() -> None:
    split = SequenceSplit(
        modalities={"audio": torch.arange(12.0).reshape(3, 2, 2)},
        labels=torch.tensor([0.0, 1.0, 2.0]),
        lengths=torch.tensor([2, 0, 1]),
        padding="end",
        present={"audio": torch.tensor([True, False, True])},
        ids=("x", "y", "z"),
    )
    kept = split.select(split.lengths > 0)
    assert kept.ids == ("x", "z")
    assert kept.labels.tolist() == [0.0, 2.0]
    torch.testing.assert_close(kept.modalities["audio"], split.modalities["audio"][[0, 2]])
    assert kept.step_mask().tolist() == [[True, True], [True, False]]
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 2\]"):
        SequenceSplit(
            modalities=split.modalities,
            labels=split.labels,
            lengths=torch.tensor([3, 0, 1]),
            padding="end",
            present=split.present,
        )


# ---------------------------------------------------------------- the real MFN files


# dataset -> (feature sizes, N train/valid/test, labels' trailing shape), from the README.
REAL = {
    "pom": ({"audio": 43, "video": 41}, (600, 100, 203), (17,)),
    "mmmo": ({"audio": 74, "video": 36}, (220, 40, 80), ()),
    "youtube": ({"audio": 74, "video": 36}, (173, 36, 60), ()),
}


@pytest.mark.parametrize("dataset", sorted(REAL))
def test_real_mfn_files_match_their_readme(
    dataset: str, mfn_sentiment: Callable[[str], Path]
) -> None:
    folder = mfn_sentiment(dataset)
    sizes, counts, label_shape = REAL[dataset]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        data = load_mfn_h5(folder, dataset)
    dropped = [] if dataset == "pom" else ["modality 'text' is only in split(s) valid, test"]
    assert len(record) == len(dropped)
    assert all(text in str(w.message) for text, w in zip(dropped, record, strict=True))
    assert data.feature_sizes == sizes
    for (name, part), n in zip(data.splits().items(), counts, strict=True):
        assert len(part) == n, name
        assert tuple(part.labels.shape) == (n, *label_shape)
        assert all(tuple(x.shape) == (n, 20, sizes[m]) for m, x in part.modalities.items())
    train = data.train.labels
    if dataset == "youtube":
        assert data.task == "classification"
        assert torch.bincount(train.long()).tolist() == [72, 43, 58]
        assert data.train.padding == "end"
    else:
        assert (float(train.min()), float(train.max())) == (
            (1.0, 7.0) if dataset == "pom" else (1.0, 5.0)
        )
        assert data.train.padding == "front"
