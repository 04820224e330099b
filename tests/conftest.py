"""Shared fixtures: deterministic seeds, one intra-op thread, and the optional real data.

The test models are small: with several threads, per-op synchronisation costs more than
it gains, and on a loaded 2-core machine it made some tests 10-20x slower.

A few tests read the public MFN sentiment features (POM, ICT-MMMO, YouTube in the MFN h5
layout), which the repository does not ship. They look in ``$FACTORKIT_SENTIMENT_DATA``,
then in ``../shared/data/mfn-sentiment`` beside the checkout, and are skipped, with a
reason that says so, when neither holds the dataset.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

SENTIMENT_DATA_VARIABLE = "FACTORKIT_SENTIMENT_DATA"
SENTIMENT_DATA_DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mfn-sentiment"
EXAMPLES_EXTRA = "install the examples extra: pip install -e '.[examples]'"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    torch.set_num_threads(1)


def sentiment_data_root() -> Path:
    """Where the MFN sentiment folders (``pom/``, ``mmmo/``, ``youtube/``) are looked for."""
    return Path(os.environ.get(SENTIMENT_DATA_VARIABLE) or SENTIMENT_DATA_DEFAULT)


@pytest.fixture
def mfn_sentiment() -> Callable[[str], Path]:
    """``folder(dataset)``: one MFN sentiment dataset's folder, or a skip saying how to get it."""
    pytest.importorskip("h5py", reason=f"the MFN h5 files need h5py: {EXAMPLES_EXTRA}")

    def folder(dataset: str) -> Path:
        path = sentiment_data_root() / dataset
        if not (path / "audio_train.h5").is_file():
            pytest.skip(
                f"needs the MFN sentiment data ({dataset}/audio_train.h5 not found in "
                f"{path.parent}): set {SENTIMENT_DATA_VARIABLE} to the folder that holds "
                "pom/, mmmo/ and youtube/, or place that folder at ../shared/data/mfn-sentiment "
                "beside the repository (see 'Sentiment data: file layouts' in examples/README.md)"
            )
        return path

    return folder
