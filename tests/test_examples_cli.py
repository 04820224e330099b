"""The examples' command line (``examples/cli.py``): rounding and the run folder."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from examples import cli
from examples.training import resolve_device


def test_rounded_keeps_four_places_or_four_significant_digits() -> None:
    metrics = {
        "test_accuracy": 0.984000027179718,  # float32 noise
        "values": [0.98765, 1.0, 0, 117.34567, -0.123456],
        "small": (1 / 30000, -2.5e-7, 0.0099999),
        "nested": {"mse": 0.012345, "none": None, "n": 3, "name": "pix", "flag": True},
        "nan": math.nan,
        "inf": -math.inf,
    }
    assert cli.rounded(metrics) == {
        "test_accuracy": 0.984,
        "values": [0.9877, 1.0, 0, 117.3457, -0.1235],
        "small": [3.333e-05, -2.5e-07, 0.01],
        "nested": {"mse": 0.0123, "none": None, "n": 3, "name": "pix", "flag": True},
        "nan": None,
        "inf": None,
    }
    assert cli.rounded({"x": 0.984000027179718}, decimals=2) == {"x": 0.98}
    with pytest.raises(TypeError, match="to the metrics JSON"):
        cli.rounded({"path": object()})


def test_run_folder_is_new_per_run_or_refuses_a_run(tmp_path: Path) -> None:
    root = tmp_path / "runs" / "example"
    first = cli.run_folder(None, root, overwrite=False)
    assert first.parent == root and len(first.name) == len("YYYYmmdd-HHMMSS")
    assert not first.exists()  # created by the run when it writes
    first.mkdir(parents=True)
    second = cli.run_folder(None, root, overwrite=False)
    assert second != first and second.parent == root
    # An explicit folder: fine while it holds no run.
    out = tmp_path / "out"
    assert cli.run_folder(out, root, overwrite=False) == out
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.run_folder(out, root, overwrite=False) == out
    (out / "metrics.json").write_text("{}")
    with pytest.raises(cli.UsageError, match=r"already holds a run \(metrics.json\); pass"):
        cli.run_folder(out, root, overwrite=False)
    assert cli.run_folder(out, root, overwrite=True) == out
    with pytest.raises(cli.UsageError, match="is a file, not a folder"):
        cli.run_folder(out / "notes.txt", root, overwrite=True)
    with pytest.raises(cli.UsageError, match=r"--metrics-out .* exists; pass --overwrite"):
        cli.check_new_file(out / "notes.txt", "--metrics-out", overwrite=False)
    cli.check_new_file(out / "notes.txt", "--metrics-out", overwrite=True)
    cli.check_new_file(out / "absent.json", "--metrics-out", overwrite=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machines without CUDA")
def test_cuda_without_cuda_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(cli.UsageError, match="argument --device: cuda was requested but CUDA"):
        resolve_device("cuda")
    from examples.mfm_sentiment.run import main

    with pytest.raises(SystemExit) as error:
        main(["--data", "d", "--dataset", "pom", "--device", "cuda"])
    assert error.value.code == 2
    assert capsys.readouterr().err == (
        "python -m examples.mfm_sentiment: error: argument --device: cuda was requested but "
        "CUDA is not available (see --help)\n"
    )
