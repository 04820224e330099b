"""The digits example: a smoke run of the whole script, and the MFM objective learning."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

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
    assert saved["seeds"] == [0]
    run = saved["runs"]["0"]
    for model in ("mfm", "discriminative"):
        assert 0.0 <= run[model]["test_accuracy"] <= 1.0
    assert sorted(run["single_view"]) == VIEWS
    assert sorted(run["baselines"]["single_view_logistic"]) == VIEWS
    expected = {f"without_{v}" for v in VIEWS} | {f"only_{v}" for v in VIEWS} | {"random_50"}
    assert set(run["missing"]) == expected
    for name, row in run["missing"].items():
        for key in ("surrogate", "zero_fill", "mean_impute", "observed_only"):
            assert 0.0 <= row[f"{key}_accuracy"] <= 1.0, (name, key)
        assert row["surrogate_recon_mse"] > 0
        # Mean imputation of standardised features: about the features' variance, 1.
        assert 0.5 < row["mean_impute_recon_mse"] < 2.0
    # One seed: every summary value is that seed's, with no spread and no interval.
    summary = saved["summary"]
    assert summary["accuracy"]["models"]["mfm"]["test_accuracy"] == {
        "mean": round(run["mfm"]["test_accuracy"], 4),
        "std": None,
        "values": [round(run["mfm"]["test_accuracy"], 4)],
    }
    assert summary["accuracy"]["differences"]["mlp"]["test_accuracy"]["low"] is None
    curves = summary["robustness"]["models"]
    assert set(curves) == {"surrogate", "zero_fill", "mean_impute", "observed_only"}
    for method, curve in curves.items():
        assert curve["area"]["mean"] == round(run["robustness"][method]["area"], 4)
        # Nothing is missing at rate 0: the imputations are the MFM on complete views.
        if method != "observed_only":
            assert curve["rate_0.0"]["mean"] == round(run["mfm"]["test_accuracy"], 4)
    assert (out / "robustness.png") in map(Path, metrics["plots"])
    for plot in metrics["plots"]:
        assert Path(plot).stat().st_size > 10_000
    # The checkpoint is the model the metrics describe.
    assert round(checkpoint_accuracy(out, 400), 4) == run["mfm"]["test_accuracy"]
    # Every number is rounded: 4 places, or 4 significant digits below 0.01.
    for value in floats(saved):
        assert value == round(value, 4) or (abs(value) < 0.01 and value == float(f"{value:.4g}"))
    assert metrics == saved


def floats(value: Any) -> list[float]:
    """Every float in a nested JSON value."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [f for v in value for f in floats(v)]
    return []


def without_timings(metrics: Any) -> Any:
    """The metrics without wall times (which differ between identical runs)."""
    if isinstance(metrics, dict):
        return {k: without_timings(v) for k, v in metrics.items() if not k.endswith("seconds")}
    return metrics


def test_same_seed_gives_identical_results_on_cpu(tmp_path: Path) -> None:
    args = ["--subset", "300", "--epochs", "2", "--no-progress", "--no-plots", "--no-missing"]
    first = mfm_digits.main([*args, "--no-baselines", "--out", str(tmp_path / "a")])
    second = mfm_digits.main([*args, "--no-baselines", "--out", str(tmp_path / "b")])
    assert without_timings(first["runs"]) == without_timings(second["runs"])
    a = torch.load(tmp_path / "a" / "mfm.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "mfm.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a if torch.is_tensor(a[k]))


def exact(accuracy: float, most_samples: int = 100) -> float:
    """The fraction k / n (n <= ``most_samples``) that ``accuracy``, rounded to 4 places, is."""
    return float(Fraction(accuracy).limit_denominator(most_samples))


