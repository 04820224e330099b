"""The sequence MFM sentiment example (the package examples/mfm_sentiment)."""

from __future__ import annotations

import argparse
import json
import math
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from examples.mfm_sentiment.data import Batch, prepare, simulate_missing, without
from examples.mfm_sentiment.metrics import contributions_over_time, pooled_share, sentiment_metrics
from examples.mfm_sentiment.model import build_mfm
from examples.mfm_sentiment.run import main
from examples.sentiment_data import load_mfn_h5
from factorkit import MMDPriorLoss, ModalityDecoders, lengths_to_mask, mfm_loss, random_presence

T = 6
SIZES = {"audio": 5, "video": 4}


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # These LSTMs are tiny: one thread is several times faster than two on a busy machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _write_h5(path: Path, array: np.ndarray) -> None:
    h5py = pytest.importorskip("h5py", reason="needs h5py: pip install -e '.[examples]'")
    with h5py.File(path, "w") as f:
        f.create_dataset("d1", data=array)


def _mfn_folder(tmp_path: Path, dataset: str, sizes: dict[str, int]) -> Path:
    """Front-padded MFN h5 files: labels driven by the audio mean, video absent for every
    third sample, one sample with no data per split (length 0)."""
    tmp_path.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for split, n in {"train": 48, "valid": 12, "test": 12}.items():
        lengths = rng.integers(1, T + 1, size=n)
        lengths[0] = 0
        x = {m: np.zeros((n, T, d)) for m, d in sizes.items()}
        for i, length in enumerate(lengths):
            for m, d in sizes.items():
                x[m][i, T - length :] = rng.normal(size=(length, d))
        x["video"][::3] = 0.0
        for m in sizes:
            _write_h5(tmp_path / f"{m}_{split}.h5", x[m])
        score = x["audio"].sum((1, 2)) / np.maximum(lengths, 1)
        if dataset == "youtube":
            y = np.eye(3)[np.digitize(score, [-0.5, 0.5])]
        else:
            y = np.clip(np.round(3 + score), 1, 5)
        _write_h5(tmp_path / f"y_{split}.h5", y)
    return tmp_path


def test_prepare_standardises_on_valid_present_steps_and_drops_empty(tmp_path: Path) -> None:
    data = load_mfn_h5(_mfn_folder(tmp_path, "mmmo", SIZES), "mmmo")
    prepared = prepare(data, torch.device("cpu"))
    batches, offset = prepared.batches, prepared.offset
    train = data.train.select(data.train.lengths > 0)
    assert len(batches["train"]) == len(train) == 47
    assert offset is not None
    torch.testing.assert_close(offset, train.labels.mean().reshape(1))
    b = batches["train"]
    torch.testing.assert_close(b.mask, train.step_mask())
    for m in SIZES:
        keep = b.mask & b.present[m][:, None]
        valid = b.x[m][keep].double()
        # Training statistics come from exactly these steps: mean 0, std 1 per feature.
        torch.testing.assert_close(valid.mean(0), torch.zeros(SIZES[m], dtype=torch.float64))
        torch.testing.assert_close(valid.std(0), torch.ones(SIZES[m], dtype=torch.float64))
        assert bool((b.x[m][~keep] == 0).all())
    assert b.present["video"].float().mean().item() == pytest.approx(32 / 47)


def test_simulate_missing_keeps_one_observed_and_never_revives_absent() -> None:
    present = {
        "audio": torch.tensor([True, True, False, True] * 50),
        "video": torch.tensor([True, False, True, True] * 50),
    }
    keep = random_presence(present, 200, 0.5, generator=torch.Generator().manual_seed(0))
    assert sorted(keep) == ["audio", "video"] and keep["audio"].shape == (200,)
    observed = simulate_missing(present, keep)
    both = torch.stack(list(observed.values()))
    assert bool(both.any(0).all())
    for m in present:
        assert not bool((observed[m] & ~present[m]).any())
    full = present["audio"] & present["video"]
    dropped_one = full & (both.sum(0) == 1)
    assert 0.3 < dropped_one.sum().item() / full.sum().item() < 0.9


