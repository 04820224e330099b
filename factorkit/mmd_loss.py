"""Maximum mean discrepancy (MMD) and the MMD prior loss of MFM.

``mmd`` compares two samples; ``gaussian_prior_mmd`` compares a sample with a diagonal
Gaussian prior in closed form (no prior sample); ``MMDPriorLoss`` is the module that MFM
applies to every latent code.

Cost (N = rows of x plus rows of y, D features):

* ``mode="dense"``: upper-triangle row blocks of about 8 MiB of the kernel matrix, one
  matmul each, the gradient computed in the same pass. O(N^2 D) time, O(N D) + 8 MiB
  memory. The default.
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

import itertools
import math
from collections.abc import Callable, Mapping
from typing import Literal, TypeAlias

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal

from factorkit._mmd_engine import SMALL_ROWS, small_kernel_quadratic, weighted_kernel_sum
from factorkit.distributed import all_gather_with_grad
from factorkit.kernels import GaussianKernel, Kernel, KernelPlan
from factorkit.latents import FactorizedLatents

__all__ = ["MMDPriorLoss", "PriorSampler", "gaussian_prior_mmd", "mmd"]

Estimator = Literal["biased", "unbiased"]
Mode = Literal["dense", "chunked", "rff"]
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
    sums finished in float64: at the MFM bandwidth, where MMD^2 is ~1e-5 and the three
    kernel means agree to 4-5 digits, float32 results are typically within 1e-6 relative
    of the float64 value. Never builds an N x M x D tensor. A bandwidth chosen from the
    data (median rule) is treated as a constant by the gradient. The gradient is computed
    in the forward pass, so double backward is refused.

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
        check_finite: raise on NaN/inf in present rows (one host sync; skipped under
            ``torch.compile``).
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
        ValueError: 1-D or mismatched inputs, non-finite values, too few rows for the
            unbiased estimator, unknown options.

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
    dtype = _compute_dtype(x, y)
    with torch.autocast(x.device.type, enabled=False):
        xs, ux = _prepare(x, x_mask, "x", dtype, check_finite)
        ys, uy = _prepare(y, y_mask, "y", dtype, check_finite)
        plan = (kernel or GaussianKernel()).plan(xs, ys, ux, uy)
        coef, diag, ok = _coefficients(ux, uy, estimator)
        if estimator == "biased" and mode == "dense" and _small(xs.shape[0] + ys.shape[0]):
            a = torch.cat([_mean_weights(ux), -_mean_weights(uy)])
            value = _one_kernel_quadratic(torch.cat([xs, ys]), a, plan)
            return torch.where(ok, value, torch.zeros_like(value)).to(dtype)
        if mode == "rff":
            value = _rff_kernel_sum(xs, ys, ux, uy, plan, features, generator, coef)
        else:
            chunk = (chunk_size, chunk_size) if mode == "chunked" else None
            value = weighted_kernel_sum(xs, ys, ux, uy, coef, plan, chunk)
        # The U-statistic leaves out the diagonal, where every kernel equals k(0).
        value = value - plan.value_at_zero() * diag
        return torch.where(ok, value, torch.zeros_like(value)).to(dtype)


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
        check_finite: raise on NaN/inf in present rows (one host sync).

    Returns:
        0-dim tensor, float32 (float64 for float64 input).

    Shapes:
        z: (B, D), mask: (B,) -> ().

    Examples:
        >>> z = torch.randn(256, 16)
        >>> bool(gaussian_prior_mmd(z) < gaussian_prior_mmd(z + 2.0))
        True
    """
    _check_options(estimator, mode, chunk_size, 1)
    _check_pair(z, z, estimator, names=("z", "z"))
    dtype = _compute_dtype(z, z)
    with torch.autocast(z.device.type, enabled=False):
        zs, uz = _prepare(z, mask, "z", dtype, check_finite)
        plan = (kernel or GaussianKernel()).plan(zs, None, uz, None)
        if any(kind != "gaussian" for kind in plan.kinds):
            raise ValueError(f"the analytic prior terms need a Gaussian kernel, got {kernel!r}")
        mu, var = _prior_moments(loc, scale, zs)
        empty, none = zs[:0], uz[:0]
        coef, diag, ok = _coefficients(uz, none, estimator, single=True)
        if estimator == "biased" and mode == "dense" and _small(zs.shape[0]):
            zz = _one_kernel_quadratic(zs, _mean_weights(uz), plan)
        else:
            chunk = (chunk_size, chunk_size) if mode == "chunked" else None
            zz = weighted_kernel_sum(zs, empty, uz, none, coef, plan, chunk)
            zz = zz - plan.value_at_zero() * diag
        value = zz + _analytic_prior_terms(zs, uz, mu, var, plan)
        return torch.where(ok, value, torch.zeros_like(value)).to(dtype)


