"""Multi-view classification data for the MFM examples: loaders, splits, standardisation.

Three sources give the same container, :class:`MultiViewDataset`:

- :func:`load_uci_mfeat`: UCI Multiple Features handwritten digits, shipped in
  ``examples/data/uci_mfeat.npz`` (2000 digits, 10 classes, 6 vector views).
- :func:`load_sklearn_digits`: scikit-learn's bundled 8x8 digits, top and bottom image
  halves as two image views.
- :func:`load_npz`: your own data in the ``.npz`` format of ``examples/README.md``.

Every dataset carries a train/validation/test split (the file's own, or a seeded
stratified one), and :func:`standardize` fits per-feature statistics on the training
split only.

Shapes:
    N = samples, D = features of a vector view, (C, H, W) = channels, height, width of an
    image view. Views are ``(N, D)`` or ``(N, C, H, W)`` float32, labels ``(N,)`` int64.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from numpy.typing import ArrayLike

__all__ = [
    "DATASETS",
    "DEFAULT_FRACTIONS",
    "SPLITS",
    "UCI_MFEAT_PATH",
    "MultiViewDataset",
    "SplitName",
    "Standardization",
    "fit_standardization",
    "from_arrays",
    "load_npz",
    "load_sklearn_digits",
    "load_uci_mfeat",
    "standardize",
    "stratified_split",
]

SplitName = Literal["train", "validation", "test"]
SPLITS: tuple[SplitName, ...] = ("train", "validation", "test")
"""Split names; a sample's split code is the index of its split here (0, 1, 2)."""
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.6, 0.15, 0.25)
UCI_MFEAT_PATH = Path(__file__).parent / "data" / "uci_mfeat.npz"

_VIEW_PREFIX = "view_"
_VIEW_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True, eq=False)
class MultiViewDataset:
    """Views, labels and a train/validation/test split of one classification dataset.

    Build one with :func:`from_arrays` or a ``load_*`` function, which validate the data;
    the constructor only checks shapes and dtypes.

    Attributes:
        name: Where the data came from (dataset name or file path), used in messages.
        views: View name -> float32 tensor ``(N, D)`` or ``(N, C, H, W)``, sorted by name.
        labels: ``(N,)`` int64 class indices in ``[0, num_classes)``.
        split_codes: ``(N,)`` int64, 0/1/2 = train/validation/test (see :data:`SPLITS`).
        classes: The original label value of each class index (``classes[labels[i]]``).
    """

    name: str
    views: dict[str, torch.Tensor]
    labels: torch.Tensor
    split_codes: torch.Tensor
    classes: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        # Sorted views make every per-view loop and output deterministic (design contract).
        object.__setattr__(self, "views", dict(sorted(self.views.items())))
        n = self.labels.shape[0]
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(f"{self.name}: labels must be (N,) int64, got {self._desc()}")
        if self.split_codes.dtype != torch.int64 or self.split_codes.shape != (n,):
            raise ValueError(f"{self.name}: split_codes must be ({n},) int64, got {self._desc()}")
        for view, x in self.views.items():
            if x.dtype != torch.float32 or x.ndim not in (2, 4) or x.shape[0] != n:
                raise ValueError(
                    f"{self.name}: view {view!r} must be float32 ({n}, D) or ({n}, C, H, W), "
                    f"got {self._desc()}"
                )
        if not self.classes and n:
            object.__setattr__(self, "classes", tuple(range(int(self.labels.max()) + 1)))

    def _desc(self) -> str:
        parts = [f"{k} {tuple(v.shape)} {v.dtype}" for k, v in self.views.items()]
        parts += [f"labels {tuple(self.labels.shape)} {self.labels.dtype}"]
        parts += [f"split_codes {tuple(self.split_codes.shape)} {self.split_codes.dtype}"]
        return ", ".join(parts)

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def view_names(self) -> tuple[str, ...]:
        return tuple(self.views)

    @property
    def view_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample shape of each view: ``(D,)`` or ``(C, H, W)``."""
        return {k: tuple(v.shape[1:]) for k, v in self.views.items()}

    def split_indices(self, split: SplitName) -> torch.Tensor:
        """Indices ``(N_split,)`` of the samples in ``split``, ascending."""
        return torch.nonzero(self.split_codes == _split_code(split)).flatten()

    def split(self, split: SplitName) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The views and labels of one split, e.g. ``views, labels = ds.split("train")``."""
        index = self.split_indices(split)
        return {k: v[index] for k, v in self.views.items()}, self.labels[index]

    def select(self, indices: torch.Tensor | Sequence[int]) -> MultiViewDataset:
        """A dataset of the given samples, keeping their split codes (e.g. a small subset)."""
        index = torch.as_tensor(indices, dtype=torch.int64)
        return MultiViewDataset(
            name=self.name,
            views={k: v[index] for k, v in self.views.items()},
            labels=self.labels[index],
            split_codes=self.split_codes[index],
            classes=self.classes,
        )

    def to(self, device: torch.device | str) -> MultiViewDataset:
        """The same dataset with every tensor on ``device``."""
        return MultiViewDataset(
            name=self.name,
            views={k: v.to(device) for k, v in self.views.items()},
            labels=self.labels.to(device),
            split_codes=self.split_codes.to(device),
            classes=self.classes,
        )