def test_without_removes_the_modality_and_samples_left_empty() -> None:
    batch = Batch(
        {m: torch.ones(3, 2, d) for m, d in SIZES.items()},
        torch.ones(3, 2, dtype=torch.bool),
        {"audio": torch.tensor([True, True, True]), "video": torch.tensor([True, False, True])},
        torch.tensor([1.0, 2.0, 3.0]),
    )
    part = without(batch, "video")
    assert part.labels.tolist() == [1.0, 2.0, 3.0]
    assert part.present["video"].tolist() == [False] * 3
    part = without(batch, "audio")
    assert part.labels.tolist() == [1.0, 3.0]
    assert {m: p.tolist() for m, p in part.present.items()} == {
        "audio": [False, False],
        "video": [True, True],
    }


def test_metrics_by_dataset() -> None:
    y = torch.tensor([1.0, 2.0, 4.0, 5.0])
    out = sentiment_metrics(torch.tensor([[2.0], [3.0], [4.0], [3.0]]), y, "mmmo")
    assert out["mae"] == pytest.approx(1.0)
    assert out["acc_2"] == pytest.approx(0.75)  # 3.0 < 3.5 for the label-5 sample
    logits = torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]])
    out = sentiment_metrics(logits, torch.tensor([0, 1, 2, 2]), "youtube")
    assert out["accuracy"] == pytest.approx(0.75)
    # Per-class F1: 2/3, 1, 2/3 with supports 1, 1, 2.
    assert out["f1"] == pytest.approx((2 / 3 + 1 + 2 * 2 / 3) / 4)


def _check_summary(summary: dict, dataset: str, names: tuple[str, ...]) -> None:
    assert summary["dataset"] == dataset
    share = "shared_contribution_share"
    for model, keys in (("mfm", {*names, share}), ("discriminative", set(names))):
        assert set(summary[model]) == keys
        assert set(summary["std"][model]) == keys
    assert set(summary["mfm"][share]) == set(summary["std"]["mfm"][share]) == set(SIZES)
    for value in summary["mfm"][share].values():
        assert 0 <= value <= 1
    for key in ("missing", "missing_zero_fill", "missing_mean_imputation"):
        assert set(summary[key]) == {"without_audio", "without_video"}
        for part in summary[key].values():
            assert set(part) == {*names, "n"}
    for model in (
        "mfm",
        "discriminative",
        "missing",
        "missing_zero_fill",
        "missing_mean_imputation",
    ):
        scores = summary[model]
        if "missing" in model:
            flat = [v for p in scores.values() for v in p.values()]
        else:
            flat = [v for v in scores.values() if not isinstance(v, dict)]
        for value in flat:
            assert value is None or math.isfinite(value)


def test_smoke_regression_json(tmp_path: Path) -> None:
    folder = _mfn_folder(tmp_path / "data", "mmmo", SIZES)
    out = tmp_path / "metrics.json"
    returned = main(
        [
            *("--data", str(folder), "--dataset", "mmmo", "--epochs", "2"),
            *("--surrogate-epochs", "1", "--hidden-size", "8", "--num-seeds", "2"),
            *("--metrics-out", str(out), "--out", str(tmp_path / "plots")),
        ]
    )
    summary = json.loads(out.read_text())
    assert summary == returned == json.loads((tmp_path / "plots" / "metrics.json").read_text())
    # Rounded: 4 places (4 significant digits below 0.01), no float32 noise.
    for value in _floats(summary):
        assert value == round(value, 4) or (abs(value) < 0.01 and value == float(f"{value:.4g}"))
    _check_summary(summary, "mmmo", ("mae", "corr", "acc_2", "f1"))
    assert summary["seeds"] == [0, 1]
    for model in ("mfm", "discriminative"):
        assert 0 <= summary[model]["mae"] < 4
        assert 0 <= summary[model]["acc_2"] <= 1
    # Video is absent for every third sample: those samples cannot lose the audio.
    assert summary["missing"]["without_video"]["n"] == 11
    assert summary["missing"]["without_audio"]["n"] == 8
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "contributions_over_time.png",
        "curves_seed0.png",
        "curves_seed1.png",
        "metrics.json",
    ]
    # One value per time step; a step counts the test samples with the modality that
    # are longer than it (11 with audio, 8 with video), and has no value without them.
    steps_n = summary["contribution_steps_n"]
    assert steps_n["audio"][0] == 11 and steps_n["video"][0] == 8
    for m in SIZES:
        n, shares = steps_n[m], summary["shared_contribution_share_per_step"][m]
        assert len(n) == len(shares) == T
        assert n == sorted(n, reverse=True)
        for count, value in zip(n, shares, strict=True):
            assert (value is None) == (count == 0)
            assert value is None or 0 <= value <= 1


