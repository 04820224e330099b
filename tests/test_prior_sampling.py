"""Sampling from a non-default prior: ``MMDPriorLoss(prior=...)`` against float64 references.

Every reference here is computed from scratch (pairwise distances, the closed-form Gaussian
expectations), never through factorkit's MMD code, so a prior that is ignored, drawn with
the wrong shape, location or scale, or replaced by N(0, I) changes the value and fails.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor
from torch.distributions import Independent, Laplace, Normal

from factorkit import GaussianKernel, MMDPriorLoss

SIGMA = 1.3  # bandwidth of every kernel below: k(x, y) = exp(-||x - y||^2 / (2 SIGMA^2))


def gram(a: Tensor, b: Tensor) -> Tensor:
    d2 = ((a.double()[:, None, :] - b.double()[None, :, :]) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * SIGMA**2))


def reference_mmd2(x: Tensor, y: Tensor, unbiased: bool = False) -> float:
    """MMD^2 of two samples with the Gaussian kernel, float64, from the definition."""
    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    if not unbiased:
        return float(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    n, m = x.shape[0], y.shape[0]
    off_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    off_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(off_x + off_y - 2 * kxy.mean())


def loss_and_draw(
    loss_fn: MMDPriorLoss, z: Tensor, draw: object, mask: Tensor | None = None, seed: int = 7
) -> tuple[float, Tensor]:
    """The loss, and the prior sample it used (the same draw, repeated under the same seed)."""
    torch.manual_seed(seed)
    value = float(loss_fn(z, mask))
    torch.manual_seed(seed)
    return value, draw()  # type: ignore[operator]


def test_vector_distribution_prior_gives_the_mmd_to_its_own_draw() -> None:
    z = torch.randn(9, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    prior = Independent(Normal(torch.tensor([2.0, -1.0, 0.5]), torch.tensor([0.5, 2.0, 1.0])), 1)
    loss_fn = MMDPriorLoss(GaussianKernel(bandwidth=SIGMA), prior=prior)
    value, p = loss_and_draw(loss_fn, z, lambda: prior.sample((9,)))
    assert p.shape == (9, 3)
    assert value == pytest.approx(reference_mmd2(z, p), rel=1e-9, abs=1e-12)
    # The draw is far from N(0, I): the loss is not the one against a standard normal.
    torch.manual_seed(7)
    standard = torch.randn(9, 3, dtype=torch.float64)
    assert abs(value - reference_mmd2(z, standard)) > 0.05


def test_scalar_distribution_prior_is_drawn_once_per_feature() -> None:
    z = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    prior = Normal(torch.tensor(3.0, dtype=torch.float64), torch.tensor(0.25, dtype=torch.float64))
    loss_fn = MMDPriorLoss(GaussianKernel(bandwidth=SIGMA), prior=prior, num_samples=11)
    value, p = loss_and_draw(loss_fn, z, lambda: prior.sample((11, 4)))
    assert value == pytest.approx(reference_mmd2(z, p), rel=1e-9, abs=1e-12)


def test_unbiased_estimator_and_mask_use_the_same_prior_draw() -> None:
    z = torch.randn(10, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([True, False, True, True, False, True, True, True, False, True])
    prior = Independent(Laplace(torch.tensor([1.0, -2.0]), torch.tensor([0.3, 0.7])), 1)
    loss_fn = MMDPriorLoss(GaussianKernel(bandwidth=SIGMA), estimator="unbiased", prior=prior)
    # The masked loss draws as many prior rows as the batch (10), not the present rows (7).
    value, p = loss_and_draw(loss_fn, z, lambda: prior.sample((10,)), mask=mask)
    assert value == pytest.approx(reference_mmd2(z[mask], p, unbiased=True), rel=1e-9, abs=1e-12)


def test_sampler_callable_gets_the_size_device_dtype_and_its_draw_is_used() -> None:
    calls: list[tuple[int, int, torch.device, torch.dtype]] = []

    def sampler(n: int, d: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        calls.append((n, d, device, dtype))
        grid = torch.arange(n * d, dtype=dtype, device=device).reshape(n, d)
        return torch.sin(grid) * 2.0 + 1.0

    z = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    loss_fn = MMDPriorLoss(GaussianKernel(bandwidth=SIGMA), prior=sampler, num_samples=8)
    value = float(loss_fn(z))
    assert calls == [(8, 3, torch.device("cpu"), torch.float64)]
    p = torch.sin(torch.arange(24, dtype=torch.float64).reshape(8, 3)) * 2.0 + 1.0
    assert value == pytest.approx(reference_mmd2(z, p), rel=1e-9, abs=1e-12)


def test_sampler_with_a_wrong_shape_is_refused() -> None:
    loss_fn = MMDPriorLoss(prior=lambda n, d, device, dtype: torch.zeros(n, d + 1))
    with pytest.raises(ValueError, match=r"expected \(4, 2\)"):
        loss_fn(torch.randn(4, 2))


def test_sample_prior_has_the_moments_of_the_prior() -> None:
    loc, scale = torch.tensor([2.0, -1.0, 0.0]), torch.tensor([0.5, 2.0, 1.0])
    loss_fn = MMDPriorLoss(prior=Independent(Normal(loc, scale), 1))
    torch.manual_seed(11)
    draw = loss_fn.sample_prior(40_000, 3, torch.zeros(1, 3, dtype=torch.float64))
    assert draw.shape == (40_000, 3) and draw.dtype == torch.float64
    # Standard errors: scale / sqrt(n) for the mean, about scale / sqrt(2 n) for the std.
    n = draw.shape[0]
    assert torch.all((draw.mean(0) - loc.double()).abs() < 5 * scale.double() / math.sqrt(n))
    assert torch.all((draw.std(0) - scale.double()).abs() < 5 * scale.double() / math.sqrt(2 * n))


def test_codes_drawn_from_the_prior_score_lower_than_codes_from_a_standard_normal() -> None:
    loc, scale = torch.tensor([3.0, -3.0]), torch.tensor([0.5, 0.5])
    prior = Independent(Normal(loc, scale), 1)
    loss_fn = MMDPriorLoss(GaussianKernel(bandwidth=SIGMA), prior=prior)
    torch.manual_seed(5)
    on_prior = float(loss_fn(prior.sample((128,))))
    off_prior = float(loss_fn(torch.randn(128, 2)))
    assert on_prior < 0.05 < 0.5 < off_prior


def expected_gaussian_terms(z: Tensor, loc: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """E_p k(z_i, p) per row and E k(p, p') for p, p' ~ N(loc, diag(scale^2)), float64."""
    h = 2 * SIGMA**2
    s2 = scale.double() ** 2
    zp = (1 + 2 * s2 / h) ** -0.5 * torch.exp(-((z.double() - loc.double()) ** 2) / (h + 2 * s2))
    pp = ((1 + 4 * s2 / h) ** -0.5).prod()
    return zp.prod(-1), pp


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("independent", [False, True])
def test_analytic_estimator_uses_the_prior_location_and_scale(
    unbiased: bool, independent: bool
) -> None:
    z = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    loc = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    scale = torch.tensor([0.4, 1.5, 0.8], dtype=torch.float64)
    normal = Normal(loc, scale)
    loss_fn = MMDPriorLoss(
        GaussianKernel(bandwidth=SIGMA),
        estimator="analytic-unbiased" if unbiased else "analytic",
        prior=Independent(normal, 1) if independent else normal,
    )
    kzz = gram(z, z)
    b = z.shape[0]
    zz = (kzz.sum() - kzz.diagonal().sum()) / (b * (b - 1)) if unbiased else kzz.mean()
    zp, pp = expected_gaussian_terms(z, loc, scale)
    assert float(loss_fn(z)) == pytest.approx(float(zz - 2 * zp.mean() + pp), rel=1e-9)
