"""Train the full MFM on multi-view digits and compare it with its baselines.

    python -m examples.mfm_digits                      # UCI Multiple Features, 6 views
    python examples/mfm_digits.py                      # the same, as a script
    python -m examples.mfm_digits --data sklearn-digits
    python -m examples.mfm_digits --data my_views.npz --metrics-out metrics.json
    python -m examples.mfm_digits --seeds 5            # means, stds, paired intervals
    torchrun --standalone --nproc_per_node 2 -m examples.mfm_digits --distributed

Every run trains (1) the MFM, (2) a purely discriminative model with the same encoders
(no decoders, no MMD), (3) each single view alone with the same encoder and predictor,
and (4) strong baselines on the same split (``examples/baselines.py``); then (5)
surrogate inference for missing views, evaluated against zero-filling, mean-imputation
and discriminative models of the observed views (``examples/missing.py``), and (6) the
robustness curves of those methods (``examples/robustness.py``). With ``--seeds N`` it
does all of this for N seeds and summarises them (``examples/seeds.py``). It prints the
tables and writes plots, the best MFM checkpoint and ``metrics.json`` to a new folder
``runs/mfm_digits/YYYYmmdd-HHMMSS/`` (or to ``--out``, which must not hold a run unless
``--overwrite``; the metrics also to ``--metrics-out``), and prints that folder at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

if __package__ in (None, ""):  # run as a script: python examples/mfm_digits.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from examples import cli
from examples.baselines import per_view, tune_logistic_regression, tune_mlp
from examples.mfm import digits_mfm, logits_of
from examples.missing import MissingEvaluation, surrogate_predict, train_surrogate
from examples.multiview_data import (
    DATASETS,
    MultiViewDataset,
    Standardization,
    load_npz,
    standardize,
)
from examples.robustness import (
    RATES,
    Predict,
    at_every_rate,
    imputed,
    mixed_rate_presence,
    plot_curves,
    rate_key,
    robustness_curves,
)
from examples.seeds import Metrics, format_mean_std, summarise
from examples.training import FitResult, Split, accuracy, autocast, fit, resolve_device
from factorkit import MFM, MMDPriorLoss, SurrogateInference, mfm_loss, random_presence

DEFAULT_ROOT = Path("runs/mfm_digits")
"""Where runs go without ``--out``: one new dated folder per run."""

Views = dict[str, torch.Tensor]
Presence = dict[str, torch.Tensor] | None
Terms = dict[str, torch.Tensor]


def command_line() -> argparse.ArgumentParser:
    """The options of the example (``--help`` shows each with its default)."""
    p = cli.parser("python -m examples.mfm_digits", __doc__)
    add = p.add_argument
    add("--data", default="uci-mfeat", help=f"{' | '.join(DATASETS)} | FILE.npz")
    add("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA if any")
    add("--compile", action="store_true", help="train under torch.compile (slower on the CPU)")
    add("--seed", type=int, default=0, help="seeds the split, the weights and the batches")
    add("--seeds", type=cli.at_least(1), default=1, help="run N seeds from --seed: mean, std, "
        "paired differences")  # fmt: skip
    add("--threads", type=cli.at_least(1), default=1, help="CPU threads (small models: 1 is "
        "fastest)")  # fmt: skip
    add("--distributed", action="store_true", help="DDP under torchrun (gloo CPU, nccl CUDA)")
    # Training (the paper's Adam learning rate; early stopping on validation accuracy).
    add("--epochs", type=cli.at_least(1), default=60, help="most epochs per model")
    add("--patience", type=cli.at_least(1), default=15, help="early stopping: epochs without "
        "a better validation accuracy")  # fmt: skip
    add("--batch-size", type=cli.at_least(1), default=64, help="training mini-batch size")
    add("--lr", type=cli.positive, default=1e-3, help="Adam(W) learning rate")
    add("--weight-decay", type=cli.non_negative, default=1e-2, help="AdamW weight decay")
    add("--dropout", type=cli.probability, default=0.5, help="dropout probability")
    # The MFM objective and its latent sizes.
    add("--lambda-x", type=cli.non_negative, default=1.0, help="weight of each "
        "reconstruction term")  # fmt: skip
    add("--lambda-mmd", type=cli.non_negative, default=10.0, help="weight of the MMD prior "
        "terms")  # fmt: skip
    add("--shared-size", type=cli.at_least(1), default=32, help="size of the shared code Z_y")
    add("--private-size", type=cli.at_least(1), default=8, help="size of each private code "
        "Z_a_m")  # fmt: skip
    # Missing views.
    add("--missing-rate", type=cli.probability, default=0.0, help="drop each view with this "
        "probability")  # fmt: skip
    add("--missing-in", default="both", choices=["train", "test", "both"],
        help="where --missing-rate applies")  # fmt: skip
    add("--no-missing", action="store_true", help="skip the missing-view evaluation")
    add("--no-robustness", action="store_true", help="skip the robustness curves")
    add("--no-baselines", action="store_true", help="skip logistic regression and the MLP")
    # Output.
    add("--subset", type=cli.at_least(0), default=0, help="use N random samples (smoke tests); "
        "0: all")  # fmt: skip
    add("--out", type=Path, default=None, help="the run's folder for metrics.json, mfm.pt and "
        f"the plots (default: a new {DEFAULT_ROOT}/YYYYmmdd-HHMMSS)")  # fmt: skip
    add("--overwrite", action="store_true", help="replace the files of a run already in --out")
    add("--metrics-out", type=Path, default=None, help="also write the metrics JSON here")
    add("--no-plots", action="store_true", help="write no plots")
    add("--no-progress", action="store_true", help="no progress bars")
    return p


def load(name: str, seed: int) -> MultiViewDataset:
    """The dataset ``--data`` names; a missing or malformed file is a :class:`UsageError`."""
    if name in DATASETS:
        return DATASETS[name](seed=seed)
    if not name.endswith(".npz"):
        raise cli.UsageError(
            f"argument --data: expected one of {', '.join(DATASETS)} or a .npz file, got {name!r}"
        )
    try:
        return load_npz(name, seed=seed)
    except FileNotFoundError:
        raise cli.UsageError(f"argument --data: no such file: {name}") from None
    except ValueError as error:  # load_npz names the file, the array and the problem
        raise cli.UsageError(f"argument --data: {error}") from None


def progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with the examples extra; run without a bar otherwise
        return None
    return lambda iterable: tqdm(iterable, leave=False, dynamic_ncols=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the example; returns the metrics it writes (rounded as in the JSON).

    A user mistake (a missing or malformed ``--data`` file, an ``--out`` folder that
    holds a run, without ``--overwrite``) ends it with one line and exit status 2.
    """
    parser = command_line()
    args = parser.parse_args(argv)
    return cli.run_or_exit(parser, lambda: run(args))


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every seed of the run ``args`` describes, the summary, the files and the tables."""
    started = time.perf_counter()
    out = cli.run_folder(args.out, DEFAULT_ROOT, overwrite=args.overwrite)
    cli.check_new_file(args.metrics_out, "--metrics-out", overwrite=args.overwrite)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cli.warn_compile_on_cpu("python -m examples.mfm_digits", args.compile, device)
    if args.distributed:  # launched by torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
    rank0 = not args.distributed or dist.get_rank() == 0
    seeds = list(range(args.seed, args.seed + args.seeds))
    runs = {}
    for seed in seeds:
        seed_out = out if len(seeds) == 1 else out / f"seed_{seed}"
        run_args = argparse.Namespace(**{**vars(args), "seed": seed, "out": seed_out})
        runs[seed] = run_seed(run_args, device, save=rank0)
    metrics = summarise_runs(runs)
    metrics["seconds"] = time.perf_counter() - started
    if args.distributed:
        metrics["world_size"] = dist.get_world_size()
        dist.destroy_process_group()
    if not rank0:
        return rounded(metrics)
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_plots:
        metrics["plots"] = [p for run in runs.values() for p in run.get("plots", [])]
        if "robustness" in metrics["summary"]:
            plot = out / "robustness.png"
            plot_curves(metrics["summary"]["robustness"], plot, title=metrics["dataset"])
            metrics["plots"].append(str(plot))
    metrics = rounded(metrics)
    print_summary(metrics)
    cli.write_json(metrics, out / cli.METRICS_FILE, args.metrics_out)
    print(f"\nwrote {out}/ ({cli.METRICS_FILE}, mfm.pt{', plots' if not args.no_plots else ''})")
    return metrics


def run_seed(args: argparse.Namespace, device: torch.device, *, save: bool) -> dict[str, Any]:
    """Train and evaluate every model of one seed (``args.seed``): its metrics.

    With ``save`` the MFM checkpoint and the run's plots go to ``args.out``.
    """
    started = time.perf_counter()
    dataset = load(args.data, args.seed)
    if args.subset:
        generator = torch.Generator().manual_seed(args.seed)
        keep = torch.randperm(dataset.num_samples, generator=generator)[: args.subset]
        dataset = dataset.select(keep.sort().values)
    dataset, stats = standardize(dataset)
    splits = {s: Split(*dataset.to(device).split(s)) for s in ("train", "validation", "test")}
    shapes, classes, names = dataset.view_shapes, dataset.num_classes, dataset.view_names
    train_presence = None
    if args.missing_rate > 0 and args.missing_in in ("train", "both"):

        def train_presence(batch: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
            return random_presence(names, batch, args.missing_rate, generator=generator)

    fit_kwargs: dict[str, Any] = {
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "patience": args.patience,
        "seed": args.seed,
        "compile": args.compile,
        "progress": progress_bar(not args.no_progress),
        # Every model below (MFM, baselines, surrogate) trains under DDP with --distributed.
        "distributed": args.distributed,
    }
    metrics: dict[str, Any] = {"dataset": dataset.name, "device": str(device), "seed": args.seed}

    # The MFM: label loss + sum_m lambda_x * reconstruction_m + lambda_mmd * sum_Z MMD(Z, prior);
    # for the discriminative baselines (no decoders) the same objective is the label loss.
    prior = MMDPriorLoss(gather=args.distributed)  # under DDP: the MMD of the global batch

    def objective(model: MFM, views: Views, labels: torch.Tensor, present: Presence) -> Terms:
        return mfm_loss(
            model(views, present), views, labels,
            lambda_x=args.lambda_x, lambda_mmd=args.lambda_mmd, prior=prior,
        )  # fmt: skip

    def train(
        model: MFM, train: Split, validation: Split, description: str, **extra: Any
    ) -> FitResult:
        return fit(
            model.to(device), objective, train, validation, predict=logits_of(model),
            description=description, **fit_kwargs, **extra,
        )  # fmt: skip

    sizes = {"shared_size": args.shared_size, "dropout": args.dropout}
    torch.manual_seed(args.seed)
    mfm = digits_mfm(shapes, classes, private_size=args.private_size, **sizes)
    mfm_fit = train(
        mfm, splits["train"], splits["validation"], "MFM", train_presence=train_presence
    )
    metrics["mfm"] = summary(mfm, mfm_fit, splits["test"])
    metrics["mfm"]["test_recon_mse"] = reconstruction_mse(mfm, splits["test"])

    # Baselines: the same encoders trained purely discriminatively, and each view alone.
    # Every model starts from the same seed, so its weights do not depend on how many
    # random numbers the models trained before it happened to draw.
    torch.manual_seed(args.seed)
    disc = digits_mfm(shapes, classes, generative=False, **sizes)
    disc_fit = train(
        disc, splits["train"], splits["validation"], "discriminative",
        train_presence=train_presence,
    )  # fmt: skip
    metrics["discriminative"] = summary(disc, disc_fit, splits["test"])
    metrics["single_view"] = {}
    for view in names:
        torch.manual_seed(args.seed)
        single = digits_mfm({view: shapes[view]}, classes, generative=False, **sizes)
        only = {s: Split({view: sp.views[view]}, sp.labels) for s, sp in splits.items()}
        single_fit = train(single, only["train"], only["validation"], f"only {view}")
        metrics["single_view"][view] = summary(single, single_fit, only["test"])["test_accuracy"]
    if not args.no_baselines:
        clock = time.perf_counter()
        metrics["baselines"] = strong_baselines(splits, fit_kwargs)
        metrics["baselines_seconds"] = time.perf_counter() - clock

    if not args.no_missing and len(names) > 1:
        clock = time.perf_counter()
        surrogate = train_surrogate(mfm, splits["train"], splits["validation"], **fit_kwargs)
        evaluation = MissingEvaluation(
            mfm, surrogate, stats, splits["train"], splits["validation"], splits["test"],
            single_view=metrics["single_view"], seed=args.seed, fit_kwargs=fit_kwargs,
        )  # fmt: skip
        extra = {}
        if args.missing_rate > 0 and args.missing_in in ("test", "both"):
            extra[f"random_{round(100 * args.missing_rate)}"] = args.missing_rate
        metrics["missing"] = evaluation.run(extra)
        metrics["missing_seconds"] = time.perf_counter() - clock
        if not args.no_robustness:
            clock = time.perf_counter()
            # One observed-only model for the whole curve: trained on masks of a rate drawn
            # per batch from the curve's rates, and validated on every rate.
            torch.manual_seed(args.seed)
            observed = digits_mfm(shapes, classes, generative=False, **sizes)
            validation = at_every_rate(splits["validation"], seed=args.seed + 4)
            train(
                observed, splits["train"], validation, "observed-only",
                train_presence=mixed_rate_presence(names),
            )  # fmt: skip
            methods = curve_methods(mfm, surrogate, observed, stats)
            with autocast(device):
                metrics["robustness"] = robustness_curves(methods, splits["test"], seed=args.seed)
            metrics["robustness_seconds"] = time.perf_counter() - clock

    metrics["seconds"] = time.perf_counter() - started
    if not save:
        return metrics
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(mfm.state_dict(), args.out / "mfm.pt")
    if not args.no_plots:
        from examples import plots

        written, shares = plots.save_all(mfm, mfm_fit.history, splits["test"], args.out)
        metrics["plots"] = [str(p) for p in written]
        metrics["mfm"]["shared_contribution_share"] = shares
    return metrics


def rounded(metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics as the JSON holds them (:func:`examples.cli.rounded`)."""
    result: dict[str, Any] = cli.rounded(metrics)
    return result


