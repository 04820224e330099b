"""Hostile and degenerate inputs to the MMD (issue 14): every case asserts a value or an error.

Second derivatives on every path, collapsed median bandwidths, data far from the origin,
values near the dtype's range, zero-width features and bad arguments. The references are
written from the definitions, in float64, independently of factorkit's code paths.
"""

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import factorkit._mmd_core as core
from factorkit import (
    FactorizedLatents,
    GaussianKernel,
    InverseMultiquadraticKernel,
    Kernel,
    MMDPriorLoss,
    gaussian_prior_mmd,
    mmd,
)

Tensor = torch.Tensor


# --- float64 references from the definitions ------------------------------------------------


def sq_dist(a: Tensor, b: Tensor) -> Tensor:
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def gaussian(h: float) -> Callable[[Tensor], Tensor]:
    return lambda r: torch.exp(-r / h)


def ref_mmd(
    x: Tensor,
    y: Tensor,
    k: Callable[[Tensor], Tensor],
    estimator: str = "biased",
) -> Tensor:
    kxx, kyy, kxy = k(sq_dist(x, x)), k(sq_dist(y, y)), k(sq_dist(x, y))
    n, m = len(x), len(y)
    if estimator == "unbiased":
        xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        return xx + yy - 2 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def ref_prior_mmd(z: Tensor, h: float, loc: float, scale: float, estimator: str) -> Tensor:
    """MMD^2 to N(loc, scale^2 I) with the prior terms from the Gaussian integral."""
    b, d = z.shape
    kzz = torch.exp(-sq_dist(z, z) / h)
    if estimator == "unbiased":
        zz = (kzz.sum() - kzz.diagonal().sum()) / (b * (b - 1))
    else:
        zz = kzz.mean()
    v = scale**2
    cross = (h / (h + 2 * v)) ** (d / 2) * torch.exp(-((z - loc) ** 2).sum(1) / (h + 2 * v))
    return zz - 2 * cross.mean() + (h / (h + 4 * v)) ** (d / 2)


def points(n: int, d: int, seed: int, shift: float = 0.0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) + shift


# --- 1. second derivatives on every path ----------------------------------------------------