def test_seeds_are_summarised_and_each_reproduces_alone(tmp_path: Path) -> None:
    """``--seed 1 --seeds 2`` runs seeds 1 and 2; seed 2 is the run of ``--seed 2``."""
    args = ["--subset", "300", "--epochs", "2", "--no-progress", "--no-plots", "--no-missing"]
    both = mfm_digits.main([*args, "--seed", "1", "--seeds", "2", "--out", str(tmp_path / "b")])
    alone = mfm_digits.main([*args, "--seed", "2", "--out", str(tmp_path / "a")])
    assert both["seeds"] == [1, 2]
    assert without_timings(both["runs"]["2"]) == without_timings(alone["runs"]["2"])
    assert (tmp_path / "b" / "seed_1" / "mfm.pt").exists()
    runs = [both["runs"][s] for s in ("1", "2")]
    # The JSON holds accuracies to 4 places; each is k / n (n = 72 and 77 test samples of
    # the 300), and fractions of denominator <= 100 lie >= 1e-4 apart: the nearest is exact.
    mfm = [exact(r["mfm"]["test_accuracy"]) for r in runs]
    mlp = [exact(r["baselines"]["mlp"]) for r in runs]
    accuracy = both["summary"]["accuracy"]
    entry = accuracy["models"]["mfm"]["test_accuracy"]
    assert entry["values"] == [round(v, 4) for v in mfm]
    assert entry["mean"] == round((mfm[0] + mfm[1]) / 2, 4)
    assert entry["std"] == pytest.approx(abs(mfm[0] - mfm[1]) / 2**0.5, abs=1e-4)
    paired = accuracy["differences"]["mlp"]["test_accuracy"]
    d = [a - b for a, b in zip(mfm, mlp, strict=True)]
    assert paired["values"] == pytest.approx(d, abs=1e-4)
    # Two seeds: mean +- t_{0.975, 1} * |d1 - d2| / 2, with t_{0.975, 1} = 12.706.
    half = 12.7062 * abs(d[0] - d[1]) / 2
    assert paired["low"] == pytest.approx((d[0] + d[1]) / 2 - half, abs=2e-4)
    assert paired["high"] == pytest.approx((d[0] + d[1]) / 2 + half, abs=2e-4)
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["seeds"] == [1, 2]


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
    folder = re.findall(r"^wrote (\S+)/ ", result.stdout, flags=re.MULTILINE)[-1]
    assert Path(folder).parent == Path("runs/mfm_digits")
    metrics = json.loads((ROOT / folder / "metrics.json").read_text())
    run = metrics["runs"]["0"]
    assert run["mfm"]["test_accuracy"] >= 0.97
    assert set(run["missing"]) >= {"random_50", "without_pix", "only_pix"}


def test_distributed_run_with_two_processes(tmp_path: Path) -> None:
    """torchrun with 2 gloo processes: DDP, DistributedSampler, rank 0 saves the results."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"needs torchrun next to {sys.executable} (installed with torch)")
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
    accuracy = metrics["runs"]["0"]["mfm"]["test_accuracy"]
    assert round(checkpoint_accuracy(tmp_path, 300), 4) == accuracy


QUICK = ["--subset", "200", "--epochs", "1", "--no-progress", "--no-plots", "--no-missing"]


def test_each_run_gets_its_own_folder_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without ``--out`` every run writes a new dated folder under runs/mfm_digits and
    prints it last; a second run leaves the first one's files alone."""
    monkeypatch.chdir(tmp_path)
    folders = []
    for _ in range(2):
        metrics = mfm_digits.main([*QUICK, "--no-baselines"])
        last = capsys.readouterr().out.strip().splitlines()[-1]
        folder = Path(re.fullmatch(r"wrote (\S+)/ \(metrics\.json, mfm\.pt\)", last)[1])  # type: ignore[index]
        assert folder.parent == Path("runs/mfm_digits")
        assert json.loads((folder / "metrics.json").read_text()) == metrics
        assert (folder / "mfm.pt").is_file()
        folders.append(folder)
    assert folders[0] != folders[1]
    assert sorted(p.name for p in (tmp_path / "runs" / "mfm_digits").iterdir()) == sorted(
        f.name for f in folders
    )


