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

__all__ = ["IMAGE_VIEWS", "pca_2d", "save_all"]

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
        if name.startswith("mmd"):
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reconstructions(model: MFM, split: Split, path: Path, *, samples: int = 4) -> Path:
    """Original vs reconstructed test samples, one row per view."""
    views = {m: v[:samples] for m, v in split.views.items()}
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
    axes[0, 0].legend(fontsize=7, loc="upper right")
    fig.suptitle("test samples: original | reconstruction (images: left | right)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def codes_2d(model: MFM, split: Split, path: Path) -> Path:
    """PCA of the shared codes coloured by class, beside each view's private codes."""
    with torch.no_grad():
        latents = model(split.views).latents
    items = list(latents.items())
    labels = split.labels.cpu()
    fig, axes = plt.subplots(1, len(items), figsize=(3.0 * len(items), 3.0), squeeze=False)
    for ax, (name, z) in zip(axes.flat, items, strict=True):
        xy = pca_2d(z.float().cpu())
        ax.scatter(xy[:, 0].numpy(), xy[:, 1].numpy(), c=labels.numpy(), cmap="tab10", s=4)
        ax.set_title("shared Z_y" if name == "shared" else f"private Z_a[{name}]", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("test codes, first two principal components, coloured by class", fontsize=10)
    fig.tight_layout()
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

    Row r keeps the shared code (content) of test sample r, column c takes the private
    codes (style) of test sample c; the diagonal is the plain reconstruction.
    """
    step = max(len(split) // size, 1)
    rows = torch.arange(0, step * size, step)[:size]
    sample = split.take(rows)
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
    fig.suptitle(f"{view}: rows keep the shared code, columns take the private codes", fontsize=9)
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