KERNELS: dict[str, Kernel] = {
    "mfm": GaussianKernel(),
    "bandwidths": GaussianKernel(bandwidth=[0.7, 2.0]),
    "imq": InverseMultiquadraticKernel(),
    "sum": GaussianKernel(bandwidth=1.0) + InverseMultiquadraticKernel(scales=0.5),
}
# (estimator, mode, engine_only): the small-batch path, the one-pass engine, chunked tiles.
PATHS = [
    ("biased", "dense", False),
    ("biased", "dense", True),
    ("biased", "chunked", False),
    ("unbiased", "dense", False),
    ("unbiased", "chunked", False),
]


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize(("estimator", "mode", "engine"), PATHS)
def test_mmd_is_twice_differentiable(
    kernel: str, estimator: str, mode: str, engine: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine:
        monkeypatch.setattr(core, "SMALL_ROWS", 0)
    x = points(5, 2, seed=1).requires_grad_(True)
    y = points(4, 2, seed=2, shift=0.4).requires_grad_(True)

    def f(a: Tensor, b: Tensor) -> Tensor:
        return mmd(a, b, kernel=KERNELS[kernel], estimator=estimator, mode=mode, chunk_size=3)  # type: ignore[arg-type]

    assert torch.autograd.gradgradcheck(f, (x, y))


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("kernel", ["mfm", "bandwidths"])
def test_rff_is_twice_differentiable(estimator: str, kernel: str) -> None:
    x = points(5, 2, seed=3).requires_grad_(True)
    y = points(4, 2, seed=4, shift=0.4).requires_grad_(True)

    def f(a: Tensor, b: Tensor) -> Tensor:
        g = torch.Generator().manual_seed(0)  # the same frequencies at every evaluation
        k = KERNELS[kernel]
        return mmd(a, b, kernel=k, estimator=estimator, mode="rff", features=16, generator=g)  # type: ignore[arg-type]

    assert torch.autograd.gradgradcheck(f, (x, y))


@pytest.mark.parametrize("kernel", ["mfm", "bandwidths"])
@pytest.mark.parametrize(("estimator", "mode", "engine"), PATHS)
def test_gaussian_prior_mmd_is_twice_differentiable(
    kernel: str, estimator: str, mode: str, engine: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if engine:
        monkeypatch.setattr(core, "SMALL_ROWS", 0)
    z = points(6, 2, seed=5, shift=0.3).requires_grad_(True)
    mask = torch.tensor([True, True, False, True, True, True])

    def f(a: Tensor) -> Tensor:
        k = KERNELS[kernel]
        return gaussian_prior_mmd(
            a,
            0.2,
            1.5,
            kernel=k,
            estimator=estimator,
            mode=mode,
            chunk_size=4,
            mask=mask,  # type: ignore[arg-type]
        )

    assert torch.autograd.gradgradcheck(f, (z,))


@pytest.mark.parametrize("estimator", ["analytic", "analytic-unbiased", "biased"])
def test_per_latent_is_twice_differentiable(estimator: str) -> None:
    shared = points(6, 3, seed=6).requires_grad_(True)
    audio = points(6, 2, seed=7, shift=0.5).requires_grad_(True)
    present = {"audio": torch.tensor([True, False, True, True, True, True])}

    def f(s: Tensor, a: Tensor) -> Tensor:
        loss = MMDPriorLoss(estimator=estimator, generator=torch.Generator().manual_seed(1))  # type: ignore[arg-type]
        return sum(loss.per_latent(FactorizedLatents(s, {"audio": a}, present)).values())  # type: ignore[return-value]

    assert torch.autograd.gradgradcheck(f, (shared, audio))


@pytest.mark.parametrize("engine", [False, True])
def test_issue_example_second_derivative_matches_the_reference(
    engine: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The issue's example: the gradient came back detached under create_graph=True.
    if engine:
        monkeypatch.setattr(core, "SMALL_ROWS", 0)
    x = points(6, 3, seed=8).requires_grad_(True)
    y = points(5, 3, seed=9)
    (g,) = torch.autograd.grad(mmd(x, y), x, create_graph=True)
    assert g.requires_grad
    v = points(6, 3, seed=10)
    (hv,) = torch.autograd.grad((g * v).sum(), x)
    xr = x.detach().clone().requires_grad_(True)
    (gr,) = torch.autograd.grad(ref_mmd(xr, y, gaussian(9.0)), xr, create_graph=True)
    (hvr,) = torch.autograd.grad((gr * v).sum(), xr)
    torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(hv, hvr, rtol=1e-9, atol=1e-13)


def test_median_rule_second_derivative_treats_the_bandwidth_as_a_constant() -> None:
    x = points(7, 2, seed=11).requires_grad_(True)
    y = points(6, 2, seed=12, shift=0.5)
    median = GaussianKernel(rule="median")
    h = median._plan(torch.cat([x, y]).detach()).params.item()
    fixed = GaussianKernel(bandwidth=(h / 2) ** 0.5)
    v = points(7, 2, seed=13)
    hvs = []
    for k in (median, fixed):
        (g,) = torch.autograd.grad(mmd(x, y, kernel=k), x, create_graph=True)
        hvs.append(torch.autograd.grad((g * v).sum(), x)[0])
    torch.testing.assert_close(hvs[0], hvs[1], rtol=1e-12, atol=1e-15)


# --- 2. collapsed median bandwidth -----------------------------------------------------------


def test_collapsed_median_all_points_equal_gives_zero_and_finite_gradients() -> None:
    # Issue example: s = full((20, 4), 1.0) gave NaN. Every distance is 0, the median and
    # the mean collapse, and the MFM value D^2 = 16 is used: MMD(s, s) is exactly 0.
    s = torch.full((20, 4), 1.0, requires_grad=True)
    kernel = GaussianKernel(rule="median")
    assert kernel._plan(s.detach()).params.item() == 16.0
    value = mmd(s, s.detach(), kernel=kernel, estimator="unbiased")
    (g,) = torch.autograd.grad(value, s)
    assert value.item() == pytest.approx(0.0, abs=1e-7)
    assert torch.equal(g, torch.zeros_like(g))


def test_collapsed_median_analytic_loss_matches_the_closed_form() -> None:
    # Issue example: loss 1.0 with every gradient NaN. Now h = D^2 = 64 and the value and
    # gradient are those of the closed form at that bandwidth.
    z = torch.full((64, 8), 0.3, dtype=torch.float64, requires_grad=True)
    loss = MMDPriorLoss(GaussianKernel(rule="median"), estimator="analytic-unbiased")(z)
    (g,) = torch.autograd.grad(loss, z)
    zr = z.detach().clone().requires_grad_(True)
    want = ref_prior_mmd(zr, 64.0, 0.0, 1.0, "unbiased")
    (gr,) = torch.autograd.grad(want, zr)
    assert loss.item() == pytest.approx(want.item(), rel=1e-12)
    torch.testing.assert_close(g, gr, rtol=1e-10, atol=1e-15)
    z32 = z.detach().float().requires_grad_(True)
    loss32 = MMDPriorLoss(GaussianKernel(rule="median"), estimator="analytic-unbiased")(z32)
    (g32,) = torch.autograd.grad(loss32, z32)
    assert torch.isfinite(g32).all()
    assert loss32.item() == pytest.approx(want.item(), rel=1e-5)


def test_median_of_mostly_coinciding_points_falls_back_to_the_mean() -> None:
    # 15 equal rows and 5 others: 105 of 190 pairs coincide, so the median is 0.
    pool = torch.cat([torch.zeros(15, 2), points(5, 2, seed=14, shift=2.0)])
    pool = pool.double().requires_grad_(True)
    x, y = pool[:12], pool[12:]
    r = sq_dist(pool.detach(), pool.detach())
    i, j = torch.triu_indices(20, 20, 1)
    mean = r[i, j].mean().item()
    kernel = GaussianKernel(rule="median")
    assert kernel._plan(x.detach(), y.detach()).params.item() == pytest.approx(mean, rel=1e-12)
    value = mmd(x, y, kernel=kernel)
    (g,) = torch.autograd.grad(value, pool)
    assert value.item() == pytest.approx(ref_mmd(x, y, gaussian(mean)).item(), rel=1e-10)
    assert torch.isfinite(g).all()


# --- 3. float32 on data far from the origin --------------------------------------------------


@pytest.mark.parametrize("offset", [1e2, 1e3, 1e4])
@pytest.mark.parametrize("engine", [False, True])
def test_float32_far_from_the_origin_matches_float64(
    offset: float, engine: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: relative error ~1e-4 at 100, 1.4% at 1000, ~60% at 1e4.
    if engine:
        monkeypatch.setattr(core, "SMALL_ROWS", 0)
    x32 = (points(40, 4, seed=15) + offset).float()
    y32 = (points(30, 4, seed=16) * 1.3 + 0.2 + offset).float()
    x64, y64 = x32.double(), y32.double()
    k = GaussianKernel(bandwidth=2.0)
    cases = [
        (lambda a, b: mmd(a, b, kernel=k), ref_mmd(x64, y64, gaussian(8.0))),
        (
            lambda a, b: mmd(a, b, kernel=k, estimator="unbiased"),
            ref_mmd(x64, y64, gaussian(8.0), "unbiased"),
        ),
        (
            lambda a, b: mmd(a, b, kernel=k, mode="chunked", chunk_size=16),
            ref_mmd(x64, y64, gaussian(8.0)),
        ),
        (
            lambda a, b: gaussian_prior_mmd(a, offset, 1.0, kernel=k),
            ref_prior_mmd(x64, 8.0, offset, 1.0, "biased"),
        ),
        (
            lambda a, b: MMDPriorLoss(k, estimator="analytic-unbiased", prior=_normal(offset))(a),
            ref_prior_mmd(x64, 8.0, offset, 1.0, "unbiased"),
        ),
    ]
    for f, want in cases:
        got = f(x32, y32)
        assert got.dtype == torch.float32
        assert abs(got.item() - want.item()) <= 1e-4 * abs(want.item())


def _normal(loc: float) -> torch.distributions.Normal:
    return torch.distributions.Normal(torch.tensor(loc), torch.tensor(1.0))


def test_float32_per_latent_far_from_the_origin_matches_float64() -> None:
    shared = (points(32, 3, seed=17) + 1e4).float()
    audio = (points(32, 2, seed=18) * 0.5 + 1e4).float()
    latents = FactorizedLatents(shared, {"audio": audio})
    got = MMDPriorLoss(estimator="analytic", prior=_normal(1e4)).per_latent(latents)
    for name, z in (("shared", shared), ("audio", audio)):
        want = ref_prior_mmd(z.double(), z.shape[1] ** 2, 1e4, 1.0, "biased")
        assert abs(got[name].item() - want.item()) <= 1e-4 * abs(want.item())


def test_small_path_has_exact_zero_self_distances() -> None:
    # Issue example: 0.1950 on the small path, 0.2000 chunked and in float64.
    a = torch.randn(10, 2, generator=torch.Generator().manual_seed(19)) * 10 + 100
    k = GaussianKernel(bandwidth=0.1)
    want = ref_mmd(a.double(), a.double() + 50, gaussian(0.02)).item()
    for mode in ("dense", "chunked"):
        got = mmd(a, a + 50, kernel=k, mode=mode).item()  # type: ignore[arg-type]
        assert got == pytest.approx(want, rel=1e-6)


# --- 4. values at the edge of the dtype's range, zero-width features ------------------------


def huge(dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(20)
    return torch.randn(6, 3, generator=g).to(dtype) * 1e20, torch.randn(6, 3, generator=g).to(dtype)


SPREAD = r"spread too far for the kernel in torch.float(32|64): row \d+ .* \(shape \(6, 3\)\)"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    ("call", "label"),
    [
        (lambda x, y: mmd(x, y), "x"),
        (lambda x, y: mmd(y, x, estimator="unbiased"), "y"),
        (lambda x, y: mmd(x, y, mode="chunked"), "x"),
        (lambda x, y: gaussian_prior_mmd(x), "z"),
        (lambda x, y: MMDPriorLoss()(x), "z"),
        (lambda x, y: MMDPriorLoss(estimator="analytic")(x), "z"),
        (
            lambda x, y: MMDPriorLoss().per_latent(FactorizedLatents(y, {"audio": x})),
            "latent 'audio'",
        ),
    ],
)
def test_values_of_1e20_raise_naming_the_sample(
    dtype: torch.dtype, call: Callable[[Tensor, Tensor], object], label: str
) -> None:
    # Squares overflow float32; in float64 they lose every digit of the unit-scale rows.
    x, y = huge(dtype)
    with pytest.raises(ValueError, match=f"^{label} is " + SPREAD):
        call(x, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", ["dense", "chunked"])
def test_values_of_1e20_unchecked_give_nan_not_a_wrong_number(
    dtype: torch.dtype, mode: str
) -> None:
    x, y = huge(dtype)
    x.requires_grad_(True)
    value = mmd(x, y, mode=mode, check_finite=False)  # type: ignore[arg-type]
    assert value.isnan()
    analytic = gaussian_prior_mmd(x, check_finite=False)
    assert analytic.isnan()


def test_large_but_usable_values_are_exact() -> None:
    # 1e3 spread at bandwidth 1e3 keeps every digit that matters: no error, right value.
    x, y = points(8, 3, seed=21) * 1e3, points(7, 3, seed=22) * 1e3
    k = GaussianKernel(bandwidth=1e3)
    got = mmd(x.float(), y.float(), kernel=k).item()
    want = ref_mmd(x.float().double(), y.float().double(), gaussian(2e6)).item()
    assert got == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize(
    "call",
    [
        lambda: mmd(torch.randn(4, 0), torch.randn(4, 0)),
        lambda: mmd(torch.randn(4, 0), torch.randn(4, 0), estimator="unbiased", mode="chunked"),
        lambda: gaussian_prior_mmd(torch.randn(4, 0)),
        lambda: MMDPriorLoss()(torch.randn(4, 0)),
        lambda: MMDPriorLoss(estimator="analytic")(torch.randn(4, 0)),
    ],
)
def test_zero_width_features_raise(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError, match=r"at least one feature .* got shape \(4, 0\)"):
        call()


def test_zero_width_latent_is_named() -> None:
    latents = FactorizedLatents(torch.randn(4, 2), {"audio": torch.randn(4, 0)})
    with pytest.raises(ValueError, match=r"latent 'audio' must have at least one feature"):
        MMDPriorLoss().per_latent(latents)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_latent_or_prior_sample_is_named(bad: float) -> None:
    z = torch.randn(8, 3)
    z[5, 2] = bad
    with pytest.raises(ValueError, match=r"^z has non-finite values \(row 5\), shape \(8, 3\)"):
        MMDPriorLoss()(z)
    sampler = lambda n, d, device, dtype: torch.full((n, d), bad)  # noqa: E731
    with pytest.raises(ValueError, match=r"^the prior sample has non-finite values \(row 0\)"):
        MMDPriorLoss(prior=sampler)(torch.randn(8, 3))


# --- 6. arguments ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda z: mmd(z, z, mode="chunked", chunk_size=2.5),
            r"chunk_size must be a positive int, got 2.5",
        ),
        (lambda z: mmd(z, z, chunk_size=0), r"chunk_size must be a positive int, got 0"),
        (lambda z: mmd(z, z, chunk_size=True), r"chunk_size must be a positive int, got True"),
        (lambda z: mmd(z, z, mode="rff", features=-1), r"features must be a positive int, got -1"),
        (lambda z: gaussian_prior_mmd(z, chunk_size=2.5), r"chunk_size must be a positive int"),
        (lambda z: MMDPriorLoss(chunk_size=2.5), r"chunk_size must be a positive int, got 2.5"),
        (lambda z: MMDPriorLoss(num_samples=0), r"num_samples must be a positive int, got 0"),
        (lambda z: MMDPriorLoss(num_samples=-3), r"num_samples must be a positive int, got -3"),
        (lambda z: MMDPriorLoss(num_samples=2.5), r"num_samples must be a positive int, got 2.5"),
        (lambda z: gaussian_prior_mmd(z, scale=-1), r"scale must be positive and finite, got -1"),
        (lambda z: gaussian_prior_mmd(z, scale=0.0), r"scale must be positive and finite, got 0.0"),
        (lambda z: gaussian_prior_mmd(z, scale=float("inf")), r"scale must be positive and finite"),
        (lambda z: gaussian_prior_mmd(z, loc=float("nan")), r"loc must be finite, got nan"),
        (
            lambda z: gaussian_prior_mmd(z, scale=torch.tensor([1.0, -2.0, 1.0])),
            r"prior of z needs a finite loc and a positive, finite scale, got loc "
            r"0.0, scale \[1.0, -2.0, 1.0\]",
        ),
        (
            lambda z: gaussian_prior_mmd(z, mode="rff"),
            r"mode must be one of \('dense', 'chunked'\), got 'rff'",
        ),
        (
            lambda z: MMDPriorLoss(estimator="analytic", mode="rff"),
            r"analytic estimators use mode 'dense' or 'chunked', not 'rff'",
        ),
        (
            lambda z: mmd(z, z, x_mask=torch.ones(5, dtype=torch.bool)),
            r"presence mask of x must be a bool tensor of shape \(6,\), "
            r"got torch.bool of shape \(5,\)",
        ),
        (
            lambda z: gaussian_prior_mmd(z, mask=torch.ones(6)),
            r"presence mask of z must be a bool tensor of shape \(6,\), got torch.float32",
        ),
    ],
)
def test_bad_arguments_raise(call: Callable[[Tensor], object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(torch.randn(6, 3))


# --- properties: every path against the float64 reference, derivatives included ------------


def assert_matches(
    got: Tensor, leaf: Tensor, want: Tensor, grad: Tensor, hvp: tuple[Tensor, Tensor]
) -> None:
    """Value and gradient vs the float64 reference; in float64 also a Hessian-vector product.

    float32: 1e-4 relative with a floor of 1e-6 (about 10 ulp of the O(1) kernel means).
    """
    float64 = got.dtype == torch.float64
    (g,) = torch.autograd.grad(got, leaf, create_graph=float64)
    if not float64:
        assert abs(got.item() - want.item()) <= 1e-4 * abs(want.item()) + 1e-6
        scale = grad.abs().max().item()
        torch.testing.assert_close(g.double(), grad.detach(), rtol=1e-3, atol=1e-4 * scale)
        return
    assert got.item() == pytest.approx(want.item(), rel=1e-9, abs=1e-14)
    torch.testing.assert_close(g, grad, rtol=1e-8, atol=1e-13)
    v, want_hv = hvp
    (hv,) = torch.autograd.grad((g * v).sum(), leaf)
    torch.testing.assert_close(hv, want_hv, rtol=1e-7, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(
    n=st.integers(2, 12),
    m=st.integers(2, 12),
    d=st.integers(1, 4),
    offset=st.sampled_from([0.0, 1e2, 1e4]),
    spread=st.sampled_from([0.1, 1.0, 10.0]),
    estimator=st.sampled_from(["biased", "unbiased"]),
    path=st.sampled_from(["dense", "chunked", "engine"]),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_every_path_matches_the_reference(
    n: int,
    m: int,
    d: int,
    offset: float,
    spread: float,
    estimator: str,
    path: str,
    masked: bool,
    seed: int,
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, d, generator=g) * spread + offset).float()
    y = (torch.randn(m, d, generator=g) * spread * 1.2 + offset + 0.3 * spread).float()
    mask = torch.rand(n, generator=g) < 0.7 if masked else torch.ones(n, dtype=torch.bool)
    mask[:2] = True
    h = 2.0 * spread**2
    k = GaussianKernel(bandwidth=spread)
    mode = "chunked" if path == "chunked" else "dense"
    small = core.SMALL_ROWS
    core.SMALL_ROWS = 0 if path == "engine" else small
    try:
        x64 = x.double().requires_grad_(True)
        want = ref_mmd(x64[mask], y.double(), gaussian(h), estimator)
        (gw,) = torch.autograd.grad(want, x64, create_graph=True)
        v = torch.randn(n, d, generator=g, dtype=torch.float64)
        (hvw,) = torch.autograd.grad((gw * v).sum(), x64)
        for dtype in (torch.float32, torch.float64):
            xs = x.to(dtype).requires_grad_(True)
            got = mmd(
                xs, y.to(dtype), kernel=k, estimator=estimator, mode=mode, chunk_size=3, x_mask=mask
            )  # type: ignore[arg-type]
            assert_matches(got, xs, want, gw, (v, hvw))
    finally:
        core.SMALL_ROWS = small


@settings(max_examples=20, deadline=None)
@given(
    b=st.integers(2, 14),
    d=st.integers(1, 4),
    offset=st.sampled_from([0.0, 1e2, 1e4]),
    bandwidth=st.sampled_from([0.5, 1.0, 4.0]),
    estimator=st.sampled_from(["biased", "unbiased"]),
    path=st.sampled_from(["dense", "chunked", "engine", "per_latent"]),
    masked=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_prior_paths_match_the_reference(
    b: int,
    d: int,
    offset: float,
    bandwidth: float,
    estimator: str,
    path: str,
    masked: bool,
    seed: int,
) -> None:
    g = torch.Generator().manual_seed(seed)
    z = (torch.randn(b, d, generator=g) * 1.3 + offset + 0.2).float()
    mask = torch.rand(b, generator=g) < 0.7 if masked else torch.ones(b, dtype=torch.bool)
    mask[:2] = True
    h = 2.0 * bandwidth**2
    k = GaussianKernel(bandwidth=bandwidth)
    prior = torch.distributions.Normal(torch.tensor(offset), torch.tensor(1.0))
    z64 = z.double().requires_grad_(True)
    want = ref_prior_mmd(z64[mask], h, offset, 1.0, estimator)
    (gw,) = torch.autograd.grad(want, z64, create_graph=True)
    v = torch.randn(b, d, generator=g, dtype=torch.float64)
    (hvw,) = torch.autograd.grad((gw * v).sum(), z64)
    small = core.SMALL_ROWS
    core.SMALL_ROWS = 0 if path == "engine" else small
    try:
        for dtype in (torch.float32, torch.float64):
            zs = z.to(dtype).requires_grad_(True)
            if path == "per_latent":
                est = "analytic" if estimator == "biased" else "analytic-unbiased"
                latents = FactorizedLatents(zs, {"m": zs * 1.0}, {"m": mask})
                got = MMDPriorLoss(k, estimator=est, prior=prior).per_latent(latents)["m"]  # type: ignore[arg-type]
            else:
                mode = "chunked" if path == "chunked" else "dense"
                got = gaussian_prior_mmd(
                    zs,
                    offset,
                    1.0,
                    kernel=k,
                    estimator=estimator,
                    mode=mode,
                    chunk_size=3,
                    mask=mask,  # type: ignore[arg-type]
                )
            assert_matches(got, zs, want, gw, (v, hvw))
    finally:
        core.SMALL_ROWS = small