def test_out_holding_a_run_needs_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    first = mfm_digits.main([*QUICK, "--no-baselines", "--out", str(out)])
    written = (out / "metrics.json").read_text()
    with pytest.raises(SystemExit) as refused:
        mfm_digits.main([*QUICK, "--no-baselines", "--seed", "1", "--out", str(out)])
    assert refused.value.code == 2
    assert f"--out {out} already holds a run" in capsys.readouterr().err
    assert (out / "metrics.json").read_text() == written
    again = [*QUICK, "--no-baselines", "--seed", "1", "--out", str(out), "--overwrite"]
    second = mfm_digits.main(again)
    assert json.loads((out / "metrics.json").read_text()) == second != first


def npz(path: Path, **arrays: Any) -> str:
    import numpy as np

    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    return str(path)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "argument --data: no such file: {tmp}/none.npz"),
        ("keys", "argument --data: {tmp}/keys.npz: unknown keys ['label']"),
        ("nan", "argument --data: {tmp}/nan.npz: view_a"),
        ("name", "argument --data: expected one of uci-mfeat, sklearn-digits or a .npz file"),
        ("seeds", "argument --seeds: must be >= 1, got 0"),
        ("rate", "argument --missing-rate: must be in [0, 1), got 1.5"),
        ("lr", "argument --lr: must be a finite number > 0, got -1"),
        ("device", "argument --device: invalid choice: 'gpu'"),
        ("out", "--out {tmp}/done already holds a run (metrics.json)"),
    ],
)
def test_user_mistakes_end_with_one_line(
    case: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Exit status 2, one line on stderr naming the option and the problem, no traceback."""
    labels = [0, 1, 0, 1]
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / "metrics.json").write_text("{}")
    args = {
        "missing": ["--data", str(tmp_path / "none.npz")],
        "keys": ["--data", npz(tmp_path / "keys.npz", label=labels, view_a=torch.ones(4, 2))],
        "nan": [
            "--data",
            npz(tmp_path / "nan.npz", labels=labels, view_a=[[0.0, float("nan")]] * 4),
        ],
        "name": ["--data", "digits.csv"],
        "seeds": ["--seeds", "0"],
        "rate": ["--missing-rate", "1.5"],
        "lr": ["--lr", "-1"],
        "device": ["--device", "gpu"],
        "out": ["--out", str(tmp_path / "done")],
    }[case]
    with pytest.raises(SystemExit) as error:
        mfm_digits.main([*args, "--no-progress", "--no-plots"])
    assert error.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = message.format(tmp=tmp_path)
    assert captured.err.startswith(f"python -m examples.mfm_digits: error: {line}")
    assert captured.err.endswith(" (see --help)\n") and captured.err.count("\n") == 1


def test_a_mistake_prints_no_traceback_from_the_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "examples.mfm_digits", "--data", str(tmp_path / "none.npz")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr == (
        f"python -m examples.mfm_digits: error: argument --data: no such file: "
        f"{tmp_path / 'none.npz'} (see --help)\n"
    )


def test_help_gives_every_option_a_help_text_and_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no hyphen breaks
    parser = mfm_digits.command_line()
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, action.option_strings
        if action.default not in (None, False, "==SUPPRESS=="):
            assert f"(default: {action.default})" in text, action.dest
    assert "(default: 60)" in text and "(default: 0.001)" in text
    # The description keeps its layout (the example commands, one per line).
    assert "\n    python -m examples.mfm_digits --data sklearn-digits\n" in text


def test_compile_on_the_cpu_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from examples import cli

    cli.warn_compile_on_cpu("prog", True, torch.device("cuda"))
    cli.warn_compile_on_cpu("prog", False, torch.device("cpu"))
    assert capsys.readouterr().err == ""
    cli.warn_compile_on_cpu("prog", True, torch.device("cpu"))
    err = capsys.readouterr().err
    assert err.startswith("prog: warning: --compile on the CPU is slow") and err.count("\n") == 1
