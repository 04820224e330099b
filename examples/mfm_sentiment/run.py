"""Training, evaluation and the command line of the sentiment example."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from examples import cli
from examples.mfm_sentiment.data import (
    DATASETS,
    Batch,
    Prepared,
    load,
    prepare,
    simulate_missing,
    without,
)
from examples.mfm_sentiment.metrics import (
    contributions_over_time,
    finite_or_none,
    pooled_share,
    sentiment_metrics,
    summarise,
)
from examples.mfm_sentiment.model import SequenceSurrogate, build_mfm, predict_with_surrogate
from examples.mfm_sentiment.plots import plot_contributions, plot_history
from examples.sentiment_data import SequenceDataset
from examples.training import FitResult, autocast, fit, resolve_device
from factorkit import (
    MFM,
    FactorGenerators,
    MMDPriorLoss,
    complete_latents,
    mfm_loss,
    random_presence,
    reconstruction_loss,
    surrogate_loss,
)
from factorkit.sequence import DecoderFeed

__all__ = ["Settings", "label_loss", "main", "run_seed", "surrogate_objective"]

TrainStep = Callable[[nn.Module, Batch, dict[str, Tensor] | None], dict[str, Tensor]]
"""The one training-loop signature: (model, mini-batch, simulated presence) -> terms."""


def label_loss(prediction: Tensor, labels: Tensor) -> Tensor:
    """L1 for regression (float labels), cross-entropy for class indices."""
    if labels.is_floating_point():
        return F.l1_loss(prediction.float(), labels.reshape(prediction.shape))
    return F.cross_entropy(prediction.float(), labels)


@dataclass
class Settings:
    """Hyper-parameters and options of one run (see the command-line help)."""

    dataset: str
    epochs: int = 50
    patience: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    lambda_x: float | dict[str, float] = 1.0
    lambda_mmd: float = 10.0
    hidden_size: int = 32
    dropout: float = 0.2
    decoder_feed: DecoderFeed = "every"
    surrogate_epochs: int = 30
    compile: bool = False
    label_loss: Literal["cross_entropy", "l1"] = field(init=False)

    def __post_init__(self) -> None:
        self.label_loss = "cross_entropy" if self.dataset == "youtube" else "l1"

    def fit(
        self,
        module: nn.Module,
        loss_fn: TrainStep,
        train: Batch,
        val_loss: Callable[[], Tensor],
        *,
        seed: int,
        epochs: int | None = None,
        compile: bool | None = None,
        train_presence: Callable[[int, torch.Generator], dict[str, Tensor]] | None = None,
    ) -> FitResult:
        """:func:`examples.training.fit` with these settings: Adam (no weight decay), a
        constant learning rate, every sample each epoch (the last batch may be smaller),
        the weights of the lowest ``val_loss``; ``epochs`` and ``compile`` override the
        settings."""
        return fit(
            module,
            loss_fn,
            train,
            None,
            validate=val_loss,
            epochs=self.epochs if epochs is None else epochs,
            patience=self.patience,
            batch_size=self.batch_size,
            lr=self.lr,
            weight_decay=0.0,
            lr_patience=None,
            drop_last=False,
            seed=seed,
            compile=self.compile if compile is None else compile,
            train_presence=train_presence,
        )


def surrogate_objective(
    model: MFM,
    surrogate: SequenceSurrogate,
    batch: Batch,
    observed: Mapping[str, Tensor],
    *,
    lambda_x: float | Mapping[str, float],
) -> dict[str, Tensor]:
    """Surrogate training with the MFM frozen: code matching, the label through the
    trained predictor, and the reconstruction of the missing modalities through the
    trained decoders (``model.decode`` of the completed codes)."""
    with torch.no_grad():
        full = model.encode(batch.x, batch.present, mask=batch.mask)
    inferred = surrogate(batch.x, batch.mask, observed)
    out = model.decode(complete_latents(full, inferred, observed), mask=batch.mask)
    assert out.reconstructions is not None
    codes = surrogate_loss(inferred, full)
    label = label_loss(out.prediction, batch.labels)
    missing = {m: batch.present[m] & ~observed[m] for m in observed}
    weights = lambda_x if isinstance(lambda_x, Mapping) else dict.fromkeys(missing, lambda_x)
    recon = reconstruction_loss(
        out.reconstructions, batch.x, missing, mask=batch.mask, weights=weights
    )
    return {"total": codes + label + recon, "codes": codes, "label": label, "recon": recon}


@torch.no_grad()
def _predict(fn: Callable[[Batch], Tensor], batch: Batch, device: torch.device) -> Tensor:
    with autocast(device):
        return fn(batch).float()


def _predict_observed(model: MFM) -> Callable[[Batch], Tensor]:
    """Predictions from the observed modalities (absent ones enter the encoder as zeros)."""
    return lambda b: model.predict(model.encode(b.x, b.present, mask=b.mask))


def _train_model(
    prepared: Prepared,
    output_size: int,
    settings: Settings,
    seed: int,
    *,
    generative: bool,
) -> tuple[MFM, FitResult]:
    train, valid = prepared.batches["train"], prepared.batches["valid"]
    sizes = {m: int(x.shape[2]) for m, x in train.x.items()}
    torch.manual_seed(seed)
    model = build_mfm(
        sizes,
        output_size,
        offset=prepared.offset,
        generative=generative,
        hidden_size=settings.hidden_size,
        dropout=settings.dropout,
        decoder_feed=settings.decoder_feed,
    ).to(train.labels.device)
    # The inputs, so the codes and reconstructions, are finite by construction (the loader
    # zeroes non-finite features); the finiteness checks would cost host syncs every step.
    prior = MMDPriorLoss(check_finite=False)

    def step(module: nn.Module, batch: Batch, _: object) -> dict[str, Tensor]:
        out = module(batch.x, batch.present, mask=batch.mask)
        return mfm_loss(
            out,
            batch.x,
            batch.labels,
            mask=batch.mask,
            label_loss=settings.label_loss,
            lambda_x=settings.lambda_x,
            lambda_mmd=settings.lambda_mmd,
            prior=prior,
            check_finite=False,
        )

    predict = _predict_observed(model)
    result = settings.fit(
        model, step, train, lambda: label_loss(predict(valid), valid.labels), seed=seed
    )
    return model, result


def run_seed(
    prepared: Prepared,
    output_size: int,
    settings: Settings,
    seed: int,
    *,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the MFM, the discriminative baseline and the surrogate; test metrics."""
    test = prepared.batches["test"]
    device = test.labels.device
    mfm, mfm_fit = _train_model(prepared, output_size, settings, seed, generative=True)
    log(f"  mfm: best epoch {mfm_fit.best_epoch}, {_epoch_seconds(mfm_fit):.2f} s/epoch")
    contributions = contributions_over_time(mfm, test)
    disc, disc_fit = _train_model(prepared, output_size, settings, seed, generative=False)
    log(
        f"  discriminative: best epoch {disc_fit.best_epoch}, "
        f"{_epoch_seconds(disc_fit):.2f} s/epoch"
    )
    result: dict[str, Any] = {
        "seed": seed,
        "mfm": {
            **_score(_predict_observed(mfm), test, settings, device),
            "shared_contribution_share": pooled_share(contributions),
        },
        "shared_contribution_share_per_step": {
            m: [finite_or_none(v) for v in share] for m, share in contributions.share.items()
        },
        "contribution_steps_n": {m: n.tolist() for m, n in contributions.counts.items()},
        "discriminative": _score(_predict_observed(disc), test, settings, device),
        "epochs": {"mfm": mfm_fit.best_epoch, "discriminative": disc_fit.best_epoch},
        "epoch_seconds": {
            "mfm": _epoch_seconds(mfm_fit),
            "discriminative": _epoch_seconds(disc_fit),
        },
        "history": {"mfm": mfm_fit.history, "discriminative": disc_fit.history},
    }
    if len(test.x) > 1:
        result.update(_missing(mfm, prepared, settings, seed, log))
    return result


