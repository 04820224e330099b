"""Loaders for the three common file layouts of multimodal sentiment data.

* :func:`load_mfn_h5`: the Memory Fusion Network layout, one HDF5 file per modality and
  split (``audio_train.h5``, ``text_valid_emb.h5``, ``y_test.h5``...), one array under the
  key ``d1`` (newer files) or ``data`` (older ones). POM, ICT-MMMO, YouTube.
* :func:`load_multibench_pickle`: the MultiBench / MulT pickle layout (``mosi_raw.pkl``,
  ``mosi_data.pkl``, ``mosei_senti_data.pkl``, ``iemocap_data.pkl``).
* :func:`load_csd`: CMU-MultimodalSDK computational sequences (``.csd``, HDF5), one file
  per modality plus one label file, joined on the video (or segment) id.

All three return a :class:`SequenceDataset` of float32 tensors, sequences zero-padded on
one side, with per-sample lengths and per-modality presence.

Conventions:
    * Non-finite features: -inf, +inf and NaN are set to 0 (COVAREP writes -inf for
      log-energies of silent frames; the usual convention is to zero them). Each loader
      warns once per modality that had any, with the counts.
    * Finite values beyond the float32 range (magnitude above 3.4028235e38, e.g. 1e300
      in a float64 file) are an error naming the file, the array and the count: they are
      not markers of missing data, and zeroing them (or keeping them as inf) would change
      the data silently. :func:`examples.multiview_data.load_npz` follows the same rule.
    * Unreadable files (truncated, empty, corrupt, not HDF5 or not a pickle) raise a
      ValueError naming the file and the problem; a missing file raises
      FileNotFoundError.
    * Padding: a step is padding when every modality is all-zero at that step. With
      ``padding="auto"`` the side is the one with more such steps at the sequence edges,
      counted over all splits (ties: ``"front"``, the MFN convention). All-zero steps
      between valid ones stay valid steps. A sample whose every modality is all-zero has
      length 0 and every modality absent.
    * Presence: a modality is present for a sample when any of its values is non-zero.

HDF5 files need the optional dependency h5py (``pip install "factorkit[examples]"``).
Pickles execute code when loaded: only load files you trust.
"""

from __future__ import annotations

import math
import pickle
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "SequenceDataset",
    "SequenceSplit",
    "load_csd",
    "load_mfn_h5",
    "load_multibench_pickle",
]

Padding = Literal["front", "end"]
Task = Literal["regression", "classification", "multilabel"]
SPLITS = ("train", "valid", "test")
MFN_DATASETS = ("mmmo", "pom", "youtube")
PICKLE_MODALITIES = ("audio", "text", "vision")