def test_smoke_classification_json(tmp_path: Path) -> None:
    folder = _mfn_folder(tmp_path / "data", "youtube", SIZES)
    out = tmp_path / "run"
    main(
        [
            *("--data", str(folder), "--dataset", "youtube", "--epochs", "1"),
            *("--surrogate-epochs", "1", "--hidden-size", "8", "--out", str(out), "--no-plots"),
        ]
    )
    assert [p.name for p in out.iterdir()] == ["metrics.json"]
    summary = json.loads((out / "metrics.json").read_text())
    _check_summary(summary, "youtube", ("accuracy", "f1"))
    for model in ("mfm", "discriminative"):
        assert 0 <= summary[model]["accuracy"] <= 1
        assert 0 <= summary[model]["f1"] <= 1


def _structured_batch(batch_size: int = 32, lengths: torch.Tensor | None = None) -> Batch:
    """Front-padded sequences driven by a 3-d factor per sample (so they can be
    reconstructed), the label its first coordinate, video absent for every third sample."""
    if lengths is None:
        lengths = torch.randint(1, T + 1, (batch_size,))
    mask = lengths_to_mask(lengths, T, layout="front")
    factor = torch.randn(batch_size, 3)
    present = {
        "audio": torch.ones(batch_size, dtype=torch.bool),
        "video": torch.arange(batch_size) % 3 != 0,
    }
    x = {}
    for m, d in SIZES.items():
        seq = (factor @ torch.randn(3, d))[:, None, :] + 0.1 * torch.randn(batch_size, T, d)
        x[m] = torch.where(mask[:, :, None] & present[m][:, None, None], seq, 0.0)
    return Batch(x, mask, present, factor[:, 0])


def test_every_mfm_term_decreases() -> None:
    batch = _structured_batch()
    model = build_mfm(SIZES, 1, offset=batch.labels.mean().reshape(1), hidden_size=16, dropout=0.0)
    # Exact prior terms: no sampling noise and no finite-sample floor in the MMD terms.
    prior = MMDPriorLoss(estimator="analytic")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(40):
        out = model(batch.x, batch.present, mask=batch.mask)
        terms = mfm_loss(out, batch.x, batch.labels, mask=batch.mask, label_loss="l1", prior=prior)
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    assert set(history[0]) == {
        "total",
        "label",
        "reconstruction/audio",
        "reconstruction/video",
        "mmd/shared",
        "mmd/audio",
        "mmd/video",
    }
    for term in history[0]:
        first = sum(h[term] for h in history[:5]) / 5
        last = sum(h[term] for h in history[-5:]) / 5
        assert last < 0.7 * first, (term, first, last)


def test_real_data_short_run(tmp_path: Path, mfn_sentiment: Callable[[str], Path]) -> None:
    mmmo = mfn_sentiment("mmmo")
    out = tmp_path / "metrics.json"
    main(
        [
            *("--data", str(mmmo), "--dataset", "mmmo", "--epochs", "2"),
            *("--surrogate-epochs", "1", "--metrics-out", str(out)),
            *("--out", str(tmp_path / "run"), "--no-plots"),
        ]
    )
    summary = json.loads(out.read_text())
    _check_summary(summary, "mmmo", ("mae", "corr", "acc_2", "f1"))
    assert summary["missing"]["without_audio"]["n"] == 80
    for model in ("mfm", "discriminative"):
        # Labels 1..5 with mean 3.4: two epochs from the mean label stay well within 2.
        assert 0 < summary[model]["mae"] < 2


