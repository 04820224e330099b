"""The digits example: a smoke run of the whole script, and the MFM objective learning."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from examples import mfm_digits
from examples.mfm import digits_mfm, logits_of
from examples.multiview_data import load_uci_mfeat, standardize
from examples.training import Split, accuracy
from factorkit import MMDPriorLoss, mfm_loss

ROOT = Path(__file__).resolve().parents[1]
VIEWS = ["fac", "fou", "kar", "mor", "pix", "zer"]


def checkpoint_accuracy(out: Path, subset: int, seed: int = 0) -> float:
    """Test accuracy of the saved ``mfm.pt``, rebuilt the way the script builds it."""
    data = load_uci_mfeat(seed=seed)
    keep = torch.randperm(data.num_samples, generator=torch.Generator().manual_seed(seed))
    data, _ = standardize(data.select(keep[:subset].sort().values))
    model = digits_mfm(data.view_shapes, data.num_classes)
    model.load_state_dict(torch.load(out / "mfm.pt", weights_only=True))
    return accuracy(logits_of(model.eval()), Split(*data.split("test")))


def test_smoke_run_writes_complete_metrics(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--subset", "400", "--epochs", "1", "--no-progress", "--out", str(out)]
    metrics = mfm_digits.main([*args, "--metrics-out", str(tmp_path / "m.json")])
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved == json.loads((out / "metrics.json").read_text())
    assert saved["dataset"] == "uci-mfeat"
    assert saved["seconds"] > 0
    for model in ("mfm", "discriminative"):
        assert 0.0 <= saved[model]["test_accuracy"] <= 1.0
    assert sorted(saved["single_view"]) == VIEWS
    expected = {f"without_{v}" for v in VIEWS} | {f"only_{v}" for v in VIEWS} | {"random_50"}
    assert set(saved["missing"]) == expected
    for name, row in saved["missing"].items():
        for key in ("surrogate", "zero_fill", "mean_impute", "observed_only"):
            assert 0.0 <= row[f"{key}_accuracy"] <= 1.0, (name, key)
        assert row["surrogate_recon_mse"] > 0
        # Mean imputation of standardised features: about the features' variance, 1.
        assert 0.5 < row["mean_impute_recon_mse"] < 2.0
    for plot in metrics["plots"]:
        assert Path(plot).stat().st_size > 10_000
    # The checkpoint is the model the metrics describe.
    assert checkpoint_accuracy(out, 400) == saved["mfm"]["test_accuracy"]


def test_same_seed_gives_identical_results_on_cpu(tmp_path: Path) -> None:
    args = ["--subset", "300", "--epochs", "2", "--no-progress", "--no-plots", "--no-missing"]
    first = mfm_digits.main([*args, "--out", str(tmp_path / "a")])
    second = mfm_digits.main([*args, "--out", str(tmp_path / "b")])
    for key in ("mfm", "discriminative", "single_view"):
        strip = {k: v for k, v in first[key].items() if k != "epoch_seconds"}
        assert strip == {k: v for k, v in second[key].items() if k != "epoch_seconds"}
    a = torch.load(tmp_path / "a" / "mfm.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "mfm.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))


def test_every_loss_term_decreases() -> None:
    """300 training steps lower every term of the objective on the training set.

    The terms are measured on the whole training split in eval mode, the MMD terms with
    the analytic prior (no sampling noise): a mini-batch's biased MMD estimate has a
    floor of order 1/batch that grows as the codes spread out, so it can rise while the
    codes' distribution moves toward the prior.
    """
    data, _ = standardize(load_uci_mfeat(seed=0))
    train = Split(*data.split("train"))
    torch.manual_seed(0)
    model = digits_mfm(data.view_shapes, data.num_classes)
    prior = MMDPriorLoss(generator=torch.Generator().manual_seed(0))
    exact = MMDPriorLoss(estimator="analytic")

    @torch.no_grad()
    def terms_on_train() -> dict[str, float]:
        model.eval()
        out = model(train.views)
        terms = mfm_loss(out, train.views, train.labels, prior=exact)
        model.train()
        return {name: float(value) for name, value in terms.items()}

    before = terms_on_train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = train.take(torch.randint(len(train), (64,), generator=order))
        terms = mfm_loss(model(batch.views), batch.views, batch.labels, prior=prior)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
    after = terms_on_train()
    assert len(before) == 2 + len(VIEWS) + 1 + len(VIEWS)  # total, label, reconstruction/*, mmd/*
    for name in before:
        assert after[name] < 0.8 * before[name], (name, before[name], after[name])


def test_runs_as_a_script_and_as_a_module(tmp_path: Path) -> None:
    args = ["--subset", "200", "--epochs", "1", "--no-progress", "--no-plots", "--no-missing"]
    for launch in (["examples/mfm_digits.py"], ["-m", "examples.mfm_digits"]):
        out = tmp_path / launch[-1].replace("/", "_")
        result = subprocess.run(
            [sys.executable, *launch, *args, "--out", str(out)],
            cwd=ROOT, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr[-3000:]
        assert json.loads((out / "metrics.json").read_text())["dataset"] == "uci-mfeat"


def test_readme_main_command_is_this_example() -> None:
    readme = (ROOT / "README.md").read_text()
    command = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)[0].strip()
    assert command == 'pip install -e ".[examples]" && python -m examples.mfm_digits'


@pytest.mark.slow
def test_readme_main_command_trains_a_working_mfm() -> None:
    """Runs the README's main command as written (the install part is done by CI).

    The bound is a sanity check that the full pipeline learns (chance is 10%); the
    measured accuracy and the issue's 98.5% target are reported in examples/README.md.
    """
    readme = (ROOT / "README.md").read_text()
    command = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)[0].strip()
    run = command.split("&&", 1)[1].split()
    assert run[:3] == ["python", "-m", "examples.mfm_digits"]
    result = subprocess.run([sys.executable, *run[1:]], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((ROOT / "runs" / "mfm_digits" / "metrics.json").read_text())
    assert metrics["mfm"]["test_accuracy"] >= 0.97
    assert set(metrics["missing"]) >= {"random_50", "without_pix", "only_pix"}


def test_distributed_run_with_two_processes(tmp_path: Path) -> None:
    """torchrun with 2 gloo processes: DDP, DistributedSampler, rank 0 saves the results."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    args = ["--subset", "300", "--epochs", "2", "--no-progress", "--no-plots", "--no-missing"]
    result = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "examples.mfm_digits",
         "--distributed", *args, "--out", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    # Rank 0 saved the best DDP-trained weights, and they give the reported accuracy.
    assert checkpoint_accuracy(tmp_path, 300) == metrics["mfm"]["test_accuracy"]