def _analytic_prior_terms(
    z: Tensor, u: Tensor, mu: Tensor, var: Tensor, plan: KernelPlan
) -> Tensor:
    """``-2 mean_i E_p k(z_i, p) + E k(p, p')`` in float64, summed over Gaussian scales.

    Shapes:
        z: (..., B, D), u: (..., B), plan.params: (..., S), mu, var: (D,) or (..., 1, D).
        Returns: (...).
    """
    zd, ud = z.double(), u.double()
    h = plan.params.double().unsqueeze(-1)  # (..., S, 1)
    var2 = h + 2.0 * var.double()  # (..., S, D)
    log_c2 = 0.5 * torch.log(h / var2).sum(-1)  # (..., S)
    log_c4 = 0.5 * torch.log(h / (h + 4.0 * var.double())).sum(-1)
    dev = (zd - mu.double()).square()  # (..., B, D)
    cross = torch.exp(log_c2.unsqueeze(-2) - dev @ (1.0 / var2).mT).sum(-1)  # (..., B)
    mean_cross = (ud * cross).sum(-1) / ud.sum(-1).clamp_min(1.0)
    return -2.0 * mean_cross + torch.exp(log_c4).sum(-1)


def _prior_moments(loc: Tensor | float, scale: Tensor | float, z: Tensor) -> tuple[Tensor, Tensor]:
    d = z.shape[1]
    mu = torch.as_tensor(loc, dtype=z.dtype, device=z.device)
    sd = torch.as_tensor(scale, dtype=z.dtype, device=z.device)
    for name, t in (("loc", mu), ("scale", sd)):
        if t.dim() > 1 or (t.dim() == 1 and t.shape[0] not in (1, d)):
            raise ValueError(f"{name} must be a scalar or ({d},), got shape {tuple(t.shape)}")
    return mu.expand(d), sd.square().expand(d)


def _check_options(estimator: str, mode: str, chunk_size: int, features: int) -> None:
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {estimator!r}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if chunk_size < 1 or features < 1:
        raise ValueError(f"chunk_size and features must be >= 1, got {chunk_size}, {features}")


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
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same number of features, "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )


def _compute_dtype(x: Tensor, y: Tensor) -> torch.dtype:
    return torch.float64 if torch.float64 in (x.dtype, y.dtype) else torch.float32


def _prepare(
    t: Tensor, mask: Tensor | None, name: str, dtype: torch.dtype, check_finite: bool
) -> tuple[Tensor, Tensor]:
    """Cast to the compute dtype; weights from the mask; absent rows zeroed."""
    t = t.to(dtype)
    if mask is None:
        weight = torch.ones(t.shape[0], dtype=dtype, device=t.device)
        present = None
    else:
        if mask.shape != t.shape[:1] or mask.dtype != torch.bool:
            raise ValueError(
                f"{name}_mask must be a bool tensor of shape ({t.shape[0]},), "
                f"got {mask.dtype} of shape {tuple(mask.shape)} for {name} of shape "
                f"{tuple(t.shape)}"
            )
        present = mask.to(t.device).unsqueeze(1)
        # Absent rows may hold anything (even NaN): they must not reach the sums.
        t = torch.where(present, t, torch.zeros_like(t))
        weight = mask.to(device=t.device, dtype=dtype)
    if check_finite and not torch.compiler.is_compiling() and not bool(t.isfinite().all()):
        bad = int((~t.isfinite().all(1)).nonzero()[0, 0])
        raise ValueError(f"{name} has non-finite values (row {bad}), shape {tuple(t.shape)}")
    return t, weight


