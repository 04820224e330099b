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

from examples.mfm import MFM
from examples.training import Split

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


def save_all(model: MFM, history: list[dict[str, float]], test: Split, out: Path) -> list[Path]:
    """Write every plot of a run into ``out``; returns the paths."""
    model.eval()
    return [
        training_curves(history, out / "training_curves.png"),
        reconstructions(model, test, out / "reconstructions.png"),
        codes_2d(model, test, out / "codes_2d.png"),
    ]