def _split_code(split: str) -> int:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    return SPLITS.index(split)


# --------------------------------------------------------------------------------------
# Splitting


def stratified_split(
    labels: ArrayLike,
    *,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
    seed: int = 0,
) -> np.ndarray:
    """Seeded stratified train/validation/test assignment.

    Each class is shuffled with ``numpy.random.default_rng(seed)`` (classes in ascending
    order) and cut into ``round(f_val * n_c)`` validation, ``round(f_test * n_c)`` test and
    the rest train samples (halves round up). The same labels and seed always give the
    same split.

    Shapes:
        labels: ``(N,)`` integers. Returns ``(N,)`` int64 codes, 0/1/2 = train/val/test.
    """
    _check_fractions(fractions)
    y = np.asarray(labels)
    codes = np.zeros(y.shape[0], dtype=np.int64)
    rng = np.random.default_rng(seed)
    for value in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == value))
        n_val = int(np.floor(fractions[1] * members.size + 0.5))
        n_test = int(np.floor(fractions[2] * members.size + 0.5))
        n_train = members.size - n_val - n_test
        codes[members[n_train : n_train + n_val]] = 1
        codes[members[n_train + n_val :]] = 2
    return codes


def _check_fractions(fractions: Sequence[float]) -> None:
    ok = len(fractions) == 3 and fractions[0] > 0 and all(f >= 0 for f in fractions)
    if not ok or not abs(sum(fractions) - 1.0) <= 1e-6:  # "not <=": NaN fails too
        raise ValueError(
            f"fractions must be (train, validation, test) >= 0 with train > 0 and summing "
            f"to 1, got {tuple(fractions)}"
        )


# --------------------------------------------------------------------------------------
# Validation and construction