def _coefficients(
    ux: Tensor, uy: Tensor, estimator: str, single: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """Block coefficients ``c_xx, c_xy, c_yy``, the diagonal's weight, and validity.

    The weighted V-statistic is ``sum_ij A_ij k_ij`` with ``A_ij = c_{g(i)g(j)} u_i u_j``;
    the U-statistic also uses ``c_gg = 1 / (S_g^2 - sum u^2)`` and drops the diagonal,
    whose weight ``sum_i A_ii`` is returned. ``single`` keeps only the x-x block.
    """
    sx, sy = ux.double().sum(), uy.double().sum()
    qx, qy = ux.double().square().sum(), uy.double().square().sum()
    unbiased = estimator == "unbiased"
    need = 2.0 if unbiased else 1.0
    ok = sx >= need if single else (sx >= need) & (sy >= need)
    # Clamped so that an empty mask gives finite (then discarded) values and gradients.
    cxx = 1.0 / (sx.square() - qx if unbiased else sx.square()).clamp_min(1.0)
    cyy = 1.0 / (sy.square() - qy if unbiased else sy.square()).clamp_min(1.0)
    cxy = -1.0 / (sx * sy).clamp_min(1.0)
    if single:
        cxy, cyy = torch.zeros_like(cxx), torch.zeros_like(cxx)
    diag = cxx * qx + cyy * qy if unbiased else torch.zeros_like(cxx)
    return torch.stack([cxx, cxy, cyy]), diag, ok


def _rff_kernel_sum(
    x: Tensor,
    y: Tensor,
    ux: Tensor,
    uy: Tensor,
    plan: KernelPlan,
    features: int,
    generator: torch.Generator | None,
    coef: Tensor,
) -> Tensor:
    """Random Fourier feature estimate of ``sum_ij A_ij k_ij``, diagonal included.

    ``phi(a) . phi(b)`` is an unbiased estimate of ``k(a, b)``, and ``phi(a) . phi(a)``
    equals ``k(0)`` exactly (cos^2 + sin^2), so the U-statistic's diagonal is still known.
    """
    if any(kind != "gaussian" for kind in plan.kinds):
        raise ValueError(f"mode='rff' needs a Gaussian kernel, got components {plan.kinds}")
    d = x.shape[1]
    # exp(-r / h) is the characteristic function of omega ~ N(0, (2 / h) I).
    omega = torch.randn(len(plan.kinds), d, features, generator=generator, dtype=x.dtype)
    omega = omega.to(x.device) * torch.sqrt(2.0 / plan.params).view(-1, 1, 1)
    omega = omega.permute(1, 0, 2).reshape(d, -1)
    sums = []
    for t, u in ((x, ux), (y, uy)):
        proj = t @ omega
        phi = torch.cat([torch.cos(proj), torch.sin(proj)], 1) * (1.0 / math.sqrt(features))
        sums.append(u.double() @ phi.double())
    sx, sy = sums
    return coef[0] * (sx @ sx) + 2.0 * coef[1] * (sx @ sy) + coef[2] * (sy @ sy)


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
        num_samples: prior sample size; default the batch size.
        check_finite: raise on non-finite codes (one host sync per call).
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

    def forward(self, z: Tensor, mask: Tensor | None = None) -> Tensor:
        """MMD^2 between the present rows of ``z`` and the prior.

        Args:
            z: (B, D) latent codes.
            mask: optional (B,) bool presence mask; the value equals the loss on
                ``z[mask]`` (with the same prior sample) and needs no host sync.

        Returns:
            0-dim tensor (float32, or float64 for float64 codes).
        """
        est: Estimator = "unbiased" if self.estimator.endswith("unbiased") else "biased"
        if self.gather:
            # Every rank then draws its own prior sample of the global size: with equal
            # seeds this is exactly the single-process computation, otherwise an equally
            # valid estimate (gathering per-rank samples would repeat rows under equal
            # seeds).
            z, mask = _gather(z, mask)
        if self._analytic is not None:
            loc, scale = self._analytic
            return gaussian_prior_mmd(
                z,
                loc,
                scale,
                kernel=self.kernel,
                estimator=est,
                mode="chunked" if self.mode == "chunked" else "dense",
                chunk_size=self.chunk_size,
                mask=mask,
                check_finite=self.check_finite,
            )
        if z.dim() != 2:
            raise ValueError(f"z must be 2-D (B, D), got shape {tuple(z.shape)}")
        p = self.sample_prior(self.num_samples or z.shape[0], z.shape[1], z)
        return mmd(
            z,
            p,
            kernel=self.kernel,
            estimator=est,
            mode=self.mode,
            chunk_size=self.chunk_size,
            features=self.features,
            x_mask=mask,
            check_finite=self.check_finite,
            generator=self.generator,
        )

    def per_latent(self, latents: FactorizedLatents) -> dict[str, Tensor]:
        """The loss of every latent, keyed by name: ``"shared"``, then each modality.

        Equal to ``{name: self(z, mask=latents.mask(name)) for name, z in
        latents.items()}``, prior draws included (they are made in that order). With a
        biased estimator (``"biased"`` or ``"analytic"``) in dense mode and small batches
        (at most 128 pooled rows), codes of one shape, typically every private code, are
        computed together as one batched kernel matrix instead of one per latent.

        Args:
            latents: the codes, with their presence masks.

        Returns:
            latent name -> 0-dim loss.

        Shapes:
            latents.shared: (B, Dy), latents.private[m]: (B, Da_m) -> () each.
        """
        codes = dict(latents.items())
        groups: dict[tuple[object, ...], list[str]] = {}
        for name, z in codes.items():
            if self._batches(z):
                groups.setdefault((z.shape[0], z.dtype, z.device), []).append(name)
        batched = [names for names in groups.values() if len(names) > 1]
        in_batch = {name for names in batched for name in names}
        out: dict[str, Tensor] = {}
        draws: dict[str, Tensor] = {}
        # Latent order is kept for the prior draws, so the result equals one call each.
        for name, z in codes.items():
            if name not in in_batch:
                out[name] = self(z, mask=latents.mask(name))
            elif self._analytic is None:
                draws[name] = self.sample_prior(self.num_samples or z.shape[0], z.shape[1], z)
        for names in batched:
            out.update(self._batched(names, codes, latents, draws))
        return {name: out[name] for name in codes}

    def _batches(self, z: Tensor) -> bool:
        """Whether a code like ``z`` can join the batched small-sample path."""
        if self.mode != "dense" or self.gather or self.estimator not in ("biased", "analytic"):
            return False
        if z.dim() != 2 or z.shape[0] < 1 or z.shape[1] < 1 or not z.is_floating_point():
            return False
        prior_rows = 0 if self._analytic is not None else self.num_samples or z.shape[0]
        return _small(z.shape[0] + prior_rows)

    def _batched(
        self,
        names: list[str],
        codes: Mapping[str, Tensor],
        latents: FactorizedLatents,
        draws: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:
        """Losses of codes with one batch size from one batched kernel matrix.

        Codes of different sizes are zero-padded to the largest: padding adds nothing to
        any distance, and the bandwidth rule and prior terms use each code's own size.
        """
        names = sorted(names, key=lambda n: codes[n].shape[1])
        sizes = [codes[n].shape[1] for n in names]
        # One dtype for the whole group (it is part of the grouping key).
        dtype = _compute_dtype(codes[names[0]], codes[names[0]])
        device = codes[names[0]].device
        with torch.autocast(device.type, enabled=False):
            z = _stack_padded([codes[n].to(dtype) for n in names])
            masks = [latents.mask(n) for n in names]
            masked = any(m is not None for m in masks)
            if masked:
                ones = torch.ones(z.shape[1], dtype=dtype, device=device)
                u = torch.stack([ones if m is None else m.to(dtype) for m in masks])
                # Absent rows may hold anything (even NaN): they must not reach the sums.
                z = torch.where(u.unsqueeze(-1) > 0, z, torch.zeros_like(z))
            else:
                u = torch.ones(z.shape[:2], dtype=dtype, device=device)
            if (
                self.check_finite
                and not torch.compiler.is_compiling()
                and not bool(z.isfinite().all())
            ):
                g, row = (~z.isfinite().all(-1)).nonzero()[0].tolist()
                raise ValueError(
                    f"latent {names[g]!r} has non-finite values (row {row}), "
                    f"shape {tuple(codes[names[g]].shape)}"
                )
            members = [z[g, :, :d] for g, d in enumerate(sizes)]
            if self._analytic is not None:
                plans = [
                    self.kernel.plan(zg, None, ug, None) for zg, ug in zip(members, u, strict=True)
                ]
                if any(kind != "gaussian" for kind in plans[0].kinds):
                    raise ValueError(
                        f"the analytic prior terms need a Gaussian kernel, got {self.kernel!r}"
                    )
                plan = KernelPlan(plans[0].kinds, torch.stack([q.params for q in plans]))
                # Padded features get a point mass at 0, which leaves the terms unchanged.
                moments = [_prior_moments(*self._analytic, zg) for zg in members]
                mu = _stack_padded([m.unsqueeze(0) for m, _ in moments])
                var = _stack_padded([v.unsqueeze(0) for _, v in moments])
                value = small_kernel_quadratic(z, _mean_weights(u), plan)
                value = value + _analytic_prior_terms(z, u, mu, var, plan)
            else:
                p = _stack_padded([draws[n] for n in names])
                up = torch.ones_like(p[..., 0])
                plans = [
                    self.kernel.plan(zg, p[g, :, : zg.shape[1]], u[g], up[g])
                    for g, zg in enumerate(members)
                ]
                plan = KernelPlan(plans[0].kinds, torch.stack([q.params for q in plans]))
                a = torch.cat([_mean_weights(u), -_mean_weights(up)], dim=1)
                value = small_kernel_quadratic(torch.cat([z, p], dim=1), a, plan)
            if masked:
                value = torch.where(u.sum(-1) >= 1, value, torch.zeros_like(value))
            value = value.to(dtype)
        return dict(zip(names, value.unbind(0), strict=True))

    def sample_prior(self, n: int, d: int, like: Tensor) -> Tensor:
        """Draw an (n, d) prior sample on ``like``'s device, in the compute dtype."""
        dtype = _compute_dtype(like, like)
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


def _small(rows: int) -> bool:
    return rows <= SMALL_ROWS


def _stack_padded(tensors: list[Tensor]) -> Tensor:
    """Stack (B, D_g) tensors, sorted by D_g, into (G, B, max D_g) with zero features added.

    Tensors of one size are stacked first and padded once, so the cost is a few ops per
    distinct size, not per tensor.
    """
    width = tensors[-1].shape[-1]
    parts = []
    for _, same in itertools.groupby(tensors, key=lambda t: t.shape[-1]):
        block = torch.stack(list(same))
        parts.append(F.pad(block, (0, width - block.shape[-1])))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def _one_kernel_quadratic(w: Tensor, a: Tensor, plan: KernelPlan) -> Tensor:
    """:func:`small_kernel_quadratic` for a single point set: (N, D), (N,) -> ()."""
    batched = KernelPlan(plan.kinds, plan.params.unsqueeze(0))
    return small_kernel_quadratic(w.unsqueeze(0), a.unsqueeze(0), batched)[0]


def _mean_weights(u: Tensor) -> Tensor:
    """Presence weights normalised to sum 1 (all zero when nothing is present), float64."""
    ud = u.double()
    return ud / ud.sum(-1, keepdim=True).clamp_min(1.0)


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
