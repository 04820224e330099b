import math

import pytest
import torch

from factorkit._kernel_plan import centered_block_
from factorkit.kernels import (
    GaussianKernel,
    InverseMultiquadraticKernel,
    SumKernel,
    squared_distances,
)


def naive_sq(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((x.double()[:, None, :] - y.double()[None, :, :]) ** 2).sum(-1)


@pytest.fixture
def xy() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(
        9, 5, generator=g, dtype=torch.float64
    )


def test_squared_distances_match_broadcast(xy: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = xy
    torch.testing.assert_close(squared_distances(x, y), naive_sq(x, y), rtol=1e-12, atol=1e-12)


def test_squared_distances_of_a_point_to_itself_are_not_negative() -> None:
    x = torch.randn(50, 3) * 1e3
    assert squared_distances(x, x).min() >= 0


def test_gaussian_mfm_rule_is_exp_minus_r_over_d_squared(xy: tuple[torch.Tensor, ...]) -> None:
    x, y = xy
    expected = torch.exp(-naive_sq(x, y) / 25.0)
    torch.testing.assert_close(GaussianKernel()(x, y), expected, rtol=1e-12, atol=0)


def test_gaussian_bandwidths_sum_over_scales(xy: tuple[torch.Tensor, ...]) -> None:
    x, y = xy
    r = naive_sq(x, y)
    expected = torch.exp(-r / (2 * 0.5**2)) + torch.exp(-r / (2 * 3.0**2))
    torch.testing.assert_close(GaussianKernel(bandwidth=[0.5, 3.0])(x, y), expected)


def test_imq_follows_wae_constant(xy: tuple[torch.Tensor, ...]) -> None:
    x, y = xy
    r = naive_sq(x, y)
    k = InverseMultiquadraticKernel(scales=(0.5, 2.0), prior_variance=1.5)
    expected = sum(c / (c + r) for c in (2 * 5 * 1.5 * 0.5, 2 * 5 * 1.5 * 2.0))
    torch.testing.assert_close(k(x, y), expected)


def test_sum_kernel_adds_components(xy: tuple[torch.Tensor, ...]) -> None:
    x, y = xy
    a, b = GaussianKernel(bandwidth=2.0), InverseMultiquadraticKernel(scales=1.0)
    both = a + b
    assert isinstance(both, SumKernel)
    assert both._plan(x).kinds == ("gaussian", "imq")
    torch.testing.assert_close(both(x, y), a(x, y) + b(x, y))


def test_median_rule_uses_the_median_pairwise_distance(xy: tuple[torch.Tensor, ...]) -> None:
    x, y = xy
    pool = torch.cat([x, y])
    r = naive_sq(pool, pool)
    i, j = torch.triu_indices(len(pool), len(pool), 1)
    pairs = sorted(r[i, j].tolist())
    lower_median = pairs[(len(pairs) - 1) // 2]
    plan = GaussianKernel(rule="median")._plan(x, y)
    assert plan.params.item() == pytest.approx(lower_median, rel=1e-12)


def test_median_rule_ignores_absent_points() -> None:
    x = torch.tensor([[0.0], [1.0], [3.0], [1e6]], dtype=torch.float64)
    present = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)
    plan = GaussianKernel(rule="median")._plan(x, None, present)
    # Pairs among 0, 1, 3: squared distances 1, 4, 9.
    assert plan.params.item() == 4.0


def test_median_rule_subsamples_large_inputs() -> None:
    x = torch.randn(4000, 3, generator=torch.Generator().manual_seed(1))
    med = GaussianKernel(rule="median", median_points=256)._plan(x).params.item()
    # Squared distance of two N(0, I_3) points is 2 * chi2_3: median 2 * 2.366.
    assert med == pytest.approx(2 * 2.366, rel=0.1)


@pytest.mark.parametrize(
    "kernel",
    [GaussianKernel(bandwidth=[0.7, 2.0]), InverseMultiquadraticKernel(), GaussianKernel()],
)
def test_centered_block_values_and_slopes(kernel: GaussianKernel) -> None:
    r = torch.linspace(0, 20, 41, dtype=torch.float64).view(1, -1)
    plan = kernel._plan(torch.zeros(1, 3, dtype=torch.float64))
    r0 = torch.tensor(2.5, dtype=torch.float64)
    k0, s0 = plan.at(r0)
    value, slope = centered_block_(r.clone(), plan, k0)
    torch.testing.assert_close(value, plan.evaluate(r) - plan.evaluate(r0), rtol=1e-12, atol=1e-14)
    rr = r.clone().requires_grad_()
    (dk,) = torch.autograd.grad(plan.evaluate(rr).sum(), rr)
    torch.testing.assert_close(slope, dk - s0.sum(), rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: GaussianKernel(bandwidth=0.0), "bandwidth"),
        (lambda: GaussianKernel(bandwidth=[1.0, math.inf]), "bandwidth"),
        (lambda: GaussianKernel(rule="silverman"), "rule"),  # type: ignore[arg-type]
        (lambda: InverseMultiquadraticKernel(scales=()), "scales"),
        (lambda: InverseMultiquadraticKernel(prior_variance=-1.0), "prior_variance"),
    ],
)
def test_bad_kernel_arguments_raise(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]
