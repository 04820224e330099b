"""Factorization probes: what each code holds, and what recombined codes decode to.

Linear probes measure how much of a known quantity (a label, a true factor) a code holds
linearly. Both are fitted in float64 on standardised codes (mean 0, variance 1 per
column, statistics of the training rows), deterministically, and scored on held-out rows:

- :func:`linear_probe_r2`: closed-form ridge regression, scored by the coefficient of
  determination R^2 = 1 - sum (y - y_hat)^2 / sum (y - mean_test(y))^2 per target column.
- :func:`linear_probe_accuracy`: multinomial logistic regression with an L2 penalty,
  fitted by L-BFGS from zero weights, scored by accuracy.

Cross-reconstruction decodes recombined codes: :func:`style_transfer` keeps each
sample's shared code and takes the private codes of another sample, :func:`content_transfer`
does the reverse, :func:`transfer_grid` decodes every (content, style) pair of two lists.
Swapping codes Z before the generators equals swapping factors F after them, because each
generator acts on one sample at a time.

Examples:
    >>> z = head(features)                             # FactorizedLatents
    >>> {name: float(linear_probe_accuracy(code, labels)) for name, code in z.items()}
    >>> linear_probe_r2(z.shared, true_shared_factors)  # R^2, averaged over columns
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal, TypeAlias

import torch
from torch import Tensor

from factorkit.latents import FactorizedLatents
from factorkit.masks import any_present

__all__ = [
    "content_transfer",
    "linear_probe_accuracy",
    "linear_probe_r2",
    "recombine_latents",
    "style_transfer",
    "transfer_grid",
]

Generators: TypeAlias = Callable[[FactorizedLatents], FactorizedLatents]
Decoders: TypeAlias = Callable[[FactorizedLatents], Mapping[str, Tensor]]


def _split(
    n: int, test_fraction: float, seed: int, train: Tensor | None, device: torch.device
) -> tuple[Tensor, Tensor]:
    """Indices of the training and the test rows."""
    if train is not None:
        if train.dtype != torch.bool or train.shape != (n,):
            raise ValueError(
                f"train must be a bool mask of shape ({n},), got {train.dtype} "
                f"of shape {tuple(train.shape)}"
            )
        train_rows, test_rows = train.nonzero()[:, 0], (~train).nonzero()[:, 0]
    else:
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        n_test = round(n * test_fraction)
        test_rows, train_rows = order[:n_test], order[n_test:]
    if len(train_rows) < 2 or len(test_rows) < 1:
        raise ValueError(
            f"need at least 2 training rows and 1 test row, got {len(train_rows)} and "
            f"{len(test_rows)} of {n}"
        )
    return train_rows.to(device), test_rows.to(device)


def _standardised(codes: Tensor, train_rows: Tensor, test_rows: Tensor) -> tuple[Tensor, Tensor]:
    x = codes.double()
    x_train = x[train_rows]
    mean, std = x_train.mean(0), x_train.std(0)
    # A constant column (e.g. a dead ReLU unit) carries nothing; keep it at 0, not NaN.
    std = torch.where(std > 0, std, 1.0)
    return (x_train - mean) / std, (x[test_rows] - mean) / std


def _check_codes(codes: Tensor, rows: int | None = None) -> int:
    if codes.dim() != 2 or not codes.is_floating_point():
        raise ValueError(
            f"codes must be a float tensor (N, D), got {codes.dtype} {tuple(codes.shape)}"
        )
    if rows is not None and codes.shape[0] != rows:
        raise ValueError(f"codes have {codes.shape[0]} rows, the targets {rows}")
    if not bool(torch.isfinite(codes).all()):
        raise ValueError("codes hold non-finite values")
    return int(codes.shape[0])


def linear_probe_r2(
    codes: Tensor,
    targets: Tensor,
    *,
    ridge: float = 1e-4,
    test_fraction: float = 0.25,
    seed: int = 0,
    train: Tensor | None = None,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Held-out R^2 of a ridge regression from codes to targets.

    Fits W, b minimising (1/n) ||Y - b - X W||^2 + ridge ||W||^2 on the training rows, with
    X the standardised codes (closed form, float64), and scores each target column on the
    test rows by R^2 = 1 - SS_res / SS_tot (SS_tot around the test rows' mean). R^2 is 1
    for a perfect linear fit, about 0 (or below) for targets independent of the codes,
    and NaN for a target that is constant over the test rows.

    Args:
        codes: the codes X (e.g. ``latents.shared``).
        targets: what to predict (e.g. the true shared factors).
        ridge: L2 penalty on standardised codes (scale-free).
        test_fraction: share of rows held out, drawn by a permutation seeded with ``seed``.
        seed: seed of that permutation.
        train: bool mask of the training rows (the others are the test rows); overrides
            ``test_fraction`` and ``seed``.
        reduction: ``"mean"`` over target columns, or ``"none"``.

    Returns:
        float64 R^2: a scalar, or one value per target column with ``reduction="none"``.

    Shapes:
        codes: (N, D). targets: (N,) or (N, Dt). Returns: () or (Dt,) (``()`` for 1-D
        targets).
    """
    n = _check_codes(codes, targets.shape[0])
    if targets.dim() not in (1, 2):
        raise ValueError(f"targets must be (N,) or (N, Dt), got {tuple(targets.shape)}")
    train_rows, test_rows = _split(n, test_fraction, seed, train, codes.device)
    x_train, x_test = _standardised(codes, train_rows, test_rows)
    y = targets.double().reshape(n, -1)
    y_train, y_test = y[train_rows], y[test_rows]
    y_mean = y_train.mean(0)
    gram = x_train.T @ x_train
    gram.diagonal().add_(ridge * x_train.shape[0])
    weights = torch.linalg.solve(gram, x_train.T @ (y_train - y_mean))
    residual = y_test - (x_test @ weights + y_mean)
    total = (y_test - y_test.mean(0)).square().sum(0)
    r2: Tensor = 1.0 - residual.square().sum(0) / total
    if reduction == "mean":
        return r2.mean()
    return r2.reshape(targets.shape[1:])


