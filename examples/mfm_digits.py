"""Train the full MFM on multi-view digits and compare it with its baselines.

    python -m examples.mfm_digits                      # UCI Multiple Features, 6 views
    python examples/mfm_digits.py                      # the same, as a script
    python -m examples.mfm_digits --data sklearn-digits
    python -m examples.mfm_digits --data my_views.npz --metrics-out metrics.json
    torchrun --standalone --nproc_per_node 2 -m examples.mfm_digits --distributed

Every run trains (1) the MFM, (2) a purely discriminative model with the same encoders
(no decoders, no MMD) and (3) each single view alone with the same encoder and
predictor; then (4) surrogate inference for missing views, evaluated against
zero-filling, mean-imputation and discriminative models of the observed views (see
``examples/missing.py``). It prints the tables and writes plots, the best MFM checkpoint
and ``metrics.json`` to ``--out`` (and the metrics to ``--metrics-out`` if given).
"""

from __future__ import annotations

import argparse
import json
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

from examples.mfm import digits_mfm, logits_of
from examples.missing import MissingEvaluation, train_surrogate
from examples.multiview_data import DATASETS, MultiViewDataset, load_npz, standardize
from examples.training import FitResult, Split, accuracy, autocast, fit, resolve_device
from factorkit import MFM, MMDPriorLoss, mfm_loss, random_presence

Views = dict[str, torch.Tensor]
Presence = dict[str, torch.Tensor] | None
Terms = dict[str, torch.Tensor]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add = p.add_argument
    add("--data", default="uci-mfeat", help=f"{' | '.join(DATASETS)} | FILE.npz")
    add("--device", default="auto", choices=["auto", "cpu", "cuda"])
    add("--compile", action="store_true", help="train under torch.compile")
    add("--seed", type=int, default=0, help="seeds the split, the weights and the batches")
    add("--threads", type=int, default=1, help="CPU threads (small models: 1 is fastest)")
    add("--distributed", action="store_true", help="DDP under torchrun (gloo CPU, nccl CUDA)")
    # Training (the paper's Adam learning rate; early stopping on validation accuracy).
    add("--epochs", type=int, default=60)
    add("--patience", type=int, default=15)
    add("--batch-size", type=int, default=64)
    add("--lr", type=float, default=1e-3)
    add("--weight-decay", type=float, default=1e-2)
    add("--dropout", type=float, default=0.5)
    # The MFM objective and its latent sizes.
    add("--lambda-x", type=float, default=1.0, help="weight of each reconstruction term")
    add("--lambda-mmd", type=float, default=10.0, help="weight of the MMD prior terms")
    add("--shared-size", type=int, default=32)
    add("--private-size", type=int, default=8)
    # Missing views.
    add("--missing-rate", type=float, default=0.0, help="drop each view with this probability")
    add("--missing-in", default="both", choices=["train", "test", "both"])
    add("--no-missing", action="store_true", help="skip the missing-view evaluation")
    # Output.
    add("--subset", type=int, default=0, help="use N random samples (smoke tests)")
    add("--out", type=Path, default=Path("runs/mfm_digits"), help="plots, mfm.pt, metrics.json")
    add("--metrics-out", type=Path, default=None, help="also write the metrics JSON here")
    add("--no-plots", action="store_true")
    add("--no-progress", action="store_true")
    return p.parse_args(argv)


def load(name: str, seed: int) -> MultiViewDataset:
    if name in DATASETS:
        return DATASETS[name](seed=seed)
    if name.endswith(".npz"):
        return load_npz(name, seed=seed)
    raise SystemExit(f"--data must be one of {sorted(DATASETS)} or a .npz file, got {name!r}")


def progress_bar(enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with the examples extra; run without a bar otherwise
        return None
    return lambda iterable: tqdm(iterable, leave=False, dynamic_ncols=True)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    started = time.perf_counter()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    if args.distributed:  # launched by torchrun, which sets RANK, WORLD_SIZE, LOCAL_RANK
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
            torch.cuda.set_device(device)
    rank0 = not args.distributed or dist.get_rank() == 0
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

    if not args.no_missing and len(names) > 1:
        surrogate = train_surrogate(mfm, splits["train"], splits["validation"], **fit_kwargs)
        evaluation = MissingEvaluation(
            mfm, surrogate, stats, splits["train"], splits["validation"], splits["test"],
            single_view=metrics["single_view"], seed=args.seed, fit_kwargs=fit_kwargs,
        )  # fmt: skip
        extra = {}
        if args.missing_rate > 0 and args.missing_in in ("test", "both"):
            extra[f"random_{round(100 * args.missing_rate)}"] = args.missing_rate
        metrics["missing"] = evaluation.run(extra)

    metrics["seconds"] = time.perf_counter() - started
    if args.distributed:
        metrics["world_size"] = dist.get_world_size()
        dist.destroy_process_group()
    if not rank0:
        return metrics
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(mfm.state_dict(), args.out / "mfm.pt")
    if not args.no_plots:
        from examples import plots

        written, shares = plots.save_all(mfm, mfm_fit.history, splits["test"], args.out)
        metrics["plots"] = [str(p) for p in written]
        metrics["mfm"]["shared_contribution_share"] = shares
    print_table(metrics)
    text = json.dumps(metrics, indent=2) + "\n"
    (args.out / "metrics.json").write_text(text)
    if args.metrics_out is not None:
        args.metrics_out.parent.mkdir(parents=True, exist_ok=True)
        args.metrics_out.write_text(text)
    return metrics


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


def print_table(metrics: dict[str, Any]) -> None:
    """The final metrics table (and the missing-view table when it was evaluated)."""
    mfm, disc = metrics["mfm"], metrics["discriminative"]
    rows = [("MFM", mfm["test_accuracy"]), ("discriminative", disc["test_accuracy"])]
    rows += [(f"only {view}", acc) for view, acc in metrics["single_view"].items()]
    width = max(len(name) for name, _ in rows)
    where = f"{metrics['device']}, seed {metrics['seed']}, {metrics['seconds']:.0f} s"
    print(f"\n{metrics['dataset']} ({where})")
    print(f"{'model':<{width}}  test accuracy")
    for name, acc in rows:
        print(f"{name:<{width}}  {100 * acc:6.2f} %")
    if "missing" not in metrics:
        return
    columns = ["surrogate", "zero_fill", "mean_impute", "observed_only"]
    width = max(len(name) for name in metrics["missing"])
    print("\nmissing views: test accuracy (%) and reconstruction MSE of the missing views")
    header = "".join(f"{c:>14}" for c in columns)
    print(f"{'pattern':<{width}}{header}{'MSE surr.':>11}{'MSE mean':>10}")
    for name, row in metrics["missing"].items():
        accs = "".join(f"{100 * row[f'{c}_accuracy']:14.2f}" for c in columns)
        mse = f"{row['surrogate_recon_mse']:11.3f}{row['mean_impute_recon_mse']:10.3f}"
        print(f"{name:<{width}}{accs}{mse}")


if __name__ == "__main__":
    main()