def strong_baselines(splits: dict[str, Split], fit_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Logistic regression and the tuned MLP on the concatenated views, logistic
    regression on each view alone (``examples/baselines.py``): test accuracies and the
    configurations chosen on validation."""
    train, validation, test = splits["train"], splits["validation"], splits["test"]
    linear = tune_logistic_regression(train, validation)
    mlp = tune_mlp(train, validation, **{**fit_kwargs, "description": "MLP"})
    return {
        "logistic_regression": accuracy(linear.model.predict, test),  # type: ignore[operator]
        "logistic_regression_C": linear.config["C"],
        "mlp": accuracy(mlp.model.predict, test),  # type: ignore[operator]
        "mlp_config": mlp.config,
        "single_view_logistic": per_view(tune_logistic_regression, train, validation, test),
    }


def curve_methods(
    mfm: MFM, surrogate: SurrogateInference, observed: MFM, stats: Standardization
) -> dict[str, Predict]:
    """The methods of the robustness curves, each ``predict(views, present) -> logits``:
    the MFM with surrogate inference, zero-filled or mean-imputed views, and the
    ``observed`` (discriminative) model on the observed views only."""
    zeros = {m: torch.zeros_like(v) for m, v in stats.mean.items()}
    return {
        "surrogate": lambda views, present: surrogate_predict(mfm, surrogate, views, present)[0],
        "zero_fill": imputed(logits_of(mfm), stats.apply(zeros)),
        "mean_impute": imputed(logits_of(mfm), zeros),
        "observed_only": logits_of(observed),
    }


def summarise_runs(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """The metrics JSON: summaries over the seeds (``examples/seeds.py``) and every run."""
    first = runs[min(runs)]
    summary = {
        "accuracy": summarise({s: accuracy_table(r) for s, r in runs.items()}, reference="mfm")
    }
    if "missing" in first:
        tables = {s: missing_table(r["missing"]) for s, r in runs.items()}
        summary["missing"] = summarise(tables, reference="surrogate")
    if "robustness" in first:
        curves = {s: r["robustness"] for s, r in runs.items()}
        summary["robustness"] = summarise(curves, reference="surrogate")
    return {
        "dataset": first["dataset"],
        "device": first["device"],
        "seeds": sorted(runs),
        "summary": summary,
        "runs": {str(s): r for s, r in sorted(runs.items())},
    }


def accuracy_table(metrics: dict[str, Any]) -> Metrics:
    """One seed's test accuracy of every model (and the MFM's reconstruction MSEs)."""
    mfm = {"test_accuracy": metrics["mfm"]["test_accuracy"]}
    mfm.update({f"recon_mse/{v}": e for v, e in metrics["mfm"]["test_recon_mse"].items()})
    rows: dict[str, dict[str, float]] = {
        "mfm": mfm,
        "discriminative": {"test_accuracy": metrics["discriminative"]["test_accuracy"]},
    }
    baselines = metrics.get("baselines", {})
    for name in ("logistic_regression", "mlp"):
        if name in baselines:
            rows[name] = {"test_accuracy": baselines[name]}
    for view, acc in metrics["single_view"].items():
        rows[f"only {view}"] = {"test_accuracy": acc}
        if "single_view_logistic" in baselines:
            logistic = baselines["single_view_logistic"][view]
            rows[f"only {view}, logistic"] = {"test_accuracy": logistic}
    return rows


MISSING_METHODS = ("surrogate", "zero_fill", "mean_impute", "observed_only")


def missing_table(missing: dict[str, dict[str, Any]]) -> Metrics:
    """One seed's missing-view results: method -> pattern -> accuracy (and MSE)."""
    rows: dict[str, dict[str, float]] = {m: {} for m in MISSING_METHODS}
    for pattern, row in missing.items():
        for method in MISSING_METHODS:
            rows[method][pattern] = row[f"{method}_accuracy"]
        for method in ("surrogate", "mean_impute"):
            rows[method][f"{pattern}/recon_mse"] = row[f"{method}_recon_mse"]
    return rows


