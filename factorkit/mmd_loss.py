"""Maximum mean discrepancy (MMD) and the MMD prior loss of MFM.

``mmd`` compares two samples; ``gaussian_prior_mmd`` compares a sample with a diagonal
Gaussian prior in closed form (no prior sample); ``MMDPriorLoss`` is the module that MFM
applies to every latent code.

Cost (N = rows of x plus rows of y, D features):

* ``mode="dense"``: upper-triangle row blocks of about 8 MiB (on CUDA up to 512 MiB) of
  the kernel matrix, one matmul each, the gradient computed in the same pass. O(N^2 D)
  time, O(N D) + 8 MiB (CUDA: 512 MiB) memory. The default.
* ``mode="chunked"``: square ``chunk_size`` x ``chunk_size`` tiles. Same value (up to
  float rounding); the block memory is ``chunk_size^2`` whatever N is, plus O(N D).
* ``mode="rff"``: random Fourier features (Gaussian kernels only). O(N D F) time and
  O(N F) memory; ``phi(x) . phi(y)`` is unbiased for ``k(x, y)``, so the estimate is
  unbiased for the chosen estimator, with random error. Measured at the MFM bandwidth,
  n = m = 1024 (``benchmarks/README.md``): mean relative error of MMD^2 about 4-7% with
  256 features, 3.5-4% with 1024 and 1.5-2% with 4096; cosine between the RFF and exact
  gradients 0.97 / 0.99 / 1.00 at D = 16 but only 0.71 / 0.89 / 0.97 at D = 256 (256 /
  1024 / 4096 features). At large D prefer the exact modes for training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, TypeAlias

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from factorkit._mmd_core import Estimator, Mode, Options, Problem, batched_mmd, compute_dtype
from factorkit.distributed import all_gather_with_grad
from factorkit.kernels import GaussianKernel, Kernel
from factorkit.latents import FactorizedLatents

__all__ = ["MMDPriorLoss", "PriorSampler", "gaussian_prior_mmd", "mmd"]

PriorSampler: TypeAlias = Callable[[int, int, torch.device, torch.dtype], Tensor]
"""A callable ``(n, d, device, dtype) -> (n, d) Tensor`` drawing a prior sample."""

_ESTIMATORS = ("biased", "unbiased")
_MODES = ("dense", "chunked", "rff")


def mmd(
    x: Tensor,
    y: Tensor,
    *,
    kernel: Kernel | None = None,
    estimator: Estimator = "biased",
    mode: Mode = "dense",
    chunk_size: int = 1024,
    features: int = 1024,
    x_mask: Tensor | None = None,
    y_mask: Tensor | None = None,
    check_finite: bool = True,
    generator: torch.Generator | None = None,
    gather: bool = False,
) -> Tensor:
    """Squared maximum mean discrepancy between two samples.

    With the defaults this is exactly the MFM reference value: Gaussian kernel
    ``exp(-||x - y||^2 / D^2)`` and the biased V-statistic (diagonals included),
    ``mean K(x, x) + mean K(y, y) - 2 mean K(x, y)``. ``"unbiased"`` is the U-statistic:
    the diagonals of ``K(x, x)`` and ``K(y, y)`` are left out of their means.

    Computed in float32 (float64 if an input is float64), also under autocast, with the
    pooled points centred first (the kernels are translation invariant, so an offset
    costs no digits: float32 stays within 1e-4 relative of float64 for offsets up to
    1e4) and the sums finished in float64: at the MFM bandwidth, where MMD^2 is ~1e-5
    and the three kernel means agree to 4-5 digits, float32 results are typically within
    1e-6 relative of the float64 value. Never builds an N x M x D tensor. A bandwidth
    chosen from the data (median rule) is treated as a constant by the gradient.

    Twice differentiable on every path: the first derivative is computed without an
    autograd graph over the kernel matrix, and with ``create_graph=True`` (gradient
    penalties, meta-learning) it is rebuilt from differentiable operations on a dense
    N x N matrix, so second derivatives are exact at O(N^2) memory for that call.

    Args:
        x: first sample.
        y: second sample; the number of rows may differ from ``x``.
        kernel: a :class:`~factorkit.kernels.Kernel`; default ``GaussianKernel()``
            (the MFM bandwidth rule).
        estimator: ``"biased"`` (V-statistic) or ``"unbiased"`` (U-statistic, needs at
            least 2 rows in each sample).
        mode: ``"dense"``, ``"chunked"`` or ``"rff"`` (see the module docstring).
        chunk_size: tile side for ``mode="chunked"``.
        features: random frequencies per Gaussian scale for ``mode="rff"``.
        x_mask: optional (N,) bool presence mask; rows where it is False are left out
            and the value equals the MMD of ``x[x_mask]``, without a host sync. If fewer
            rows than the estimator needs are present (1, or 2 for ``"unbiased"``), the
            result is 0 with a zero gradient.
        y_mask: the same for ``y``.
        check_finite: raise on NaN/inf in present rows, and on data spread so far for
            the kernel's scale that squared distances lose all precision (e.g. values of
            1e20, whose squares overflow float32): one host sync, skipped under
            ``torch.compile``. Without the check such inputs give NaN.
        generator: random generator for the RFF frequencies.
        gather: under ``torch.distributed``, compute the MMD of the global batch: both
            samples (and masks) are gathered from every rank with
            :func:`~factorkit.distributed.all_gather_with_grad` (per-rank sizes may
            differ), so every rank gets the same value and, after DDP's gradient
            averaging, the single-process gradient. A no-op outside a process group.

    Returns:
        0-dim tensor, float32 (float64 for float64 input).

    Shapes:
        x: (N, D), y: (M, D), x_mask: (N,), y_mask: (M,) -> ().

    Raises:
        ValueError: 1-D or mismatched inputs, no feature columns, too few rows for the
            unbiased estimator, unknown options or a ``chunk_size`` / ``features`` that is
            not a positive int; with ``check_finite``, non-finite values or data too
            spread out for the kernel, naming the sample and the row.

    Examples:
        >>> x, y = torch.randn(128, 8), torch.randn(96, 8) + 1.0
        >>> loss = mmd(x, y)
        >>> bool(loss > mmd(x, torch.randn(96, 8)))
        True
    """
    _check_options(estimator, mode, chunk_size, features)
    if gather:
        x, x_mask = _gather(x, x_mask)
        y, y_mask = _gather(y, y_mask)
    _check_pair(x, y, estimator)
    options = Options(
        kernel or GaussianKernel(), estimator, mode, chunk_size, features, check_finite, generator
    )
    return batched_mmd([Problem(("x", "y"), x, x_mask, y, y_mask)], options)[0]


def gaussian_prior_mmd(
    z: Tensor,
    loc: Tensor | float = 0.0,
    scale: Tensor | float = 1.0,
    *,
    kernel: Kernel | None = None,
    estimator: Estimator = "biased",
    mode: Literal["dense", "chunked"] = "dense",
    chunk_size: int = 1024,
    mask: Tensor | None = None,
    check_finite: bool = True,
) -> Tensor:
    """MMD^2 between a sample and a diagonal Gaussian prior, prior terms in closed form.

    No prior sample is drawn, so there is no sampling noise and only the z-z kernel
    matrix is computed (a quarter of the sampled estimator's). For a Gaussian kernel
    ``k(x, y) = exp(-||x - y||^2 / h)`` (``h = 2 sigma^2``, summed over scales) and the
    prior ``p ~ N(mu, diag(s^2))``::

        E_p k(z, p)  = prod_k sqrt(h / (h + 2 s_k^2)) * exp(-sum_k (z_k - mu_k)^2 / (h + 2 s_k^2))
        E k(p, p')   = prod_k sqrt(h / (h + 4 s_k^2))

    (for N(0, I) in D dimensions: ``(h / (h + 2))^(D/2) exp(-||z||^2 / (h + 2))`` and
    ``(h / (h + 4))^(D/2)``), both from the Gaussian integral
    ``E exp(-a t^2) = (1 + 2 a v)^(-1/2) exp(-a m^2 / (1 + 2 a v))`` for ``t ~ N(m, v)``.
    Then ``MMD^2 = mean_ij k(z_i, z_j) - 2 mean_i E_p k(z_i, p) + E k(p, p')``: with the
    ``"biased"`` z-z mean (diagonal included) it is the exact MMD^2 between the empirical
    distribution of z and the prior; with ``"unbiased"`` (diagonal excluded) it is an
    unbiased estimate of the population MMD^2.

    Args:
        z: the sample (latent codes).
        loc: prior mean, scalar or (D,).
        scale: prior standard deviation, scalar or (D,), positive.
        kernel: a Gaussian kernel (one or several scales); default the MFM rule.
        estimator: ``"biased"`` or ``"unbiased"`` z-z term.
        mode: ``"dense"`` or ``"chunked"`` for the z-z term.
        chunk_size: tile side for ``mode="chunked"``.
        mask: optional (B,) bool presence mask (as in :func:`mmd`).
        check_finite: as in :func:`mmd`; also checks a tensor ``scale`` (a number is
            always checked).

    Raises:
        ValueError: as :func:`mmd`; a ``scale`` that is not positive and finite, a
            ``loc`` that is not finite, ``mode="rff"``, a kernel that is not Gaussian.

    Returns:
        0-dim tensor, float32 (float64 for float64 input).

    Shapes:
        z: (B, D), mask: (B,) -> ().

    Examples:
        >>> z = torch.randn(256, 16)
        >>> bool(gaussian_prior_mmd(z) < gaussian_prior_mmd(z + 2.0))
        True
    """
    _check_options(estimator, mode, chunk_size, 1, modes=("dense", "chunked"))
    _check_pair(z, z, estimator, names=("z", "z"))
    options = Options(kernel or GaussianKernel(), estimator, mode, chunk_size, 1, check_finite)
    return batched_mmd([Problem(("z", "the prior"), z, mask, prior=(loc, scale))], options)[0]


def _check_options(
    estimator: str,
    mode: str,
    chunk_size: int,
    features: int,
    modes: tuple[str, ...] = _MODES,
) -> None:
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}")
    if mode not in modes:
        raise ValueError(f"mode must be one of {modes}, got {mode!r}")
    for name, value in (("chunk_size", chunk_size), ("features", features)):
        _check_count(name, value)


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_pair(x: Tensor, y: Tensor, estimator: str, names: tuple[str, str] = ("x", "y")) -> None:
    for name, t in zip(names, (x, y), strict=True):
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D (N, D), got shape {tuple(t.shape)}")
        if not (t.is_floating_point()):
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if estimator == "unbiased" and t.shape[0] < 2:
            raise ValueError(
                f"the unbiased estimator needs at least 2 rows in {name}, "
                f"got shape {tuple(t.shape)}"
            )
        if t.shape[0] < 1:
            raise ValueError(f"{name} must have at least one row, got shape {tuple(t.shape)}")
        if t.shape[1] < 1:
            raise ValueError(
                f"{name} must have at least one feature (the kernels' bandwidth rules need "
                f"D >= 1), got shape {tuple(t.shape)}"
            )
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of features, "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )


class MMDPriorLoss(nn.Module):
    """MMD penalty pulling latent codes toward a prior, as MFM applies to every latent.

    Draws its own prior sample at every call (as many rows as the batch), or, with
    ``estimator="analytic"``/``"analytic-unbiased"``, uses the closed-form prior terms of
    :func:`gaussian_prior_mmd` (Gaussian kernel and a diagonal Gaussian prior only): no
    sampling noise and a quarter of the kernel matrix.

    Args:
        kernel: default ``GaussianKernel()`` (MFM: ``exp(-||x - y||^2 / D^2)``).
        estimator: ``"biased"`` (MFM default), ``"unbiased"``, ``"analytic"`` (biased z-z
            term, exact prior terms) or ``"analytic-unbiased"``.
        prior: ``None`` for N(0, I); a ``torch.distributions.Distribution`` whose sample
            is (D,) per draw or scalar (drawn D times); or a sampler callable
            ``(n, d, device, dtype) -> (n, d)``. The analytic estimators accept ``None``,
            ``Normal`` or ``Independent(Normal, 1)``.
        mode: ``"dense"``, ``"chunked"`` or ``"rff"`` (sampled estimators only).
        chunk_size: tile side for ``mode="chunked"``.
        features: random frequencies per scale for ``mode="rff"``.
        num_samples: prior sample size, a positive int; default the batch size.
        check_finite: as in :func:`mmd` (one host sync per call, for all latents of a
            :meth:`per_latent` call).
        generator: random generator for the default prior and the RFF frequencies.
        gather: under ``torch.distributed``, the loss of the global batch (codes gathered
            from every rank with gradients, see :func:`mmd`); a no-op otherwise.

    Shapes:
        z: (B, D), mask: (B,) -> ().

    Examples:
        >>> loss_fn = MMDPriorLoss()
        >>> z = torch.randn(64, 8, requires_grad=True)
        >>> loss_fn(z).backward()
        >>> z.grad.shape
        torch.Size([64, 8])
    """

    def __init__(
        self,
        kernel: Kernel | None = None,
        *,
        estimator: Literal["biased", "unbiased", "analytic", "analytic-unbiased"] = "biased",
        prior: Distribution | PriorSampler | None = None,
        mode: Mode = "dense",
        chunk_size: int = 1024,
        features: int = 1024,
        num_samples: int | None = None,
        check_finite: bool = True,
        generator: torch.Generator | None = None,
        gather: bool = False,
    ) -> None:
        super().__init__()
        allowed = ("biased", "unbiased", "analytic", "analytic-unbiased")
        if estimator not in allowed:
            raise ValueError(f"estimator must be one of {allowed}, got {estimator!r}")
        self.kernel = kernel or GaussianKernel()
        self.estimator = estimator
        self.prior = prior
        self.mode: Mode = mode
        self.chunk_size = chunk_size
        self.features = features
        self.num_samples = num_samples
        self.check_finite = check_finite
        self.generator = generator
        self.gather = gather
        self._analytic = _analytic_prior(prior) if estimator.startswith("analytic") else None
        if self._analytic is not None and mode == "rff":
            raise ValueError("the analytic estimators use mode 'dense' or 'chunked', not 'rff'")
        _check_options("biased", mode, chunk_size, features)
        if num_samples is not None:
            _check_count("num_samples", num_samples)

    def forward(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """MMD^2 between the present rows of ``z`` and the prior.

        Args:
            z: (B, D) latent codes.
            mask: optional (B,) bool presence mask; the value equals the loss on
                ``z[mask]`` (with the same prior sample) and needs no host sync.

        Returns:
            0-dim tensor (float32, or float64 for float64 codes).
        """
        return self._losses([("z", z, mask)])[0]

    def per_latent(self, latents: FactorizedLatents) -> dict[str, Tensor]:
        """The loss of every latent, keyed by name: ``"shared"``, then each modality.

        Equal to ``{name: self(z, mask=latents.mask(name)) for name, z in
        latents.items()}``, prior draws included (they are made in that order), in one
        call of the MMD core: one finiteness check for all latents, and with a biased
        estimator (``"biased"`` or ``"analytic"``) in dense mode and small batches (at
        most 128 pooled rows) codes of one batch size, typically every code of a model,
        computed together as one batched kernel matrix.

        Args:
            latents: the codes, with their presence masks.

        Returns:
            latent name -> 0-dim loss.

        Shapes:
            latents.shared: (B, Dy), latents.private[m]: (B, Da_m) -> () each.
        """
        items = [(f"latent {name!r}", z, latents.mask(name)) for name, z in latents.items()]
        losses = self._losses(items)
        return {name: loss for (name, _), loss in zip(latents.items(), losses, strict=True)}

    def _losses(self, items: Sequence[tuple[str, Tensor, Tensor | None]]) -> list[Tensor]:
        """The loss of each ``(label, z, mask)``, all through one call of the MMD core."""
        est: Estimator = "unbiased" if self.estimator.endswith("unbiased") else "biased"
        problems = []
        for label, z, mask in items:
            if self.gather:
                # Every rank then draws its own prior sample of the global size: with
                # equal seeds this is exactly the single-process computation, otherwise
                # an equally valid estimate (gathering per-rank samples would repeat rows
                # under equal seeds).
                z, mask = _gather(z, mask)
            _check_pair(z, z, est, names=(label, label))
            if self._analytic is not None:
                problems.append(Problem((label, "the prior"), z, mask, prior=self._analytic))
            else:
                p = self.sample_prior(self.num_samples or z.shape[0], z.shape[1], z)
                problems.append(Problem((label, "the prior sample"), z, mask, p))
        mode: Mode = self.mode
        options = Options(
            self.kernel,
            est,
            mode,
            self.chunk_size,
            self.features,
            self.check_finite,
            self.generator,
        )
        return batched_mmd(problems, options)

    def sample_prior(self, n: int, d: int, like: Tensor) -> Tensor:
        """Draw an (n, d) prior sample on ``like``'s device, in the compute dtype."""
        dtype = compute_dtype(like, None)
        prior = self.prior
        if prior is None:
            return torch.randn(n, d, device=like.device, dtype=dtype, generator=self.generator)
        if isinstance(prior, Distribution):
            shape = prior.batch_shape + prior.event_shape
            draw = prior.sample((n,) if len(shape) else (n, d))
        else:
            draw = prior(n, d, like.device, dtype)
        if draw.shape != (n, d):
            raise ValueError(f"the prior drew shape {tuple(draw.shape)}, expected ({n}, {d})")
        return draw.to(device=like.device, dtype=dtype)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel!r}, estimator={self.estimator!r}, mode={self.mode!r}"


def _gather(x: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Rows (and their presence mask) of every rank, in rank order."""
    if mask is None:
        return all_gather_with_grad(x), None
    return all_gather_with_grad(x), all_gather_with_grad(mask.to(torch.uint8)).bool()


def _analytic_prior(prior: object) -> tuple[Tensor | float, Tensor | float]:
    """(loc, scale) of a diagonal Gaussian prior, for the closed-form prior terms."""
    if prior is None:
        return 0.0, 1.0
    base = prior.base_dist if isinstance(prior, Independent) else prior
    if isinstance(base, Normal):
        return base.loc, base.scale
    raise ValueError(
        f"the analytic estimators need a Normal / Independent(Normal) prior or None, got {prior!r}"
    )
