"""Plots of an MFM run: training curves, reconstructions, and the codes in 2-D.

matplotlib comes with the examples extra; every function writes one PNG and returns its
path. The 2-D projections are PCA (an SVD in torch), so no scikit-learn is needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from examples.training import Split
from factorkit import MFM, FactorizedLatents, ModalityDecoders, factor_contributions, transfer_grid

__all__ = ["IMAGE_VIEWS", "one_per_class", "pca_2d", "save_all"]

IMAGE_VIEWS = {"pix": (16, 15)}
"""Vector views that are flattened images, drawn as (H, W) pictures (UCI mfeat's pix)."""


def pca_2d(x: Tensor) -> Tensor:
    """Project rows onto their first two principal components.

    Shapes:
        x: (N, D). Returns: (N, 2).
    """
    centred = x.double() - x.double().mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    components = v[:2].T if v.shape[0] >= 2 else torch.cat([v.T, torch.zeros_like(v.T)], 1)
    return (centred @ components).float()


def _y_label(term: str) -> str:
    """What a history entry measures (the fit history's names: ``label``,
    ``reconstruction/<view>``, ``mmd/<code>``, ``val_accuracy``, ``val_loss``)."""
    if term == "label":
        return "cross-entropy"
    if term.startswith("reconstruction"):
        return "MSE (standardised)"
    if term.startswith("mmd"):
        return "MMD (log scale)"
    if term == "val_accuracy":
        return "accuracy"
    return "loss"


def one_per_class(labels: Tensor, count: int) -> Tensor:
    """Indices of the first sample of ``count`` different classes, spread over the
    classes present (all of them, in order, if there are at most ``count``); then, if
    there are fewer classes than ``count``, the next samples in order.

    Shapes:
        labels: (N,) class indices. Returns: (min(count, N),) int64 indices.
    """
    classes = labels.unique()
    picked = torch.linspace(0, len(classes) - 1, min(count, len(classes))).round().long()
    first = [int((labels == c).nonzero()[0]) for c in classes[picked]]
    rest = [i for i in range(len(labels)) if i not in first]
    return torch.tensor((first + rest)[:count], dtype=torch.long)


def training_curves(history: list[dict[str, float]], path: Path) -> Path:
    """One panel per loss term (label, each reconstruction, each MMD) and validation accuracy."""
    names = [k for k in history[0] if k != "total"]
    cols = 4
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    epochs = range(1, len(history) + 1)
    for ax, name in zip(axes.flat, names, strict=False):
        ax.plot(epochs, [h[name] for h in history])
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(_y_label(name), fontsize=8)
        if name.startswith("mmd"):
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reconstructions(model: MFM, split: Split, path: Path, *, samples: int = 4) -> Path:
    """Original vs reconstructed test samples of different classes, one row per view."""
    index = one_per_class(split.labels.cpu(), samples)
    samples = len(index)
    views = {m: v[index.to(v.device)] for m, v in split.views.items()}
    classes = split.labels.cpu()[index].tolist()
    with torch.no_grad():
        recon = model(views).reconstructions
    assert recon is not None
    names = list(views)
    fig, axes = plt.subplots(
        len(names), samples, figsize=(2.4 * samples, 1.9 * len(names)), squeeze=False
    )
    for row, m in enumerate(names):
        for col in range(samples):
            ax = axes[row, col]
            original, estimate = views[m][col].float().cpu(), recon[m][col].float().cpu()
            if m in IMAGE_VIEWS or original.dim() == 3:
                shape = IMAGE_VIEWS.get(m, tuple(original.shape[-2:]))
                pair = torch.cat([original.reshape(shape), estimate.reshape(shape)], dim=1)
                ax.imshow(pair.numpy(), cmap="gray")
                ax.set_xticks([])
                ax.set_yticks([])
            else:
                ax.plot(original.numpy(), lw=0.8, label="original")
                ax.plot(estimate.numpy(), lw=0.8, label="reconstruction")
                ax.set_xticks([])
            if col == 0:
                ax.set_ylabel(m)
            if row == 0:
                ax.set_title(f"class {classes[col]}", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle("test samples: original | reconstruction (images: left | right)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def codes_2d(model: MFM, split: Split, path: Path) -> Path:
    """PCA of the shared codes and of each view's private codes, coloured by class.

    One square panel per code, four to a row, and one legend of the classes.
    """
    with torch.no_grad():
        latents = model(split.views).latents
    items = list(latents.items())
    labels = split.labels.cpu()
    classes = labels.unique().tolist()
    colours = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    cols = min(4, len(items))
    rows = math.ceil(len(items) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(2.8 * cols + 1.2, 2.8 * rows + 0.5), squeeze=False,
        layout="constrained",
    )  # fmt: skip
    for ax, (name, z) in zip(axes.flat, items, strict=False):
        xy = pca_2d(z.float().cpu())
        for k, c in enumerate(classes):
            at = labels == c
            ax.scatter(xy[at, 0].numpy(), xy[at, 1].numpy(), color=colours(k), s=4, label=str(c))
        ax.set_title("shared Z_y" if name == "shared" else f"private Z_a[{name}]", fontsize=9)
        ax.set_box_aspect(1)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(items) :]:
        ax.axis("off")
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, names, title="class", loc="outside right center", markerscale=3)
    fig.suptitle("test codes, first two principal components", fontsize=10)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def contributions(model: MFM, split: Split, path: Path) -> tuple[Path, dict[str, float]]:
    """Bar chart: gradient-flow contribution of F_y and F_a_m to each reconstruction.

    Uses :func:`factorkit.factor_contributions` (mean Frobenius norm of the decoder's
    Jacobian with respect to each factor, per coordinate so factor sizes do not matter).
    Returns the path and each view's shared share ``a / (a + b)``.
    """
    order = torch.arange(len(split))
    batches = [split.take(order[i : i + 256]) for i in range(0, len(split), 256)]

    def factorize(batch: Split) -> FactorizedLatents:
        return model.decode(model.encode(batch.views)).factors

    assert isinstance(model.decoders, ModalityDecoders)
    result = factor_contributions(model.decoders, batches, factorize=factorize, per_coordinate=True)
    names = list(result.shared)
    x = torch.arange(len(names)).numpy()
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.2))
    ax.bar(x - 0.2, [float(result.shared[m]) for m in names], 0.4, label="shared F_y")
    ax.bar(x + 0.2, [float(result.private[m]) for m in names], 0.4, label="private F_a")
    ax.set_xticks(x, names)
    ax.set_ylabel("mean ||dX_hat / dF|| per coordinate")
    ax.set_title("which factor generates each view (test set)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, {m: float(result.share[m]) for m in names}


def swap_grid(model: MFM, split: Split, path: Path, *, view: str = "pix", size: int = 6) -> Path:
    """Reconstructions of ``view`` for every pairing of shared and private codes.

    ``size`` test samples of different classes (:func:`one_per_class`): row r keeps the
    shared code (content) of sample r, column c takes the private codes (style) of
    sample c; the diagonal is the plain reconstruction. Rows and columns are labelled
    with their sample's class.
    """
    sample = split.take(one_per_class(split.labels.cpu(), size).to(split.labels.device))
    size = len(sample)
    classes = sample.labels.cpu().tolist()
    with torch.no_grad():
        latents = model.encode(sample.views)
        grid = transfer_grid(
            model.generators, model.decoders, latents,
            content=torch.arange(size), style=torch.arange(size),
        )[view]  # fmt: skip
    shape = IMAGE_VIEWS.get(view, tuple(grid.shape[-2:]))
    fig, axes = plt.subplots(size, size, figsize=(1.3 * size, 1.4 * size), squeeze=False)
    for r in range(size):
        for c in range(size):
            ax = axes[r, c]
            ax.imshow(grid[r, c].float().cpu().reshape(shape).numpy(), cmap="gray")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"class {classes[r]}", fontsize=8)
            if r == 0:
                ax.set_title(f"class {classes[c]}", fontsize=8)
    fig.supylabel("shared code Z_y (content) of", fontsize=9)
    fig.supxlabel("private codes Z_a (style) of", fontsize=9)
    fig.suptitle(
        f"{view}: each row keeps the shared code, each column takes the private codes,\n"
        "of a test sample of the class named; diagonal: plain reconstruction",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def save_all(
    model: MFM, history: list[dict[str, float]], test: Split, out: Path
) -> tuple[list[Path], dict[str, float]]:
    """Write every plot of a run into ``out``; returns the paths and the shared shares."""
    model.eval()
    bars, shares = contributions(model, test, out / "contributions.png")
    paths = [
        training_curves(history, out / "training_curves.png"),
        reconstructions(model, test, out / "reconstructions.png"),
        codes_2d(model, test, out / "codes_2d.png"),
        bars,
    ]
    if "pix" in test.views:
        paths.append(swap_grid(model, test, out / "swap_grid.png"))
    return paths, shares
