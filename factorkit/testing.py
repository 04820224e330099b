"""Synthetic multimodal data with known factors, for tests and tutorials.

The generative model, for M modalities:

    s   ~ N(0, I_ks)                         shared factors: drive every modality and the label
    p_m ~ N(0, I_km)                         private factors: drive modality m only
    x_m = W2_m tanh(W1_m [s, p_m] + b1_m) + noise * eps,    eps ~ N(0, I)
    y   = argmax_c (s A)_c                   label: a linear function of s only

The mixing weights are fixed random draws: W1_m ~ N(0, gain^2 / (ks + km)) with
gain = 1.5 (tanh is then clearly non-linear), b1_m ~ N(0, 0.01), W2_m ~ N(0, 1 / hidden),
and A has centred, unit-norm class columns, so classes are roughly balanced. The label
depends on a projection of s of dimension min(ks, num_classes - 1): with the defaults
(ks = 2, 3 classes) on all of s. An MFM trained on these views should put s into its
shared code and p_m into modality m's private code; :mod:`factorkit.probes` measures
whether it did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch import Tensor

from factorkit._validation import check_modality_names, check_size, per_modality

__all__ = ["SyntheticViews", "make_synthetic_views"]

_GAIN = 1.5


class SyntheticViews(NamedTuple):
    """Views, labels and the true factors that generated them.

    Attributes:
        views: modality name (sorted) -> observed features x_m.
        labels: class labels y = argmax(s A).
        shared: the true shared factors s.
        private: modality name -> the true private factors p_m.

    Shapes:
        views[m]: (N, D_m). labels: (N,) int64. shared: (N, ks). private[m]: (N, km).
    """

    views: dict[str, Tensor]
    labels: Tensor
    shared: Tensor
    private: dict[str, Tensor]


def make_synthetic_views(
    num_samples: int,
    *,
    view_sizes: Mapping[str, int] | None = None,
    shared_size: int = 2,
    private_size: int | Mapping[str, int] = 2,
    num_classes: int = 3,
    hidden_size: int = 32,
    noise: float = 0.1,
    seed: int = 0,
    sample_seed: int | None = None,
) -> SyntheticViews:
    """Draw a multimodal data set whose shared and private factors are known.

    Deterministic: the same arguments give the same tensors on every platform (CPU
    generator, float32 results).

    Args:
        num_samples: N.
        view_sizes: modality name -> D_m (default ``{"a": 24, "b": 32}``).
        shared_size: ks, number of shared factors.
        private_size: km, number of private factors: one int for all, or per modality.
        num_classes: number of label classes (at least 2).
        hidden_size: width of each random mixing network.
        noise: standard deviation of the additive Gaussian noise.
        seed: seeds the mixing networks and label map (the "world") and, unless
            ``sample_seed`` is given, the samples.
        sample_seed: seeds the samples only, to draw fresh data from the same world (e.g. a
            test set).

    Returns:
        :class:`SyntheticViews`.

    Shapes:
        views[m]: (N, D_m). labels: (N,). shared: (N, ks). private[m]: (N, km).

    Examples:
        >>> data = make_synthetic_views(100, view_sizes={"a": 8, "b": 6}, seed=1)
        >>> data.views["a"].shape, data.private["b"].shape, data.labels.shape
        (torch.Size([100, 8]), torch.Size([100, 2]), torch.Size([100]))
    """
    sizes = dict(view_sizes) if view_sizes is not None else {"a": 24, "b": 32}
    names = check_modality_names(sizes.keys())
    sizes = per_modality(sizes, names, "view_sizes")
    private_sizes = per_modality(private_size, names, "private_size")
    n = check_size(num_samples, "num_samples")
    ks, hidden = check_size(shared_size, "shared_size"), check_size(hidden_size, "hidden_size")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    if not noise >= 0.0:
        raise ValueError(f"noise must be >= 0, got {noise}")

    world = torch.Generator().manual_seed(seed)
    label_map = torch.randn(ks, num_classes, generator=world)
    label_map = label_map - label_map.mean(1, keepdim=True)
    label_map = label_map / label_map.norm(dim=0, keepdim=True)
    mixing = {}
    for m in names:
        width = ks + private_sizes[m]
        w1 = torch.randn(width, hidden, generator=world) * (_GAIN / math.sqrt(width))
        b1 = torch.randn(hidden, generator=world) * 0.1
        w2 = torch.randn(hidden, sizes[m], generator=world) / math.sqrt(hidden)
        mixing[m] = (w1, b1, w2)

    draw = world if sample_seed is None else torch.Generator().manual_seed(sample_seed)
    shared = torch.randn(n, ks, generator=draw)
    private, views = {}, {}
    for m in names:
        w1, b1, w2 = mixing[m]
        private[m] = torch.randn(n, private_sizes[m], generator=draw)
        clean = torch.tanh(torch.cat([shared, private[m]], 1) @ w1 + b1) @ w2
        views[m] = clean + noise * torch.randn(n, sizes[m], generator=draw)
    labels = (shared @ label_map).argmax(1)
    return SyntheticViews(views=views, labels=labels, shared=shared, private=private)