def test_contributions_over_time_match_per_sample_jacobians() -> None:
    """Step k averages, over the samples with the modality that are longer than k, the
    Jacobian norms of the front-padded reconstruction at their k-th valid step."""
    torch.manual_seed(0)
    lengths = torch.tensor([1, 4, 2, 5, 3, 5, 1, 2])
    batch = _structured_batch(8, lengths)
    batch.x = {m: x.double() for m, x in batch.x.items()}
    model = build_mfm(
        SIZES, 1, hidden_size=6, shared_size=3, private_size=2, factor_size=4, dropout=0.0
    )
    model = model.double().eval()
    # Batches of 3 rows: the sums must carry over between passes.
    result = contributions_over_time(model, batch, batch_size=3)
    with torch.no_grad():
        factors = model.generators(model.encode(batch.x, batch.present, mask=batch.mask))
    decoders = model.decoders
    assert isinstance(decoders, ModalityDecoders)
    for m in SIZES:
        shared = torch.zeros(T, dtype=torch.float64)
        private = torch.zeros(T, dtype=torch.float64)
        n = torch.zeros(T, dtype=torch.long)
        for b in range(8):
            if not batch.present[m][b]:
                continue

            def decode(fa: torch.Tensor, fy: torch.Tensor, b: int = b, m: str = m) -> torch.Tensor:
                return decoders.decode(m, fa, fy, mask=batch.mask[b : b + 1])[0]

            j_a, j_y = torch.autograd.functional.jacobian(
                decode, (factors.private[m][b : b + 1], factors.shared[b : b + 1])
            )
            first = T - int(lengths[b])  # front padding: the first valid position
            for k in range(int(lengths[b])):
                # Per coordinate: the Frobenius norm over the square root of the factor size.
                shared[k] += j_y[first + k].norm() / 2
                private[k] += j_a[first + k].norm() / 2
                n[k] += 1
        assert result.counts[m].tolist() == n.tolist()
        reached = n > 0
        assert not bool(reached[-1])  # no sample has T = 6 steps: NaN there
        assert bool(result.share[m][~reached].isnan().all())
        torch.testing.assert_close(result.shared[m][reached], shared[reached] / n[reached])
        torch.testing.assert_close(result.private[m][reached], private[reached] / n[reached])
        expected = shared.sum() / (shared.sum() + private.sum())
        assert pooled_share(result)[m] == pytest.approx(float(expected), rel=1e-12)


def test_the_baseline_is_the_mfm_without_decoders() -> None:
    batch = _structured_batch(8)
    mfm = build_mfm(SIZES, 1, hidden_size=6, dropout=0.0).eval()
    baseline = build_mfm(SIZES, 1, hidden_size=6, dropout=0.0, generative=False).eval()
    assert baseline.decoders is None
    out = baseline(batch.x, batch.present, mask=batch.mask)
    assert out.reconstructions is None
    terms = mfm_loss(out, batch.x, batch.labels, mask=batch.mask, label_loss="l1")
    assert set(terms) == {"total", "label"}
    # The same encoders, generators and predictor: with the MFM's weights, its prediction.
    weights = {k: v for k, v in mfm.state_dict().items() if not k.startswith("decoders.")}
    baseline.load_state_dict(weights)
    torch.testing.assert_close(
        baseline(batch.x, batch.present, mask=batch.mask).prediction,
        mfm(batch.x, batch.present, mask=batch.mask).prediction,
    )


def test_decoder_feed_hidden_builds_the_reference_decoder() -> None:
    model = build_mfm(SIZES, 1, factor_size=4, decoder_feed="hidden")
    assert isinstance(model.decoders, ModalityDecoders)
    for m in SIZES:
        decoder = model.decoders.decoders[m]
        assert decoder.feed == "hidden"
        assert decoder.rnn.hidden_size == decoder.rnn.input_size == 8  # [F_a_m, F_y]


def test_zero_fill_feeds_raw_zeros_and_mean_imputation_the_training_mean(
    tmp_path: Path,
) -> None:
    data = load_mfn_h5(_mfn_folder(tmp_path, "mmmo", SIZES), "mmmo")
    prepared = prepare(data, torch.device("cpu"))
    train = data.train.select(data.train.lengths > 0)
    steps = train.step_mask()
    part = without(prepared.batches["test"], "video")
    for m in SIZES:
        raw = train.modalities[m][steps & train.present[m][:, None]].double()
        expected = (-raw.mean(0) / raw.std(0)).float()
        torch.testing.assert_close(prepared.raw_zero[m], expected)
    zeros = part.filled("video", prepared.raw_zero["video"])
    assert bool(zeros.present["video"].all())
    valid = zeros.mask[:, :, None].expand_as(zeros.x["video"])
    torch.testing.assert_close(
        zeros.x["video"], torch.where(valid, prepared.raw_zero["video"], 0.0)
    )
    assert torch.equal(zeros.x["audio"], part.x["audio"])
    # Mean imputation: the removed modality is absent, i.e. zero in standardised units.
    assert not bool(part.present["video"].any())