def from_arrays(
    views: Mapping[str, ArrayLike],
    labels: ArrayLike,
    split: ArrayLike | None = None,
    *,
    name: str = "arrays",
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> MultiViewDataset:
    """Validate in-memory arrays and build a :class:`MultiViewDataset`.

    Args:
        views: View name -> real array ``(N, D)`` or ``(N, C, H, W)``; cast to float32.
        labels: ``(N,)`` integers, any values (at least two distinct); they are mapped to
            class indices ``0..K-1`` in ascending order and kept in ``classes``.
        split: Optional ``(N,)`` integers in {0, 1, 2} = train/validation/test; when
            omitted, :func:`stratified_split` with ``seed`` and ``fractions``.
        name: Named in every error message (the file path for :func:`load_npz`).

    Raises:
        ValueError: naming ``name``, the offending array and the shapes involved.
    """
    arrays = {k: np.asarray(v) for k, v in views.items()}
    y = np.asarray(labels)
    n = _check_labels(name, y)
    float_views = _check_views(name, arrays, n)
    classes, indices = np.unique(y, return_inverse=True)
    if split is None:
        codes = stratified_split(indices, fractions=fractions, seed=seed)
    else:
        codes = np.asarray(split)
        _check_split(name, codes, n)
    _check_split_nonempty(name, codes, given=split is not None)
    return MultiViewDataset(
        name=name,
        views={k: torch.from_numpy(v) for k, v in float_views.items()},
        labels=torch.from_numpy(indices.reshape(-1).astype(np.int64)),
        split_codes=torch.from_numpy(codes.astype(np.int64)),
        classes=tuple(int(c) for c in classes),
    )


def _check_labels(source: str, y: np.ndarray) -> int:
    if y.ndim != 1:
        raise ValueError(f"{source}: labels must have shape (N,), got {y.shape}")
    if y.dtype.kind not in "iu":
        raise ValueError(
            f"{source}: labels must be integers, got dtype {y.dtype} with shape {y.shape} "
            "(whole numbers stored as floats: save labels.astype(numpy.int64))"
        )
    if np.unique(y).size < 2:
        raise ValueError(f"{source}: labels {y.shape} hold fewer than 2 classes")
    return int(y.shape[0])


def _check_views(source: str, views: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Check every view and return it as float32 (finiteness is checked after the cast)."""
    if not views:
        raise ValueError(f"{source}: no views (expected at least one array named view_<name>)")
    shapes = ", ".join(f"view_{k} {v.shape}" for k, v in views.items())
    checked: dict[str, np.ndarray] = {}
    for view, x in views.items():
        where = f"{source}: view_{view} {x.shape}"
        if not _VIEW_NAME.match(view):
            raise ValueError(f"{source}: view name {view!r} must match {_VIEW_NAME.pattern}")
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{where} has dtype {x.dtype}; views must hold real numbers")
        if x.ndim not in (2, 4) or 0 in x.shape[1:]:
            raise ValueError(f"{where} must be (N, D) vectors or (N, C, H, W) images")
        if x.shape[0] != n:
            raise ValueError(f"{source}: views and labels have unequal N: {shapes}, labels ({n},)")
        with np.errstate(over="ignore"):  # overflow is reported below, with a count
            x32 = np.ascontiguousarray(x, dtype=np.float32)
        finite = np.isfinite(x32)
        bad = x32.size - int(np.count_nonzero(finite))
        if bad:
            n_nan = int(np.count_nonzero(np.isnan(x32)))
            beyond = int(np.count_nonzero(~finite & np.isfinite(x)))
            row = int(np.flatnonzero(~finite.reshape(n, -1).all(axis=1))[0])
            raise ValueError(
                f"{where} has {bad} non-finite values as float32 ({n_nan} NaN, "
                f"{bad - n_nan - beyond} inf, {beyond} finite values beyond the float32 "
                f"range), first in row {row}"
            )
        checked[view] = x32
    return checked


def _check_split(source: str, codes: np.ndarray, n: int) -> None:
    if codes.shape != (n,):
        raise ValueError(f"{source}: split must have shape ({n},) like labels, got {codes.shape}")
    if codes.dtype.kind not in "iu":
        raise ValueError(f"{source}: split {codes.shape} must be integers, got {codes.dtype}")
    outside = ~np.isin(codes, (0, 1, 2))
    if outside.any():
        raise ValueError(
            f"{source}: split {codes.shape} has {int(outside.sum())} values outside "
            f"{{0, 1, 2}} (train/validation/test): {np.unique(codes[outside])[:5].tolist()}"
        )


def _check_split_nonempty(source: str, codes: np.ndarray, *, given: bool) -> None:
    for code, split in enumerate(SPLITS):
        if not np.any(codes == code):
            origin = "the file's split" if given else "the stratified split (too few samples?)"
            raise ValueError(f"{source}: {origin} has no {split} samples (code {code})")


# --------------------------------------------------------------------------------------
# Loaders


def load_npz(
    path: str | Path,
    *,
    seed: int = 0,
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS,
) -> MultiViewDataset:
    """Load a multi-view classification ``.npz`` (format: ``examples/README.md``).

    The archive holds ``view_<name>`` arrays (``(N, D)`` or ``(N, C, H, W)``, real
    numbers, cast to float32), ``labels`` ``(N,)`` integers and optionally ``split``
    ``(N,)`` in {0, 1, 2}; without ``split``, a stratified split with ``seed`` and
    ``fractions``. Any other key is an error (a misspelt ``label`` or ``views_x`` must
    not be dropped silently). Nothing is unpickled.

    Raises:
        ValueError: naming the file, the array and the shapes, for: a truncated or
            corrupt archive or member (a CRC error included), missing ``labels``, no
            views, unknown keys, unequal N, NaN/inf and finite values beyond the float32
            range (counted; the rule of ``examples/sentiment_data.py`` too), non-integer
            labels, split values outside {0, 1, 2}, an empty split, object arrays.
        FileNotFoundError: no such file.
    """
    source = str(path)
    arrays = _read_npz(source)
    unknown = sorted(
        k for k in arrays if k not in ("labels", "split") and not k.startswith(_VIEW_PREFIX)
    )
    if unknown:
        raise ValueError(
            f"{source}: unknown keys {unknown}; expected 'labels', optional 'split' and "
            "view_<name> arrays"
        )
    if "labels" not in arrays:
        found = ", ".join(f"{k} {v.shape}" for k, v in arrays.items()) or "nothing"
        raise ValueError(f"{source}: missing 'labels' (N,) integer array; found {found}")
    views = {k[len(_VIEW_PREFIX) :]: v for k, v in arrays.items() if k.startswith(_VIEW_PREFIX)}
    return from_arrays(
        views, arrays["labels"], arrays.get("split"), name=source, seed=seed, fractions=fractions
    )


# What numpy and zipfile raise on a truncated or corrupt archive or member (a CRC
# mismatch is a BadZipFile, a damaged compressed stream a zlib.error).
_NPZ_DAMAGE = (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError)


def _read_npz(source: str) -> dict[str, np.ndarray]:
    try:
        archive = np.load(source, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (*_NPZ_DAMAGE, ValueError) as err:
        raise ValueError(f"{source}: not a readable .npz archive ({err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{source}: not an .npz archive but one array (save with numpy.savez)")
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for key in archive.files:
            try:
                arrays[key] = archive[key]
            except ValueError as err:  # object arrays need pickle, which is refused
                raise ValueError(f"{source}: cannot read {key!r}: {err}") from err
            except _NPZ_DAMAGE as err:
                raise ValueError(
                    f"{source}: cannot read {key!r}, the archive is truncated or corrupt "
                    f"({type(err).__name__}: {err})"
                ) from err
    return arrays


def load_uci_mfeat(
    *, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> MultiViewDataset:
    """UCI Multiple Features handwritten digits, from the copy shipped in the repo.

    2000 digits ``0``-``9`` (200 each, rows ordered by class), six vector views of the same
    digit: ``fou`` 76 Fourier coefficients, ``fac`` 216 profile correlations, ``kar`` 64
    Karhunen-Loeve coefficients, ``pix`` 240 pixel averages, ``zer`` 47 Zernike moments,
    ``mor`` 6 morphological features. Raw (unstandardised) values; see :func:`standardize`.
    Source and licence (CC BY 4.0): ``examples/data/README.md``.
    """
    dataset = load_npz(UCI_MFEAT_PATH, seed=seed, fractions=fractions)
    return _renamed(dataset, "uci-mfeat")


def load_sklearn_digits(
    *, seed: int = 0, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
) -> MultiViewDataset:
    """scikit-learn's bundled 8x8 digits, the image cut into two halves as two views.

    1797 digits, 10 classes (174-183 each). Views ``top`` (image rows 0-3) and
    ``bottom`` (rows 4-7), each an image ``(N, 1, 4, 8)`` with values 0-16;
    ``torch.cat([views["top"], views["bottom"]], dim=2)`` gives the original image.
    Needs scikit-learn (``pip install "factorkit[examples]"``); nothing is downloaded.
    """
    try:
        from sklearn.datasets import load_digits  # type: ignore[import-untyped]
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'load_sklearn_digits needs scikit-learn: pip install "factorkit[examples]"'
        ) from err
    digits = load_digits()
    images = np.asarray(digits.images, dtype=np.float32)[:, None]  # (N, 1, 8, 8)
    views = {"top": images[:, :, :4], "bottom": images[:, :, 4:]}
    return from_arrays(views, digits.target, name="sklearn-digits", seed=seed, fractions=fractions)


def _renamed(dataset: MultiViewDataset, name: str) -> MultiViewDataset:
    return MultiViewDataset(
        name=name,
        views=dataset.views,
        labels=dataset.labels,
        split_codes=dataset.split_codes,
        classes=dataset.classes,
    )


DATASETS: dict[str, Callable[..., MultiViewDataset]] = {
    "uci-mfeat": load_uci_mfeat,
    "sklearn-digits": load_sklearn_digits,
}
"""Built-in datasets by name (each takes keyword arguments ``seed`` and ``fractions``)."""


# --------------------------------------------------------------------------------------
# Standardisation


@dataclass(frozen=True, eq=False)
class Standardization:
    """Per-feature statistics of the training split: ``(x - mean) / std``.

    Vector views ``(N, D)`` get one mean/std per feature, shape ``(D,)``; image views
    ``(N, C, H, W)`` one per channel, shape ``(C, 1, 1)`` (pooled over the training
    samples and pixels, as for usual image normalisation). A std below ``min_std`` is
    replaced by 1, so a feature constant on the training split is only centred and cannot
    blow up on validation/test (a plain floor would divide by ``min_std``).

    Attributes:
        mean: View name -> float32 mean, broadcastable against one sample of the view.
        std: View name -> float32 scale (> 0), same shapes.
    """

    mean: dict[str, torch.Tensor]
    std: dict[str, torch.Tensor]

    def apply(self, views: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Standardise ``views`` (same names as the statistics)."""
        self._check_names(views)
        return {k: (x - self.mean[k].to(x)) / self.std[k].to(x) for k, x in views.items()}

    def invert(self, views: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map standardised ``views`` (e.g. reconstructions) back to raw units."""
        self._check_names(views)
        return {k: x * self.std[k].to(x) + self.mean[k].to(x) for k, x in views.items()}

    def _check_names(self, views: Mapping[str, torch.Tensor]) -> None:
        if set(views) != set(self.mean):
            raise ValueError(
                f"views {sorted(views)} do not match the standardised views {sorted(self.mean)}"
            )


def fit_standardization(dataset: MultiViewDataset, *, min_std: float = 1e-6) -> Standardization:
    """Fit :class:`Standardization` on the training split of ``dataset`` (float64 sums)."""
    train = dataset.split_indices("train")
    mean: dict[str, torch.Tensor] = {}
    std: dict[str, torch.Tensor] = {}
    for view, x in dataset.views.items():
        x = x[train].double()
        dims = (0,) if x.ndim == 2 else (0, 2, 3)
        m = x.mean(dim=dims, keepdim=True)[0]
        s = x.std(dim=dims, correction=0, keepdim=True)[0]
        mean[view] = m.float()
        std[view] = torch.where(s < min_std, torch.ones_like(s), s).float()
    return Standardization(mean=mean, std=std)


def standardize(
    dataset: MultiViewDataset, *, min_std: float = 1e-6
) -> tuple[MultiViewDataset, Standardization]:
    """Standardise every split with statistics fitted on the training split only.

    Returns the standardised dataset and the statistics (to report reconstruction MSE on
    standardised features, or to map reconstructions back with ``stats.invert``).
    """
    stats = fit_standardization(dataset, min_std=min_std)
    standardized = MultiViewDataset(
        name=dataset.name,
        views=stats.apply(dataset.views),
        labels=dataset.labels,
        split_codes=dataset.split_codes,
        classes=dataset.classes,
    )
    return standardized, stats