@dataclass(frozen=True)
class SequenceSplit:
    """One split (train, valid or test) of a multimodal sequence dataset.

    Attributes:
        modalities: name -> float32 features, zero-padded on the ``padding`` side.
        labels: float32 targets: regression values, class indices (classification) or
            0/1 per label (multilabel).
        lengths: int64 number of valid steps per sample (0 when nothing was observed).
        padding: ``"front"`` (valid steps at the end) or ``"end"`` (valid steps first).
        present: name -> bool, ``True`` where the modality has any non-zero value.
        ids: one id per sample, or ``None`` when the layout stores none.

    Shapes:
        modalities[name]: (N, T, D_name). labels: (N,) or (N, K). lengths: (N,).
        present[name]: (N,).
    """

    modalities: dict[str, Tensor]
    labels: Tensor
    lengths: Tensor
    padding: Padding
    present: dict[str, Tensor]
    ids: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if not self.modalities:
            raise ValueError("a split needs at least one modality")
        n, t = next(iter(self.modalities.values())).shape[:2]
        for name, x in self.modalities.items():
            if x.dim() != 3 or tuple(x.shape[:2]) != (n, t) or x.dtype != torch.float32:
                raise ValueError(
                    f"modality {name!r}: expected float32 of shape ({n}, {t}, D), "
                    f"got {x.dtype} {tuple(x.shape)}"
                )
        if sorted(self.present) != sorted(self.modalities):
            raise ValueError(f"present keys {sorted(self.present)} != {sorted(self.modalities)}")
        if any(p.shape != (n,) or p.dtype != torch.bool for p in self.present.values()):
            raise ValueError(f"presence masks must be bool of shape ({n},)")
        if self.labels.dim() not in (1, 2) or self.labels.shape[0] != n:
            raise ValueError(f"labels: expected ({n},) or ({n}, K), got {tuple(self.labels.shape)}")
        if self.lengths.shape != (n,) or self.lengths.dtype != torch.int64:
            raise ValueError(
                f"lengths: expected int64 ({n},), got {self.lengths.dtype} "
                f"{tuple(self.lengths.shape)}"
            )
        if n and not 0 <= int(self.lengths.min()) <= int(self.lengths.max()) <= t:
            raise ValueError(f"lengths must lie in [0, {t}]")
        if self.padding not in ("front", "end"):
            raise ValueError(f"padding must be 'front' or 'end', got {self.padding!r}")
        if self.ids is not None and len(self.ids) != n:
            raise ValueError(f"ids: expected {n}, got {len(self.ids)}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_steps(self) -> int:
        """T, the padded sequence length."""
        return int(next(iter(self.modalities.values())).shape[1])

    def step_mask(self) -> Tensor:
        """Valid steps: ``True`` on the ``lengths`` steps away from the padding.

        Shapes:
            Returns: (N, T) bool.
        """
        steps = torch.arange(self.num_steps)
        if self.padding == "end":
            return steps.unsqueeze(0) < self.lengths.unsqueeze(1)
        return steps.unsqueeze(0) >= (self.num_steps - self.lengths).unsqueeze(1)

    def select(self, index: Tensor) -> SequenceSplit:
        """The samples picked by a (N,) bool mask or an int64 index tensor, in that order.

        Example:
            >>> observed = split.select(split.lengths > 0)  # drop samples with no data
        """
        positions = torch.arange(len(self))[index].tolist()
        return SequenceSplit(
            modalities={k: v[index] for k, v in self.modalities.items()},
            labels=self.labels[index],
            lengths=self.lengths[index],
            padding=self.padding,
            present={k: v[index] for k, v in self.present.items()},
            ids=None if self.ids is None else tuple(self.ids[i] for i in positions),
        )


@dataclass(frozen=True)
class SequenceDataset:
    """Train, valid and test splits sharing modalities, feature sizes and padding side.

    Attributes:
        train, valid, test: the splits.
        task: ``"regression"`` (labels are targets), ``"classification"`` (labels are
            class indices in [0, output_size)) or ``"multilabel"`` (labels are 0/1, one
            column per label).
        output_size: the number of regression targets, classes or labels; what a
            predictor outputs.
    """

    train: SequenceSplit
    valid: SequenceSplit
    test: SequenceSplit
    task: Task
    output_size: int

    def __post_init__(self) -> None:
        reference = self.train
        for name, split in self.splits().items():
            sizes = {k: int(v.shape[2]) for k, v in split.modalities.items()}
            if sizes != self.feature_sizes:
                raise ValueError(f"{name}: feature sizes {sizes} != train's {self.feature_sizes}")
            if split.labels.shape[1:] != reference.labels.shape[1:]:
                raise ValueError(
                    f"{name}: labels {tuple(split.labels.shape)} do not match train's "
                    f"{tuple(reference.labels.shape)} beyond N"
                )
            if split.padding != reference.padding:
                raise ValueError(f"{name}: padding {split.padding!r} != {reference.padding!r}")

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names, sorted."""
        return tuple(sorted(self.train.modalities))

    @property
    def feature_sizes(self) -> dict[str, int]:
        """Modality name -> D."""
        return {k: int(self.train.modalities[k].shape[2]) for k in self.modalities}

    def splits(self) -> dict[str, SequenceSplit]:
        """``{"train": ..., "valid": ..., "test": ...}``."""
        return {"train": self.train, "valid": self.valid, "test": self.test}


@dataclass
class _RawSplit:
    """Arrays of one split as read, before cleaning; ``sources`` names files for errors."""

    features: dict[str, np.ndarray]
    labels: np.ndarray
    sources: dict[str, str]
    ids: tuple[str, ...] | None = None
    lengths: np.ndarray | None = None


# ---------------------------------------------------------------- shared building steps


def _replace_nonfinite(name: str, arrays: Sequence[np.ndarray]) -> None:
    """Set -inf, +inf and NaN to 0 in place; one warning with the counts if any."""
    neg = sum(int(np.isneginf(a).sum()) for a in arrays)
    pos = sum(int(np.isposinf(a).sum()) for a in arrays)
    nan = sum(int(np.isnan(a).sum()) for a in arrays)
    if neg + pos + nan == 0:
        return
    for a in arrays:
        a[~np.isfinite(a)] = 0.0
    warnings.warn(
        f"{name}: replaced {neg} -inf, {pos} +inf and {nan} NaN values by 0",
        stacklevel=4,
    )


def _padding_steps(features: Mapping[str, np.ndarray]) -> np.ndarray:
    """(N, T) bool: steps where every modality is all-zero."""
    zero_steps = [np.all(x == 0, axis=2) for x in features.values()]
    return np.asarray(np.logical_and.reduce(zero_steps), dtype=bool)


def _edge_counts(pad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leading and trailing padding steps per sample, and which samples have any data."""
    valid = ~pad
    observed = np.asarray(valid.any(axis=1), dtype=bool)
    lead = np.where(observed, np.argmax(valid, axis=1), 0)
    trail = np.where(observed, np.argmax(valid[:, ::-1], axis=1), 0)
    return lead, trail, observed


def _detect_padding(raw: Mapping[str, _RawSplit]) -> Padding:
    lead_total = trail_total = 0
    for split in raw.values():
        lead, trail, _ = _edge_counts(_padding_steps(split.features))
        lead_total += int(lead.sum())
        trail_total += int(trail.sum())
    return "end" if trail_total > lead_total else "front"


def _lengths(features: Mapping[str, np.ndarray], padding: Padding) -> np.ndarray:
    pad = _padding_steps(features)
    lead, trail, observed = _edge_counts(pad)
    edge = lead if padding == "front" else trail
    return np.where(observed, pad.shape[1] - edge, 0)


def _check_split(split: str, raw: _RawSplit) -> None:
    """Ranks and matching N (and T) across modalities and labels, naming the files."""
    shapes = {k: v.shape for k, v in raw.features.items()}
    listing = ", ".join(f"{k} {shapes[k]} from {raw.sources[k]}" for k in sorted(shapes))
    listing += f", labels {raw.labels.shape} from {raw.sources['labels']}"
    for name, shape in shapes.items():
        if len(shape) != 3:
            raise ValueError(
                f"{split}: modality {name!r} from {raw.sources[name]} must be (N, T, D), "
                f"got shape {shape}"
            )
    if len({s[:2] for s in shapes.values()}) > 1:
        raise ValueError(f"{split}: modalities disagree on (N, T): {listing}")
    if raw.labels.ndim == 0 or raw.labels.shape[0] != next(iter(shapes.values()))[0]:
        raise ValueError(f"{split}: labels and modalities disagree on N: {listing}")
    if raw.ids is not None and len(raw.ids) != raw.labels.shape[0]:
        raise ValueError(
            f"{split}: {len(raw.ids)} ids for {raw.labels.shape[0]} samples: {listing}"
        )


def _build(
    raw: Mapping[str, _RawSplit], *, task: Task, output_size: int, padding: Padding | str
) -> SequenceDataset:
    """Validate, clean non-finite values, find the padding side and wrap in tensors."""
    if padding not in ("auto", "front", "end"):
        raise ValueError(f"padding must be 'auto', 'front' or 'end', got {padding!r}")
    for name, split in raw.items():
        _check_split(name, split)
    for modality in sorted(raw["train"].features):
        _replace_nonfinite(modality, [split.features[modality] for split in raw.values()])
    side: Padding = "end" if padding == "end" else "front"
    if padding == "auto":
        side = _detect_padding(raw)
    splits = {}
    for name, split in raw.items():
        lengths = split.lengths if split.lengths is not None else _lengths(split.features, side)
        splits[name] = SequenceSplit(
            modalities={k: torch.from_numpy(v) for k, v in sorted(split.features.items())},
            labels=torch.from_numpy(np.ascontiguousarray(split.labels, dtype=np.float32)),
            lengths=torch.from_numpy(lengths.astype(np.int64)),
            padding=side,
            present={
                k: torch.from_numpy(np.any(v != 0, axis=(1, 2)))
                for k, v in sorted(split.features.items())
            },
            ids=split.ids,
        )
    return SequenceDataset(**splits, task=task, output_size=output_size)


def _common_modalities(available: Mapping[str, set[str]], source: str) -> set[str]:
    """Modalities present in every split; warns about the others (they are dropped)."""
    common = set.intersection(*available.values())
    for name in sorted(set.union(*available.values()) - common):
        where = ", ".join(s for s in SPLITS if name in available[s])
        warnings.warn(
            f"{source}: modality {name!r} is only in split(s) {where}; dropped (a modality "
            "must exist in every split)",
            stacklevel=3,
        )
    if not common:
        raise ValueError(f"{source}: no modality is present in all of {', '.join(SPLITS)}")
    return common


FLOAT32_MAX = float(np.finfo(np.float32).max)


def _as_float32(x: Any, what: str) -> np.ndarray:
    """``x`` as a float32 array; finite values beyond the float32 range are an error."""
    try:
        wide = np.asarray(x)
        if wide.dtype.kind not in "biuf":  # objects, strings: numbers or an error
            wide = np.asarray(wide, dtype=np.float64)
        with np.errstate(over="ignore"):  # overflow is reported below, with a count
            out = np.array(wide, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as error:
        raise ValueError(f"{what}: cannot read as a float array ({error})") from error
    if wide.dtype.kind == "f" and wide.dtype.itemsize > 4:
        beyond = np.isinf(out) & np.isfinite(wide)
        if beyond.any():
            raise ValueError(
                f"{what}: {int(beyond.sum())} finite values beyond the float32 range "
                f"(largest magnitude {np.abs(wide[beyond]).max():.3g} > {FLOAT32_MAX:.8g}); "
                "rescale them before loading"
            )
    return out


def _one_hot_to_index(y: np.ndarray, what: str) -> np.ndarray:
    """(..., C) one-hot rows -> (...) class indices; ValueError on any other row."""
    bad = ~(np.isin(y, (0.0, 1.0)).all(axis=-1) & (y.sum(axis=-1) == 1))
    if bad.any():
        raise ValueError(f"{what}: {int(bad.sum())} label rows are not one-hot (shape {y.shape})")
    return np.asarray(np.argmax(y, axis=-1), dtype=np.float32)


def _check_finite_labels(y: np.ndarray, what: str) -> None:
    if not np.isfinite(y).all():
        raise ValueError(f"{what}: {int((~np.isfinite(y)).sum())} labels are NaN or infinite")


def _import_h5py() -> ModuleType:
    try:
        import h5py
    except ImportError as error:
        raise ImportError(
            'reading HDF5 files needs h5py: pip install "factorkit[examples]"'
        ) from error
    return h5py


# What h5py raises on a truncated, empty, random or corrupt file, at opening or later
# when a damaged object is reached (e.g. KeyError('message not aligned')).
_H5_DAMAGE = (OSError, RuntimeError, KeyError, TypeError, AttributeError, UnicodeDecodeError)


@contextmanager
def _reading_h5(path: Path) -> Iterator[Any]:
    """An open HDF5 file; damage found while reading it becomes a ValueError naming it."""
    h5py = _import_h5py()
    try:
        with h5py.File(path, "r") as f:
            yield f
    except FileNotFoundError:
        raise
    except _H5_DAMAGE as error:
        raise ValueError(
            f"{path}: unreadable HDF5 file, truncated or corrupt ({type(error).__name__}: {error})"
        ) from error


def _dataset(h5py: ModuleType, node: Any, path: Path, key: str) -> Any:
    """``node`` if it is an HDF5 dataset (an array), else a ValueError naming the file."""
    if not isinstance(node, h5py.Dataset):
        raise ValueError(
            f"{path}: {key!r} is a {type(node).__name__}, expected a dataset (an array)"
        )
    return node


# ---------------------------------------------------------------- MFN h5 layout


def _read_h5_array(path: Path) -> np.ndarray:
    """The array under ``d1`` (newer MFN files) or ``data`` (older ones), as float32."""
    h5py = _import_h5py()
    with _reading_h5(path) as f:
        for key in ("d1", "data"):
            if key in f:
                return _as_float32(_dataset(h5py, f[key], path, key)[()], str(path))
        raise ValueError(f"{path}: expected a dataset under key 'd1' or 'data', got {sorted(f)}")


def _mfn_files(directory: Path, split: str) -> dict[str, Path]:
    """name -> file for one split: ``<name>_<split>.h5`` or ``<name>_<split>_emb.h5``."""
    files: dict[str, Path] = {}
    for path in sorted(directory.glob(f"*_{split}*.h5")):
        for suffix in (f"_{split}", f"_{split}_emb"):
            if path.stem.endswith(suffix) and len(path.stem) > len(suffix):
                name = path.stem[: -len(suffix)]
                if name in files:
                    raise ValueError(f"{directory}: both {files[name].name} and {path.name}")
                files[name] = path
    if "y" not in files:
        raise ValueError(f"{directory}: split {split!r} is missing (no label file y_{split}.h5)")
    return files


def _mfn_labels(dataset: str, y: np.ndarray, what: str) -> np.ndarray:
    _check_finite_labels(y, what)
    if dataset == "pom":
        if y.ndim != 2 or y.shape[1] != 17:
            raise ValueError(f"{what}: POM labels must be (N, 17), got {y.shape}")
        return y
    if dataset == "mmmo":
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            raise ValueError(f"{what}: MMMO labels must be (N,) or (N, 1), got {y.shape}")
        return y
    if y.ndim != 2 or y.shape[1] != 3:
        raise ValueError(f"{what}: YouTube labels must be one-hot (N, 3), got {y.shape}")
    return _one_hot_to_index(y, what)


def load_mfn_h5(
    directory: str | Path, dataset: str, *, padding: Padding | Literal["auto"] = "auto"
) -> SequenceDataset:
    """Load the MFN h5 layout: one file per modality and split, labels in ``y_<split>.h5``.

    Files are ``<modality>_<split>.h5`` or ``<modality>_<split>_emb.h5`` (text embeddings),
    split in train/valid/test, each holding one array under ``d1`` or ``data``. Only
    modalities present in every split are kept (in the public MMMO and YouTube copies text
    exists for valid and test only: it is dropped with a warning).

    Labels by dataset: ``"pom"``: (N, 17) personality traits, regression;
    ``"mmmo"``: (N,) sentiment 1..5, regression; ``"youtube"``: (N, 3) one-hot
    negative/neutral/positive, converted to class indices 0..2.

    Args:
        directory: the folder holding the files.
        dataset: one of ``"mmmo"``, ``"pom"``, ``"youtube"`` (sets the label format).
        padding: ``"auto"`` detects the zero-padding side, or give ``"front"``/``"end"``.

    Returns:
        A :class:`SequenceDataset` (float32 features, sorted modality names as in the
        file names: ``"audio"``, ``"video"``...).

    Shapes:
        modalities[name]: (N, T, D) with T = 20 in the public files. labels: (N, 17) for
        POM, (N,) otherwise.

    Raises:
        ValueError: unknown dataset, a missing split or label file, a truncated, empty or
            corrupt file, a file without a ``d1`` or ``data`` dataset, wrong ranks, N/T
            that differ between files of a split, or finite values beyond the float32
            range; each names the file.
        ImportError: h5py is not installed.
    """
    if dataset not in MFN_DATASETS:
        raise ValueError(f"dataset must be one of {MFN_DATASETS}, got {dataset!r}")
    folder = Path(directory)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a directory")
    files = {split: _mfn_files(folder, split) for split in SPLITS}
    available = {split: set(names) - {"y"} for split, names in files.items()}
    modalities = _common_modalities(available, str(folder))
    raw = {}
    for split, paths in files.items():
        labels_path = paths["y"]
        raw[split] = _RawSplit(
            features={m: _read_h5_array(paths[m]) for m in sorted(modalities)},
            labels=_mfn_labels(dataset, _read_h5_array(labels_path), str(labels_path)),
            sources={**{m: paths[m].name for m in modalities}, "labels": labels_path.name},
        )
    if dataset == "youtube":
        return _build(raw, task="classification", output_size=3, padding=padding)
    return _build(
        raw, task="regression", output_size=17 if dataset == "pom" else 1, padding=padding
    )


# ---------------------------------------------------------------- MultiBench / MulT pickles


def _pickle_labels(labels: Any, what: str) -> tuple[np.ndarray, Task, int]:
    """MOSI/MOSEI (N, 1, 1) -> (N,) regression; (N, 1, K) -> (N, K) regression;
    IEMOCAP (N, C, 2) one-hot per emotion -> (N, C) multilabel 0/1."""
    y = _as_float32(labels, what)
    _check_finite_labels(y, what)
    if y.ndim == 3 and y.shape[1] > 1 and y.shape[2] == 2:
        return _one_hot_to_index(y, what), "multilabel", y.shape[1]
    if y.ndim == 3 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim == 1:
        return y, "regression", 1
    if y.ndim == 2:
        return y, "regression", y.shape[1]
    raise ValueError(
        f"{what}: labels must be (N,), (N, K), (N, 1, K) or (N, C, 2) one-hot, got {y.shape}"
    )


def _as_id(value: Any) -> str:
    """bytes are decoded; arrays (MOSEI stores [video, start, end]) are joined with '_'."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray | list | tuple):
        return "_".join(_as_id(v) for v in np.asarray(value).ravel().tolist())
    return str(value)


# What unpickling raises on a truncated, empty or corrupt file: pickle's documentation
# names the first five; damaged lengths, strings and numpy array states give the others.
_PICKLE_DAMAGE = (
    pickle.UnpicklingError,
    EOFError,
    AttributeError,
    ImportError,
    IndexError,
    KeyError,
    TypeError,
    ValueError,
    OverflowError,
    MemoryError,
    RuntimeError,
    SystemError,
)


def _read_pickle(path: Path) -> Any:
    """The unpickled object; damage becomes a ValueError naming the file."""
    with open(path, "rb") as f:
        try:
            # latin1 reads the numpy arrays inside pickles written by Python 2.
            return pickle.load(f, encoding="latin1")
        except _PICKLE_DAMAGE as error:
            raise ValueError(
                f"{path}: unreadable pickle, truncated or corrupt ({type(error).__name__}: {error})"
            ) from error


def load_multibench_pickle(
    path: str | Path, *, padding: Padding | Literal["auto"] = "auto"
) -> SequenceDataset:
    """Load the MultiBench / MulT pickle layout (``mosi_data.pkl``, ``iemocap_data.pkl``...).

    The pickle is a dict with ``"train"``, ``"valid"`` and ``"test"``, each a dict with
    ``"text"``, ``"audio"``, ``"vision"`` (N, T, D) arrays, ``"labels"`` and ``"id"``.
    Other keys (``"raw_text"``...) are ignored; a missing ``"id"`` gives ``ids=None``.

    Labels: (N, 1, 1) sentiment in [-3, 3] (MOSI, MOSEI) becomes (N,) regression;
    (N, 1, K) becomes (N, K) regression; IEMOCAP's (N, 4, 2) (neutral, happy, sad, angry,
    each one-hot [no, yes]) becomes (N, 4) 0/1, task ``"multilabel"``. Ids that are
    arrays (MOSEI: video, start, end) are joined with ``"_"``.

    Args:
        path: the pickle file. Pickles run code when loaded: only load trusted files.
        padding: ``"auto"`` detects the zero-padding side, or give ``"front"``/``"end"``.

    Returns:
        A :class:`SequenceDataset` with modalities among ``"audio"``, ``"text"``,
        ``"vision"`` (those present in every split).

    Shapes:
        modalities[name]: (N, T, D), T = 50 in the MulT files. labels: (N,) or (N, K).

    Raises:
        ValueError: a truncated or corrupt pickle, not a dict of splits, a missing split
            or key, wrong ranks, N that differ between modalities and labels, labels of
            another shape, or finite values beyond the float32 range; each names the file.
        FileNotFoundError: no such file.
    """
    data = _read_pickle(Path(path))
    name = Path(path).name
    if not isinstance(data, Mapping) or any(s not in data for s in SPLITS):
        found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"{name}: expected a dict with keys {SPLITS}, got {found}")
    for split in SPLITS:
        if not isinstance(data[split], Mapping) or "labels" not in data[split]:
            raise ValueError(f"{name}: split {split!r} must be a dict with a 'labels' key")
    available = {s: {m for m in PICKLE_MODALITIES if m in data[s]} for s in SPLITS}
    modalities = _common_modalities(available, name)
    raw, tasks = {}, set()
    for split in SPLITS:
        part = data[split]
        labels, task, output_size = _pickle_labels(part["labels"], f"{name} [{split}]['labels']")
        tasks.add((task, output_size))
        raw[split] = _RawSplit(
            features={
                m: _as_float32(part[m], f"{name} [{split}][{m!r}]") for m in sorted(modalities)
            },
            labels=labels,
            sources={
                **{m: f"{name} [{split}][{m!r}]" for m in modalities},
                "labels": f"{name} [{split}]['labels']",
            },
            ids=tuple(_as_id(v) for v in part["id"]) if "id" in part else None,
        )
    if len(tasks) > 1:
        raise ValueError(f"{name}: splits disagree on the label format: {sorted(tasks)}")
    task, output_size = tasks.pop()
    return _build(raw, task=task, output_size=output_size, padding=padding)


# ---------------------------------------------------------------- CMU-MultimodalSDK .csd


def _read_csd(path: Path) -> dict[str, np.ndarray]:
    """id -> float32 (L, D) features of one computational sequence; checks intervals."""
    h5py = _import_h5py()
    with _reading_h5(path) as f:
        roots = [key for key in f if isinstance(f[key], h5py.Group) and "data" in f[key]]
        if len(roots) != 1:
            raise ValueError(f"{path}: expected one root group holding 'data', got {sorted(f)}")
        data = f[roots[0]]["data"]
        if not isinstance(data, h5py.Group):
            raise ValueError(f"{path}: '{roots[0]}/data' must be a group of ids, got a dataset")
        sequences = {}
        for video in data:
            entry = data[video]
            if not isinstance(entry, h5py.Group) or not {"features", "intervals"} <= set(entry):
                raise ValueError(f"{path}: {video!r} needs 'features' and 'intervals'")
            node = _dataset(h5py, entry["features"], path, f"{video}/features")
            features = _as_float32(node[()], f"{path} {video!r} features")
            intervals = _dataset(h5py, entry["intervals"], path, f"{video}/intervals").shape
            if features.ndim != 2 or intervals != (features.shape[0], 2):
                raise ValueError(
                    f"{path}: {video!r} has features {features.shape} and intervals "
                    f"{intervals}; expected (L, D) and (L, 2)"
                )
            sequences[str(video)] = features
    return sequences


def _fit_steps(x: np.ndarray, steps: int, keep: str, padding: Padding) -> np.ndarray:
    """(L, D) -> (steps, D): keep the first or last ``steps`` rows, zero-pad the rest."""
    x = x[:steps] if keep == "first" else x[max(len(x) - steps, 0) :]
    out = np.zeros((steps, x.shape[1]), dtype=np.float32)
    if padding == "front":
        out[steps - len(x) :] = x
    else:
        out[: len(x)] = x
    return out


def _csd_splits(
    ids: Sequence[str],
    splits: Mapping[str, Sequence[str]] | None,
    fractions: tuple[float, float],
    seed: int,
) -> dict[str, list[str]]:
    """Sorted ids per split: from the given folds (a fold id ``v`` also takes the
    segments ``v[0]``, ``v[1]``...), else a seeded shuffle cut by (valid, test) fractions."""
    if splits is None:
        order = np.random.default_rng(seed).permutation(len(ids))
        n_valid, n_test = (round(f * len(ids)) for f in fractions)
        shuffled = [ids[i] for i in order]
        cut = {"valid": shuffled[:n_valid], "test": shuffled[n_valid : n_valid + n_test]}
        cut["train"] = shuffled[n_valid + n_test :]
        return {s: sorted(cut[s]) for s in SPLITS}
    if sorted(splits) != sorted(SPLITS):
        raise ValueError(f"splits must have keys {SPLITS}, got {sorted(splits)}")
    for split in SPLITS:
        if isinstance(splits[split], str):
            raise ValueError(f"splits[{split!r}] must be a list of ids, got the string")
    owner: dict[str, str] = {}
    for split in SPLITS:
        for fold_id in splits[split]:
            if owner.setdefault(fold_id, split) != split:
                raise ValueError(f"id {fold_id!r} is in splits {owner[fold_id]!r} and {split!r}")
    assigned: dict[str, list[str]] = {s: [] for s in SPLITS}
    unassigned = 0
    for sample_id in ids:
        split_of = owner.get(sample_id) or owner.get(sample_id.split("[")[0])
        if split_of is None:
            unassigned += 1
        else:
            assigned[split_of].append(sample_id)
    unmatched = [s for s in SPLITS if splits[s] and not assigned[s]]
    if unmatched:
        examples = {s: list(splits[s])[:3] for s in unmatched}
        raise ValueError(
            f"splits: the ids of {', '.join(unmatched)} match no sample ({examples}; the "
            f"samples' ids are e.g. {list(ids[:3])}; a fold id 'v' takes 'v' and 'v[0]', "
            "'v[1]'...)"
        )
    if unassigned:
        warnings.warn(f"{unassigned} ids are in no split; dropped", stacklevel=3)
    return assigned


def _aligned_ids(sequences: Mapping[str, Mapping[str, np.ndarray]]) -> list[str]:
    """Sorted ids present in every sequence; warns how many each sequence lacked."""
    common = set.intersection(*(set(s) for s in sequences.values()))
    every = set.union(*(set(s) for s in sequences.values()))
    if common != every:
        lacking = ", ".join(f"{k}: {len(every - set(s))}" for k, s in sequences.items())
        warnings.warn(
            f"{len(every - common)} ids are not in every sequence and were dropped "
            f"(missing per sequence: {lacking})",
            stacklevel=3,
        )
    if not common:
        raise ValueError(f"no id is shared by {', '.join(sequences)}")
    return sorted(common)


def _stack_csd(
    sequence: Mapping[str, np.ndarray], ids: Sequence[str], size: int, fit: Any
) -> tuple[np.ndarray, np.ndarray]:
    """(N, T, D) fitted features of one modality and its (N,) lengths before fitting."""
    stacked = [fit(sequence[i]) for i in ids]
    steps = fit(np.zeros((0, size), np.float32)).shape[0]
    out = np.stack(stacked) if stacked else np.zeros((0, steps, size), np.float32)
    return out.astype(np.float32), np.array([len(sequence[i]) for i in ids], dtype=np.int64)


def _feature_size(sequence: Mapping[str, np.ndarray], ids: Sequence[str], name: str) -> int:
    sizes = {sequence[i].shape[1] for i in ids}
    if len(sizes) != 1:
        raise ValueError(f"modality {name!r}: feature sizes differ between ids: {sorted(sizes)}")
    return int(sizes.pop())


def _csd_labels(labels: Mapping[str, np.ndarray], ids: Sequence[str], what: str) -> np.ndarray:
    """(N,) for one label column, else (N, K); each id must hold exactly one row."""
    multi_row = [i for i in ids if labels[i].shape[0] != 1]
    if multi_row:
        raise ValueError(
            f"{what}: {len(multi_row)} ids hold more than one label row (e.g. {multi_row[0]!r} "
            f"with {labels[multi_row[0]].shape}); align the sequences to the labels first "
            "(CMU-MultimodalSDK: dataset.align(<label sequence>)) so each id is one segment"
        )
    y = np.stack([labels[i][0] for i in ids]) if ids else np.zeros((0, 1), np.float32)
    _check_finite_labels(y, what)
    return y[:, 0] if y.shape[1] == 1 else y


def load_csd(
    paths: Mapping[str, str | Path],
    labels_path: str | Path,
    *,
    num_steps: int = 50,
    keep: Literal["first", "last"] = "last",
    padding: Padding = "front",
    splits: Mapping[str, Sequence[str]] | None = None,
    valid_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> SequenceDataset:
    """Load CMU-MultimodalSDK computational sequences (``.csd``, HDF5) and a label sequence.

    Each file holds ``<root>/data/<id>/features`` (L, D) and ``<root>/data/<id>/intervals``
    (L, 2) (plus ``<root>/metadata``, not needed here). Samples are the ids present in every
    file (the others are dropped with a warning). Each modality is cut to its last (or
    first) ``num_steps`` rows and zero-padded on the ``padding`` side, as the SDK's
    examples do by default (front padding, last steps kept, so a recurrent encoder ends on
    real data). Modalities are not resampled: align them to a common time base (words)
    and to the labels with the SDK first, as the public MOSI/MOSEI files are.

    Labels: each id of the label file holds one row, (1, K) (``"Opinion Segment Labels"``:
    K = 1; MOSEI ``"All Labels"``: K = 7, sentiment then six emotions); K = 1 gives (N,).
    Task ``"regression"``, output size K.

    Args:
        paths: modality name -> ``.csd`` file.
        labels_path: the label ``.csd`` file.
        num_steps: T, steps kept per modality.
        keep: ``"last"`` or ``"first"`` rows when a sequence is longer than ``num_steps``.
        padding: side of the zeros, ``"front"`` or ``"end"``.
        splits: ``{"train": ids, "valid": ids, "test": ids}``, e.g. the SDK's standard
            folds; a fold id ``v`` also takes the segment ids ``v[0]``, ``v[1]``...
            Without it, a shuffle seeded by ``seed`` cut by the two fractions.
        valid_fraction, test_fraction: shares of the ids when ``splits`` is None.
        seed: seed of that shuffle.

    Returns:
        A :class:`SequenceDataset`; lengths are the longest kept sequence per sample.

    Shapes:
        modalities[name]: (N, num_steps, D). labels: (N,) or (N, K).

    Raises:
        ValueError: a truncated, empty or corrupt file or one not in that layout,
            intervals that do not match features, finite values beyond the float32 range
            (each naming the file), feature sizes that differ between ids, no shared id,
            multi-row labels, a split in ``splits`` whose ids match no sample, or
            fractions outside [0, 1) or summing to 1 or more.
        FileNotFoundError: no such file.
        ImportError: h5py is not installed.
    """
    steps_ok = isinstance(num_steps, int) and not isinstance(num_steps, bool) and num_steps >= 1
    if not steps_ok or keep not in ("first", "last") or padding not in ("front", "end"):
        raise ValueError(
            f"need an int num_steps >= 1, keep in ('first', 'last'), padding in ('front', "
            f"'end'); got {num_steps!r}, {keep!r}, {padding!r}"
        )
    fractions = (valid_fraction, test_fraction)
    if not all(0 <= f < 1 for f in fractions) or not math.fsum(fractions) < 1:
        raise ValueError(
            "valid_fraction and test_fraction must lie in [0, 1) and sum to less than 1, "
            f"got {valid_fraction!r} and {test_fraction!r}"
        )
    if not paths:
        raise ValueError("paths must name at least one modality")
    sequences = {name: _read_csd(Path(p)) for name, p in sorted(paths.items())}
    labels = _read_csd(Path(labels_path))
    ids = _aligned_ids({**sequences, "labels": labels})
    sizes = {m: _feature_size(s, ids, m) for m, s in sequences.items()}
    by_split = _csd_splits(ids, splits, fractions, seed)
    raw = {}
    for split, split_ids in by_split.items():
        stacked = {
            m: _stack_csd(s, split_ids, sizes[m], lambda x: _fit_steps(x, num_steps, keep, padding))
            for m, s in sequences.items()
        }
        kept = np.minimum(np.max([n for _, n in stacked.values()], axis=0), num_steps)
        raw[split] = _RawSplit(
            features={m: x for m, (x, _) in stacked.items()},
            labels=_csd_labels(labels, split_ids, str(labels_path)),
            sources={**{m: str(paths[m]) for m in sequences}, "labels": str(labels_path)},
            ids=tuple(split_ids),
            lengths=kept,
        )
    output_size = 1 if raw["train"].labels.ndim == 1 else raw["train"].labels.shape[1]
    return _build(raw, task="regression", output_size=output_size, padding=padding)