def linear_probe_accuracy(
    codes: Tensor,
    labels: Tensor,
    *,
    num_classes: int | None = None,
    weight_decay: float = 1e-4,
    max_iter: int = 300,
    test_fraction: float = 0.25,
    seed: int = 0,
    train: Tensor | None = None,
) -> Tensor:
    """Held-out accuracy of a multinomial logistic regression from codes to labels.

    Minimises the mean cross-entropy + (weight_decay / 2) ||W||^2 (bias not penalised) on
    the training rows, X the standardised codes, by L-BFGS with a strong-Wolfe line search
    from zero weights in float64: the result is deterministic.

    Args:
        codes: the codes X.
        labels: integer class labels in [0, num_classes).
        num_classes: number of classes (default: ``labels.max() + 1``).
        weight_decay: L2 penalty on the weights (keeps separable data bounded).
        max_iter: L-BFGS iterations.
        test_fraction: share of rows held out, drawn by a permutation seeded with ``seed``.
        seed: seed of that permutation.
        train: bool mask of the training rows; overrides ``test_fraction`` and ``seed``.

    Returns:
        float64 scalar: the fraction of test rows classified correctly.

    Shapes:
        codes: (N, D). labels: (N,) integer. Returns: ().
    """
    n = _check_codes(codes, labels.shape[0])
    if labels.shape != (n,) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be integers of shape ({n},), got {labels.dtype} {tuple(labels.shape)}"
        )
    classes = num_classes if num_classes is not None else int(labels.max()) + 1
    if int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise ValueError(f"labels must lie in [0, {classes}), got [{labels.min()}, {labels.max()}]")
    train_rows, test_rows = _split(n, test_fraction, seed, train, codes.device)
    x_train, x_test = _standardised(codes, train_rows, test_rows)
    y_train = labels[train_rows].long()
    weight = x_train.new_zeros(x_train.shape[1], classes)
    bias = x_train.new_zeros(classes)
    optimizer = torch.optim.LBFGS(
        [weight, bias],
        max_iter=max_iter,
        tolerance_grad=1e-10,
        tolerance_change=1e-14,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    rows = torch.arange(x_train.shape[0], device=x_train.device)

    def objective() -> Tensor:
        # The gradient in closed form, (softmax - onehot) / n: no autograd graph per step.
        with torch.no_grad():
            log_p = (x_train @ weight + bias).log_softmax(1)
            loss = 0.5 * weight_decay * weight.square().sum() - log_p[rows, y_train].mean()
            residual = log_p.exp()
            residual[rows, y_train] -= 1.0
            residual /= x_train.shape[0]
            weight.grad = x_train.T @ residual + weight_decay * weight
            bias.grad = residual.sum(0)
        return loss

    optimizer.step(objective)  # type: ignore[no-untyped-call]  # LBFGS.step is unannotated
    predicted = (x_test @ weight + bias).argmax(1)
    return (predicted == labels[test_rows]).double().mean()


def _check_rows(index: Tensor, batch: int, what: str) -> Tensor:
    if index.dim() != 1 or index.is_floating_point() or index.dtype == torch.bool:
        raise ValueError(
            f"{what} must be a 1-D integer tensor, got {index.dtype} {tuple(index.shape)}"
        )
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= batch):
        raise ValueError(
            f"{what} must index samples in [0, {batch}), got [{index.min()}, {index.max()}]"
        )
    return index.long()