def _epoch_seconds(result: FitResult) -> float:
    return result.seconds / len(result.history)


def _score(
    fn: Callable[[Batch], Tensor], batch: Batch, settings: Settings, device: torch.device
) -> dict[str, Any]:
    return sentiment_metrics(_predict(fn, batch, device), batch.labels, settings.dataset)


def _missing(
    mfm: MFM,
    prepared: Prepared,
    settings: Settings,
    seed: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Train the surrogate on the frozen MFM; test with each modality removed: through
    the surrogate, by zero-filling (raw zeros) and by mean imputation."""
    train, valid, test = (prepared.batches[k] for k in ("train", "valid", "test"))
    names = sorted(train.x)
    mfm.requires_grad_(False)
    assert isinstance(mfm.generators, FactorGenerators)
    codes = mfm.generators.code_sizes
    torch.manual_seed(seed)
    surrogate = SequenceSurrogate(
        {m: int(x.shape[2]) for m, x in train.x.items()},
        shared_size=codes["shared"],
        private_size=codes[names[0]],
        hidden_size=settings.hidden_size,
        dropout=settings.dropout,
    ).to(train.labels.device)
    valid_parts = [without(valid, m) for m in names]

    def step(model: nn.Module, batch: Batch, keep: dict[str, Tensor] | None) -> dict[str, Tensor]:
        assert isinstance(model, SequenceSurrogate)
        assert keep is not None
        observed = simulate_missing(batch.present, keep)
        return surrogate_objective(mfm, model, batch, observed, lambda_x=settings.lambda_x)

    def val() -> Tensor:
        losses = [
            label_loss(predict_with_surrogate(mfm, surrogate, part), part.labels)
            for part in valid_parts
            if len(part)
        ]
        return torch.stack(losses).mean()

    def draw(size: int, generator: torch.Generator) -> dict[str, Tensor]:
        return random_presence(names, size, 0.5, generator=generator)

    # Eager: compiling this step (a random mask per batch, complete_latents) did not
    # finish within 10 minutes on a 2-core CPU, and the surrogate is a short phase.
    found = settings.fit(
        surrogate,
        step,
        train,
        val,
        seed=seed,
        epochs=settings.surrogate_epochs,
        compile=False,
        train_presence=draw,
    )
    log(f"  surrogate: best epoch {found.best_epoch}, {_epoch_seconds(found):.2f} s/epoch")
    device = train.labels.device
    observed_only = _predict_observed(mfm)
    scores: dict[str, dict[str, Any]] = {
        "missing": {},
        "missing_zero_fill": {},
        "missing_mean_imputation": {},
    }
    for m in names:
        part = without(test, m)
        if len(part) == 0:
            continue
        key, n = f"without_{m}", {"n": len(part)}
        scores["missing"][key] = {
            **_score(lambda b: predict_with_surrogate(mfm, surrogate, b), part, settings, device),
            **n,
        }
        zeros = part.filled(m, prepared.raw_zero[m])
        scores["missing_zero_fill"][key] = {**_score(observed_only, zeros, settings, device), **n}
        scores["missing_mean_imputation"][key] = {
            **_score(observed_only, part, settings, device),
            **n,
        }
    return scores


def parse_lambda_x(text: str) -> float | dict[str, float]:
    """``"0.5"`` (one weight for every modality) or ``"audio=0.01,video=0.5"``."""
    if "=" not in text:
        return float(text)
    weights = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise argparse.ArgumentTypeError(f"expected name=value, got {item!r}")
        weights[name.strip()] = float(value)
    return weights


DEFAULT_ROOT = Path("runs/mfm_sentiment")
"""Where runs go without ``--out``: ``<dataset>/YYYYmmdd-HHMMSS``, a new folder per run."""

PROG = "python -m examples.mfm_sentiment"

DATA_HELP = (
    "the sentiment features are not shipped with factorkit: 'Sentiment data: file "
    "layouts' in examples/README.md says where they come from and the layout expected"
)


def _parser() -> argparse.ArgumentParser:
    p = cli.parser(
        PROG,
        "The sequence MFM on multimodal sentiment data (POM, ICT-MMMO, YouTube, CMU-MOSI).\n\n"
        f"    {PROG} --data ../shared/data/mfn-sentiment/pom --dataset pom\n\n"
        f"Writes metrics.json and the plots to a new {DEFAULT_ROOT}/DATASET/YYYYmmdd-HHMMSS/\n"
        "(or to --out) and prints that folder at the end.",
    )
    p.add_argument(
        "--data",
        required=True,
        help="MFN h5 folder (pom, mmmo, youtube), or a "
        "MultiBench .pkl (mosi); see examples/README.md for where to get them",
    )
    p.add_argument(
        "--dataset", required=True, choices=DATASETS, help="sets the labels, loss and metrics"
    )
    p.add_argument(
        "--device", default="auto", choices=("auto", "cpu", "cuda"), help="auto: CUDA if any"
    )
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the training step (slower on the CPU)"
    )
    p.add_argument("--seed", type=int, default=0, help="first seed")
    p.add_argument("--num-seeds", type=cli.at_least(1), default=1, help="seeds seed, seed+1, ...")
    p.add_argument("--epochs", type=cli.at_least(1), default=50, help="most epochs per model")
    p.add_argument(
        "--patience",
        type=cli.at_least(1),
        default=10,
        help="early stopping: epochs without a lower validation loss",
    )
    p.add_argument(
        "--surrogate-epochs", type=cli.at_least(1), default=30, help="most epochs of the surrogate"
    )
    p.add_argument("--batch-size", type=cli.at_least(1), default=32, help="mini-batch size")
    p.add_argument("--lr", type=cli.positive, default=1e-3, help="Adam learning rate")
    p.add_argument(
        "--lambda-x",
        type=parse_lambda_x,
        default=1.0,
        help="reconstruction weight: one for all (1.0) or per modality (audio=0.01,video=0.5)",
    )
    p.add_argument("--lambda-mmd", type=cli.non_negative, default=10.0, help="MMD prior weight")
    p.add_argument("--hidden-size", type=cli.at_least(1), default=32, help="LSTM state size")
    p.add_argument("--dropout", type=cli.probability, default=0.2, help="dropout probability")
    p.add_argument(
        "--decoder-feed",
        default="every",
        choices=("every", "hidden"),
        help="decoder input: the factors at every step, or at step 0 and then "
        "the decoder's own hidden state (the reference code's decoder)",
    )
    p.add_argument(
        "--threads", type=cli.at_least(1), default=1, help="CPU threads (1 is fastest here)"
    )
    p.add_argument(
        "--out",
        type=Path,
        help="the run's folder for metrics.json and the plots "
        f"(default: a new {DEFAULT_ROOT}/DATASET/YYYYmmdd-HHMMSS)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the files of a run already in --out (or the --metrics-out file)",
    )
    p.add_argument("--metrics-out", type=Path, help="also write the metrics JSON here")
    p.add_argument("--no-plots", action="store_true", help="write no plots")
    return p


def _load(path: str, dataset: str) -> SequenceDataset:
    """:func:`~examples.mfm_sentiment.data.load`, with a user's data mistakes as
    :class:`~examples.cli.UsageError` (one line, saying where such files come from)."""
    if not Path(path).exists():
        kind = "file" if dataset == "mosi" else "folder"
        raise cli.UsageError(f"argument --data: no such {kind}: {path}; {DATA_HELP}")
    try:
        return load(path, dataset)
    except (ValueError, FileNotFoundError, ImportError) as error:  # they name the file
        raise cli.UsageError(f"argument --data: {error}") from None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command-line entry point; returns the metrics dictionary it writes (rounded).

    A user mistake (missing or malformed data, an ``--out`` that holds a run without
    ``--overwrite``) ends it with one line and exit status 2.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    return cli.run_or_exit(parser, lambda: _run(args))


def _run(args: argparse.Namespace) -> dict[str, Any]:
    out = cli.run_folder(args.out, DEFAULT_ROOT / args.dataset, overwrite=args.overwrite)
    cli.check_new_file(args.metrics_out, "--metrics-out", overwrite=args.overwrite)
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cli.warn_compile_on_cpu(PROG, args.compile, device)
    data = _load(args.data, args.dataset)
    try:
        prepared = prepare(data, device)
    except ValueError as error:  # a split with no sample
        raise cli.UsageError(f"argument --data: {args.data}: {error}") from None
    settings = Settings(
        dataset=args.dataset,
        epochs=args.epochs,
        patience=args.patience,
        batch_size=args.batch_size,
        lr=args.lr,
        lambda_x=args.lambda_x,
        lambda_mmd=args.lambda_mmd,
        hidden_size=args.hidden_size,
        dropout=args.dropout,
        decoder_feed=args.decoder_feed,
        surrogate_epochs=args.surrogate_epochs,
        compile=args.compile,
    )
    print(
        f"{args.dataset}: {dict(data.feature_sizes)}, "
        + ", ".join(f"{k} {len(b)}" for k, b in prepared.batches.items())
        + f" samples with data, on {device}"
    )
    runs = []
    for seed in range(args.seed, args.seed + args.num_seeds):
        print(f"seed {seed}")
        runs.append(run_seed(prepared, data.output_size, settings, seed))
    summary: dict[str, Any] = cli.rounded(summarise(args.dataset, runs))
    print(json.dumps({k: summary[k] for k in summary if k != "runs"}, indent=1))
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_plots:
        plot_history(runs, out)
        plot_contributions(summary, out)
    cli.write_json(summary, out / cli.METRICS_FILE, args.metrics_out)
    print(f"\nwrote {out}/ ({cli.METRICS_FILE}{', plots' if not args.no_plots else ''})")
    return summary