def test_lambda_x_per_modality_on_the_command_line() -> None:
    from examples.mfm_sentiment.run import _parser, parse_lambda_x

    base = ["--data", "d", "--dataset", "mmmo"]
    assert _parser().parse_args(base).lambda_x == 1.0
    args = _parser().parse_args([*base, "--lambda-x", "audio=0.01,video=0.5"])
    assert args.lambda_x == {"audio": 0.01, "video": 0.5}
    assert parse_lambda_x("0.25") == 0.25
    with pytest.raises(argparse.ArgumentTypeError, match="expected name=value"):
        parse_lambda_x("audio=1,0.5")


@pytest.mark.parametrize(
    "command",
    [["-m", "examples.mfm_sentiment"], ["examples/mfm_sentiment"]],
    ids=["module", "path"],
)
def test_runs_as_a_module_and_as_a_path(command: list[str]) -> None:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, *command, "--help"], cwd=root, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "--lambda-x" in done.stdout and "--decoder-feed" in done.stdout


def _floats(value: Any) -> list[float]:
    """Every float in a nested JSON value."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [f for v in value for f in _floats(v)]
    return []


QUICK = ("--epochs", "1", "--surrogate-epochs", "1", "--hidden-size", "8", "--no-plots")


def test_each_run_gets_its_own_folder_and_says_where(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _mfn_folder(tmp_path / "data", "mmmo", SIZES)
    monkeypatch.chdir(tmp_path)
    written = []
    for _ in range(2):
        summary = main(["--data", str(folder), "--dataset", "mmmo", *QUICK])
        last = capsys.readouterr().out.strip().splitlines()[-1]
        match = re.fullmatch(r"wrote (\S+)/ \(metrics\.json\)", last)
        assert match is not None, last
        run = Path(match[1])
        assert run.parent == Path("runs/mfm_sentiment/mmmo")
        assert json.loads((run / "metrics.json").read_text()) == summary
        written.append(run)
    assert written[0] != written[1]
    # --out holding a run is refused (one line, exit 2) unless --overwrite.
    again = ["--data", str(folder), "--dataset", "mmmo", *QUICK, "--out", str(written[0])]
    with pytest.raises(SystemExit) as refused:
        main(again)
    assert refused.value.code == 2
    assert "already holds a run (metrics.json); pass --overwrite" in capsys.readouterr().err
    assert main([*again, "--overwrite", "--seed", "1"])["seeds"] == [1]
    assert json.loads((written[0] / "metrics.json").read_text())["seeds"] == [1]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "absent",
            "argument --data: no such folder: {tmp}/absent; the sentiment features are not "
            "shipped with factorkit: 'Sentiment data: file layouts' in examples/README.md says "
            "where they come from",
        ),
        ("pickle", "argument --data: no such file: {tmp}/mosi.pkl; the sentiment features"),
        ("empty", "argument --data: {tmp}/empty: split 'train' is missing"),
        ("seeds", "argument --num-seeds: must be >= 1, got 0"),
        ("dataset", "argument --dataset: invalid choice: 'imdb'"),
    ],
)
def test_user_mistakes_end_with_one_line(
    case: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    args = {
        "absent": ["--data", str(tmp_path / "absent"), "--dataset", "pom"],
        "pickle": ["--data", str(tmp_path / "mosi.pkl"), "--dataset", "mosi"],
        "empty": ["--data", str(tmp_path / "empty"), "--dataset", "mmmo"],
        "seeds": ["--data", "d", "--dataset", "mmmo", "--num-seeds", "0"],
        "dataset": ["--data", "d", "--dataset", "imdb"],
    }[case]
    with pytest.raises(SystemExit) as error:
        main([*args, "--out", str(tmp_path / "run")])
    assert error.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    line = message.format(tmp=tmp_path)
    assert captured.err.startswith(f"python -m examples.mfm_sentiment: error: {line}"), captured.err
    assert captured.err.endswith(" (see --help)\n") and captured.err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_help_gives_every_option_a_help_text_and_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from examples.mfm_sentiment.run import _parser

    monkeypatch.setenv("COLUMNS", "1000")
    parser = _parser()
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, action.option_strings
        if action.default not in (None, False, "==SUPPRESS=="):
            assert f"(default: {action.default})" in text, action.dest
    assert "MMD prior weight (default: 10.0)" in text