def summary(model: MFM, result: FitResult, test: Split) -> dict[str, Any]:
    """Test accuracy and the training summary of one model."""
    with autocast(test.labels.device):
        test_accuracy = accuracy(logits_of(model), test)
    return {
        "test_accuracy": test_accuracy,
        "validation_accuracy": result.best_accuracy,
        "best_epoch": result.best_epoch,
        "epochs": len(result.history),
        "epoch_seconds": result.seconds / len(result.history),
    }


@torch.no_grad()
def reconstruction_mse(model: MFM, split: Split) -> dict[str, float]:
    """Test MSE of each view's reconstruction, on standardised features."""
    reconstructions = model(split.views).reconstructions
    assert reconstructions is not None
    return {
        m: float((reconstructions[m].float() - x).square().mean()) for m, x in split.views.items()
    }


def print_summary(metrics: dict[str, Any]) -> None:
    """The tables of a run: accuracy, missing views and robustness, over the seeds."""
    seeds = metrics["seeds"]
    summary = metrics["summary"]
    where = f"{metrics['device']}, seeds {', '.join(map(str, seeds))}, {metrics['seconds']:.0f} s"
    print(f"\n{metrics['dataset']} ({where}): mean ± std over seeds, in %")
    accuracy = summary["accuracy"]
    rows = []
    for model, row in accuracy["models"].items():
        entry = row["test_accuracy"]
        values = " ".join(f"{100 * v:.2f}" for v in entry["values"])
        rows.append((model, format_mean_std(entry), values, difference(accuracy, model)))
    header = ("model", "test accuracy", "per seed", "MFM − model [95% CI]")
    print_rows([header, *rows])
    if "missing" in summary:
        missing = summary["missing"]["models"]
        print("\nmissing views: test accuracy, and the MSE of the missing views' reconstruction")
        header = ("pattern", *MISSING_METHODS, "MSE surrogate", "MSE mean")
        rows = [
            (
                pattern,
                *(format_mean_std(missing[m][pattern]) for m in MISSING_METHODS),
                *(
                    format_mean_std(missing[m][f"{pattern}/recon_mse"], 1)
                    for m in ("surrogate", "mean_impute")
                ),
            )
            for pattern in metrics["runs"][str(seeds[0])]["missing"]
        ]
        print_rows([header, *rows])
    if "robustness" in summary:
        curves = summary["robustness"]
        print("\nrobustness: test accuracy when each view is missing with probability r")
        methods = list(curves["models"])
        keys = [rate_key(r) for r in RATES] + ["area"]
        rows = [
            (key, *(format_mean_std(curves["models"][m][key]) for m in methods)) for key in keys
        ]
        rows.append(
            ("surrogate − method", "", *(difference(curves, m, "area") for m in methods[1:]))
        )
        print_rows([("rate", *methods), *rows])


def difference(summary: dict[str, Any], model: str, metric: str = "test_accuracy") -> str:
    """``+0.40 [-0.31, +1.11]``: the reference's paired difference from ``model``, in points."""
    entry = summary["differences"].get(model, {}).get(metric)
    if entry is None or entry["mean"] is None:
        return ""
    if entry["low"] is None:
        return f"{100 * entry['mean']:+.2f}"
    return f"{100 * entry['mean']:+.2f} [{100 * entry['low']:+.2f}, {100 * entry['high']:+.2f}]"


def print_rows(rows: list[tuple[str, ...]]) -> None:
    """Columns aligned: the first to the left, the others to the right."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))


if __name__ == "__main__":
    main()