def recombine_latents(
    latents: FactorizedLatents, *, shared_from: Tensor, private_from: Tensor
) -> FactorizedLatents:
    """New samples made of one sample's shared code and another sample's private codes.

    Row k holds the shared code of sample ``shared_from[k]`` and the private codes (all
    modalities) of sample ``private_from[k]``; presence masks follow the private codes.

    Args:
        latents: codes Z (or factors F) of a batch.
        shared_from: sample index of each row's shared code.
        private_from: sample index of each row's private codes.

    Returns:
        The recombined codes.

    Shapes:
        latents: B samples. shared_from, private_from: (K,) integer in [0, B).
        Returns: K samples.
    """
    batch = latents.batch_size
    shared_from = _check_rows(shared_from, batch, "shared_from")
    private_from = _check_rows(private_from, batch, "private_from")
    if shared_from.shape != private_from.shape:
        raise ValueError(
            f"shared_from {tuple(shared_from.shape)} and private_from "
            f"{tuple(private_from.shape)} must have the same length"
        )
    present = None
    if latents.present is not None:
        if not bool(any_present(latents.present)[shared_from].all()):
            raise ValueError("shared_from picks a sample without any observed modality")
        present = {m: mask[private_from] for m, mask in latents.present.items()}
    private = {m: z[private_from] for m, z in latents.private.items()}
    return FactorizedLatents(latents.shared[shared_from], private, present)


def _decode(
    generators: Generators | None, decoders: Decoders, latents: FactorizedLatents
) -> dict[str, Tensor]:
    factors = latents if generators is None else generators(latents)
    return dict(decoders(factors))


def style_transfer(
    generators: Generators | None,
    decoders: Decoders,
    latents: FactorizedLatents,
    source: Tensor,
) -> dict[str, Tensor]:
    """Reconstructions from each sample's shared code and sample ``source[i]``'s private codes.

    In MFM terms: the content (shared, discriminative factor) of sample i rendered in the
    style (private, generative factors) of sample ``source[i]``. Runs with the caller's
    grad mode; wrap it in ``torch.no_grad()`` for plots.

    Args:
        generators: maps codes Z to factors F (:class:`~factorkit.FactorGenerators`), or
            ``None`` when ``latents`` already are factors.
        decoders: maps factors to reconstructions (:class:`~factorkit.ModalityDecoders`).
        latents: the batch's codes.
        source: which sample lends its private codes to each row.

    Returns:
        modality name -> X_hat_m(F_a_m of ``source[i]``, F_y of i).

    Shapes:
        latents: B samples. source: (B,) integer in [0, B). Returns: (B, ...) per modality.
    """
    own = torch.arange(latents.batch_size, device=latents.shared.device)
    mixed = recombine_latents(latents, shared_from=own, private_from=source)
    return _decode(generators, decoders, mixed)


def content_transfer(
    generators: Generators | None,
    decoders: Decoders,
    latents: FactorizedLatents,
    source: Tensor,
) -> dict[str, Tensor]:
    """Reconstructions from sample ``source[i]``'s shared code and each sample's private codes.

    The reverse of :func:`style_transfer`: the content of sample ``source[i]`` in the style
    of sample i. Same arguments.

    Returns:
        modality name -> X_hat_m(F_a_m of i, F_y of ``source[i]``).

    Shapes:
        latents: B samples. source: (B,) integer in [0, B). Returns: (B, ...) per modality.
    """
    own = torch.arange(latents.batch_size, device=latents.shared.device)
    mixed = recombine_latents(latents, shared_from=source, private_from=own)
    return _decode(generators, decoders, mixed)


def transfer_grid(
    generators: Generators | None,
    decoders: Decoders,
    latents: FactorizedLatents,
    *,
    content: Tensor,
    style: Tensor,
) -> dict[str, Tensor]:
    """Decode every pairing of R content samples with C style samples.

    Cell (r, c) is X_hat_m(F_a_m of sample ``style[c]``, F_y of sample ``content[r]``):
    along a row the content stays and the style changes, along a column the reverse.

    Args:
        generators: codes -> factors, or ``None`` when ``latents`` are factors.
        decoders: factors -> reconstructions.
        latents: the batch's codes.
        content: samples lending their shared code, one per row.
        style: samples lending their private codes, one per column.

    Returns:
        modality name -> the grid of reconstructions.

    Shapes:
        content: (R,) integer. style: (C,) integer. Returns: (R, C, ...) per modality,
        e.g. (R, C, 1, 16, 15) for an image modality.

    Examples:
        >>> head = FactorizedHead({"fou": 6, "pix": 5}, shared_size=4, private_size=2)
        >>> gens = FactorGenerators.for_head(head, factor_size=8)
        >>> decs = ModalityDecoders(
        ...     {"fou": VectorDecoder(8, 8, 6), "pix": ImageDecoder(8, 8, (1, 16, 15))}
        ... )
        >>> z = head({"fou": torch.randn(6, 6), "pix": torch.randn(6, 5)})
        >>> with torch.no_grad():
        ...     grid = transfer_grid(gens, decs, z, content=torch.arange(4), style=torch.arange(6))
        >>> grid["pix"].shape
        torch.Size([4, 6, 1, 16, 15])
    """
    content = _check_rows(content, latents.batch_size, "content")
    style = _check_rows(style, latents.batch_size, "style")
    rows, cols = content.shape[0], style.shape[0]
    mixed = recombine_latents(
        latents,
        shared_from=content.repeat_interleave(cols),
        private_from=style.repeat(rows),
    )
    out = _decode(generators, decoders, mixed)
    return {m: x.reshape(rows, cols, *x.shape[1:]) for m, x in out.items()}
