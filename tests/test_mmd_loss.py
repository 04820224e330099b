from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import Independent, Normal, Uniform

import factorkit
from factorkit import (
    GaussianKernel,
    InverseMultiquadraticKernel,
    Kernel,
    MMDPriorLoss,
    gaussian_prior_mmd,
    mmd,
)
from factorkit._mmd_engine import SMALL_ROWS

Tensor = torch.Tensor
KernelFn = Callable[[Tensor, Tensor], Tensor]  # (r, pooled points) -> k(r)


# --- naive float64 reference, written from the definitions --------------------------------


def gaussian_ref(h: float) -> KernelFn:
    return lambda r, pool: torch.exp(-r / h)


def mfm_ref(r: Tensor, pool: Tensor) -> Tensor:
    d = pool.shape[1]
    return torch.exp(-r / d**2)


def imq_ref(r: Tensor, pool: Tensor) -> Tensor:
    d = pool.shape[1]
    scales = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
    return sum(2 * d * s / (2 * d * s + r) for s in scales)  # type: ignore[return-value]


def median_ref(r: Tensor, pool: Tensor) -> Tensor:
    rp = ((pool[:, None] - pool[None]) ** 2).sum(-1)
    i, j = torch.triu_indices(len(pool), len(pool), 1)
    pairs = rp[i, j].sort().values
    return torch.exp(-r / pairs[(len(pairs) - 1) // 2])


def multi_ref(r: Tensor, pool: Tensor) -> Tensor:
    c = 2 * pool.shape[1] / 6.0
    return torch.exp(-r / (2 * 0.5**2)) + torch.exp(-r / (2 * 2.0**2)) + c / (c + r)


KERNELS: dict[str, tuple[Kernel, KernelFn]] = {
    "mfm": (GaussianKernel(), mfm_ref),
    "bandwidth": (GaussianKernel(bandwidth=1.5), gaussian_ref(2 * 1.5**2)),
    "median": (GaussianKernel(rule="median"), median_ref),
    "imq": (InverseMultiquadraticKernel(), imq_ref),
    "sum": (
        GaussianKernel(bandwidth=[0.5, 2.0]) + InverseMultiquadraticKernel(scales=1.0 / 6.0),
        multi_ref,
    ),
}


def ref_mmd(x: Tensor, y: Tensor, kfn: KernelFn = mfm_ref, estimator: str = "biased") -> Tensor:
    x, y = x.double(), y.double()
    pool = torch.cat([x, y])

    def gram(a: Tensor, b: Tensor) -> Tensor:
        return kfn(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1), pool)

    kxx, kyy, kxy = gram(x, x), gram(y, y), gram(x, y)
    n, m = len(x), len(y)
    if estimator == "unbiased":
        xx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        yy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
        return xx + yy - 2 * kxy.mean()
    return kxx.mean() + kyy.mean() - 2 * kxy.mean()


def sample(n: int, m: int, d: int, seed: int, shift: float = 0.3) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randn(m, d, generator=g, dtype=torch.float64) * 1.2 + shift
    return x, y


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(KERNELS))
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize(("mode", "chunk"), [("dense", 1024), ("chunked", 7)])
def test_matches_naive_reference_float64(name: str, estimator: str, mode: str, chunk: int) -> None:
    kernel, kfn = KERNELS[name]
    x, y = sample(23, 31, 5, seed=1)
    got = mmd(x, y, kernel=kernel, estimator=estimator, mode=mode, chunk_size=chunk)  # type: ignore[arg-type]
    assert got.dtype == torch.float64
    want = ref_mmd(x, y, kfn, estimator)
    assert got.item() == pytest.approx(want.item(), rel=1e-10, abs=1e-15)


@pytest.mark.parametrize("name", list(KERNELS))
def test_float32_matches_float64_reference_to_1e_5(name: str) -> None:
    # Codes drawn from the prior: the MFM case, where MMD^2 is ~1e-4 and the three
    # kernel means agree to 4 digits, so float32 sums would lose most digits.
    kernel, kfn = KERNELS[name]
    x, y = sample(200, 180, 24, seed=2, shift=0.0)  # pooled < 512: exact median rule
    x32, y32 = x.float(), y.float()
    got = mmd(x32, y32, kernel=kernel)
    assert got.dtype == torch.float32
    want = ref_mmd(x32, y32, kfn)
    assert abs(got.item() - want.item()) <= 1e-5 * abs(want.item())


def test_default_is_the_mfm_reference_formula() -> None:
    x, y = sample(40, 40, 6, seed=3)
    d = x.shape[1]

    def k(a: Tensor, b: Tensor) -> Tensor:  # the reference code: mean over dims, / d again
        return torch.exp(-((a[:, None, :] - b[None, :, :]) ** 2).mean(2) / d)

    want = k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
    assert mmd(x, y).item() == pytest.approx(want.item(), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_mmd_of_a_sample_with_itself_is_zero(dtype: torch.dtype) -> None:
    x, _ = sample(64, 1, 8, seed=4)
    x = x.to(dtype)
    other = mmd(x, x + 0.5).item()
    tol = 1e-14 if dtype == torch.float64 else 1e-7
    assert abs(mmd(x, x).item()) <= tol * other


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_symmetric(estimator: str) -> None:
    x, y = sample(30, 45, 4, seed=5)
    a = mmd(x, y, estimator=estimator)  # type: ignore[arg-type]
    b = mmd(y, x, estimator=estimator)  # type: ignore[arg-type]
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_unbiased_averages_to_zero_biased_does_not() -> None:
    g = torch.Generator().manual_seed(6)
    k = GaussianKernel(bandwidth=1.0)
    draws = [torch.randn(2, 16, 3, generator=g, dtype=torch.float64) for _ in range(80)]
    u = torch.stack([mmd(a, b, kernel=k, estimator="unbiased") for a, b in draws])
    v = torch.stack([mmd(a, b, kernel=k) for a, b in draws])
    se = u.std() / len(u) ** 0.5
    assert abs(u.mean()) < 3 * se
    assert v.mean() > 10 * se  # the V-statistic's positive bias is clearly visible


def test_unequal_sizes_and_single_row_biased() -> None:
    x, y = sample(1, 9, 3, seed=7)
    assert mmd(x, y).item() == pytest.approx(ref_mmd(x, y).item(), rel=1e-12)


@pytest.mark.parametrize("chunk", [1, 5, 16, 100])
def test_chunked_equals_dense(chunk: int) -> None:
    x, y = sample(37, 29, 6, seed=8)
    x.requires_grad_(True)
    y.requires_grad_(True)
    dense = mmd(x, y, estimator="unbiased")
    (gx, gy) = torch.autograd.grad(dense, (x, y))
    chunked = mmd(x, y, estimator="unbiased", mode="chunked", chunk_size=chunk)
    (cx, cy) = torch.autograd.grad(chunked, (x, y))
    assert chunked.item() == pytest.approx(dense.item(), rel=1e-11)
    torch.testing.assert_close(cx, gx, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(cy, gy, rtol=1e-10, atol=1e-14)


def test_large_dense_blocks_match_chunked_float32() -> None:
    # Several dense row blocks (n > block rows) and the x/y boundary inside a block row.
    x, y = sample(1100, 1300, 4, seed=9)
    dense = mmd(x.float(), y.float(), kernel=GaussianKernel(bandwidth=1.0))
    want = mmd(x, y, kernel=GaussianKernel(bandwidth=1.0), mode="chunked", chunk_size=512)
    assert dense.item() == pytest.approx(want.item(), rel=1e-5)


# --- gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["mfm", "bandwidth", "imq", "sum"])
@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("mode", ["dense", "chunked"])
def test_gradcheck(name: str, estimator: str, mode: str) -> None:
    kernel, _ = KERNELS[name]
    x, y = sample(9, 7, 3, seed=10)
    x.requires_grad_(True)
    y.requires_grad_(True)

    def f(a: Tensor, b: Tensor) -> Tensor:
        return mmd(a, b, kernel=kernel, estimator=estimator, mode=mode, chunk_size=4)  # type: ignore[arg-type]

    assert torch.autograd.gradcheck(f, (x, y))


def test_gradient_matches_autograd_of_reference() -> None:
    x, y = sample(20, 25, 4, seed=11)
    x.requires_grad_(True)
    (g,) = torch.autograd.grad(mmd(x, y, estimator="unbiased"), x)
    (want,) = torch.autograd.grad(ref_mmd(x, y, estimator="unbiased"), x)
    torch.testing.assert_close(g, want, rtol=1e-9, atol=1e-15)


def test_float32_gradient_is_accurate() -> None:
    x, y = sample(300, 300, 16, seed=12, shift=0.0)
    x32 = x.float().requires_grad_(True)
    (g,) = torch.autograd.grad(mmd(x32, y.float()), x32)
    x64 = x.float().double().requires_grad_(True)
    (want,) = torch.autograd.grad(ref_mmd(x64, y.float().double()), x64)
    assert ((g.double() - want).norm() / want.norm()).item() < 1e-4


@pytest.mark.parametrize("kernel", [GaussianKernel(), InverseMultiquadraticKernel()])
def test_no_nan_gradient_when_points_coincide(kernel: Kernel) -> None:
    base = torch.randn(6, 3)
    x = torch.cat([base, base]).requires_grad_(True)  # duplicate rows, and x == y
    for estimator in ("biased", "unbiased"):
        (g,) = torch.autograd.grad(mmd(x, x.detach(), kernel=kernel, estimator=estimator), x)  # type: ignore[arg-type]
        assert torch.isfinite(g).all()


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_one_pass_engine_above_the_small_path_matches_reference(estimator: str) -> None:
    # Above SMALL_ROWS pooled rows the dense mode runs the one-pass engine instead.
    x, y = sample(SMALL_ROWS // 2 + 7, SMALL_ROWS // 2, 4, seed=21)
    x64, y64 = x.double().requires_grad_(True), y.double()
    got = mmd(x64, y64, estimator=estimator)  # type: ignore[arg-type]
    expected = ref_mmd(x64.detach().requires_grad_(True), y64, estimator=estimator)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
    (g,) = torch.autograd.grad(got, x64)
    xr = x64.detach().requires_grad_(True)
    (gr,) = torch.autograd.grad(ref_mmd(xr, y64, estimator=estimator), xr)
    torch.testing.assert_close(g, gr, rtol=1e-7, atol=1e-12)


# --- masks ---------------------------------------------------------------------------------


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
@pytest.mark.parametrize("mode", ["dense", "chunked", "rff"])
def test_mask_equals_loss_on_present_rows(estimator: str, mode: str) -> None:
    x, y = sample(12, 10, 3, seed=14)
    x[3] = float("nan")  # absent rows may hold anything
    mask = torch.tensor([1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 0], dtype=torch.bool)
    x.requires_grad_(True)
    kw = {"estimator": estimator, "mode": mode, "chunk_size": 3}
    masked = mmd(x, y, x_mask=mask, generator=torch.Generator().manual_seed(0), **kw)  # type: ignore[arg-type]
    (g,) = torch.autograd.grad(masked, x)
    sub = x.detach()[mask].requires_grad_(True)
    want = mmd(sub, y, generator=torch.Generator().manual_seed(0), **kw)  # type: ignore[arg-type]
    (gw,) = torch.autograd.grad(want, sub)
    assert masked.item() == pytest.approx(want.item(), rel=1e-10)
    torch.testing.assert_close(g[mask], gw, rtol=1e-9, atol=1e-15)
    assert (g[~mask] == 0).all()


def test_mask_on_both_samples() -> None:
    x, y = sample(8, 9, 2, seed=15)
    mx = torch.tensor([1, 0, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    my = torch.tensor([0, 1, 1, 1, 1, 0, 1, 1, 1], dtype=torch.bool)
    got = mmd(x, y, x_mask=mx, y_mask=my, estimator="unbiased")
    assert got.item() == pytest.approx(ref_mmd(x[mx], y[my], estimator="unbiased").item())


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_too_few_present_rows_give_zero_and_finite_gradient(estimator: str) -> None:
    x, y = sample(4, 4, 2, seed=16)
    x.requires_grad_(True)
    keep = 0 if estimator == "biased" else 1
    mask = torch.arange(4) < keep
    out = mmd(x, y, x_mask=mask, estimator=estimator)  # type: ignore[arg-type]
    (g,) = torch.autograd.grad(out, x)
    assert out.item() == 0.0
    assert (g == 0).all()


# --- analytic prior ------------------------------------------------------------------------


def mc_expectations(
    z: Tensor, h: float, loc: Tensor, scale: Tensor, n: int
) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(17)
    p = loc + scale * torch.randn(n, z.shape[1], generator=g, dtype=torch.float64)
    q = loc + scale * torch.randn(n, z.shape[1], generator=g, dtype=torch.float64)
    cross = torch.exp(-((z[:, None] - p[None]) ** 2).sum(-1) / h).mean(1)
    pp = torch.exp(-((p - q) ** 2).sum(-1) / h).mean()
    return cross, pp


@pytest.mark.parametrize("diagonal", [False, True])
def test_analytic_prior_terms_match_monte_carlo(diagonal: bool) -> None:
    d, h = 3, 4.0
    z, _ = sample(5, 1, d, seed=18)
    loc = torch.tensor([0.5, -1.0, 0.0], dtype=torch.float64) if diagonal else torch.zeros(d)
    scale = torch.tensor([0.5, 1.5, 1.0], dtype=torch.float64) if diagonal else torch.ones(d)
    cross, pp = mc_expectations(z, h, loc, scale, 200_000)
    kernel = GaussianKernel(bandwidth=(h / 2) ** 0.5)
    # With one z row the biased z-z term is k(0) = 1, leaving the two prior terms.
    for i in range(len(z)):
        got = gaussian_prior_mmd(z[i : i + 1], loc, scale, kernel=kernel)
        want = 1.0 - 2.0 * cross[i] + pp
        assert got.item() == pytest.approx(want.item(), abs=4e-3)
    # And tighter: the closed forms themselves (standard errors ~1e-3 at 2e5 samples).
    var2 = h + 2 * scale**2
    closed = torch.sqrt(h / var2).prod() * torch.exp(-((z - loc) ** 2 / var2).sum(1))
    torch.testing.assert_close(closed, cross, rtol=0, atol=3e-3)
    assert torch.sqrt(h / (h + 4 * scale**2)).prod().item() == pytest.approx(pp.item(), abs=2e-3)


@pytest.mark.parametrize("estimator", ["biased", "unbiased"])
def test_analytic_equals_sampled_in_the_large_sample_limit(estimator: str) -> None:
    z, _ = sample(50, 1, 4, seed=19, shift=0.0)
    z = z * 0.8 + 0.2
    k = GaussianKernel(bandwidth=1.5)
    g = torch.Generator().manual_seed(20)
    prior = torch.randn(6000, 4, generator=g, dtype=torch.float64)
    sampled = mmd(z, prior, kernel=k, estimator="unbiased")
    # The unbiased prior-prior term is the sampled counterpart of E k(p, p').
    got = gaussian_prior_mmd(z, kernel=k, estimator="unbiased")
    assert got.item() == pytest.approx(sampled.item(), abs=2e-3)
    if estimator == "biased":
        diff = gaussian_prior_mmd(z, kernel=k) - got
        # V minus U of the z-z term: (k(0) - mean off-diagonal k) / n.
        kzz = torch.exp(-((z[:, None] - z[None]) ** 2).sum(-1) / (2 * 1.5**2))
        off = (kzz.sum() - 50) / (50 * 49)
        assert diff.item() == pytest.approx(((1 - off) / 50).item(), rel=1e-9)


def test_analytic_gradcheck_and_mask() -> None:
    z, _ = sample(10, 1, 3, seed=21)
    z.requires_grad_(True)
    loc = torch.tensor([0.1, 0.0, -0.2], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: gaussian_prior_mmd(a, loc, 2.0), (z,))
    mask = torch.arange(10) % 3 != 0
    got = gaussian_prior_mmd(z, loc, 2.0, mask=mask, estimator="unbiased")
    want = gaussian_prior_mmd(z[mask], loc, 2.0, estimator="unbiased")
    assert got.item() == pytest.approx(want.item(), rel=1e-12)


def test_analytic_needs_a_gaussian_kernel_and_prior() -> None:
    with pytest.raises(ValueError, match="Gaussian kernel"):
        gaussian_prior_mmd(torch.randn(5, 2), kernel=InverseMultiquadraticKernel())
    with pytest.raises(ValueError, match="Normal"):
        MMDPriorLoss(estimator="analytic", prior=Uniform(0.0, 1.0))
    with pytest.raises(ValueError, match="loc"):
        gaussian_prior_mmd(torch.randn(5, 2), torch.zeros(3))


# --- random Fourier features ---------------------------------------------------------------


def test_rff_error_shrinks_with_features() -> None:
    x, y = sample(200, 200, 4, seed=22, shift=0.5)
    k = GaussianKernel(bandwidth=1.0)
    exact = mmd(x, y, kernel=k).item()

    def mean_abs_error(features: int) -> float:
        g = torch.Generator().manual_seed(23)
        errs = [
            abs(mmd(x, y, kernel=k, mode="rff", features=features, generator=g).item() - exact)
            for _ in range(10)
        ]
        return sum(errs) / len(errs)

    small, large = mean_abs_error(64), mean_abs_error(4096)
    assert large < small / 4  # 1/sqrt(F) predicts a factor 8
    assert large < 0.05 * exact


def test_rff_unbiased_diagonal_is_removed() -> None:
    x, y = sample(40, 40, 3, seed=24)
    k = GaussianKernel(bandwidth=1.0)
    g = torch.Generator().manual_seed(25)
    est = torch.stack(
        [mmd(x, y, kernel=k, mode="rff", estimator="unbiased", generator=g) for _ in range(32)]
    )
    exact = mmd(x, y, kernel=k, estimator="unbiased")
    assert est.mean().item() == pytest.approx(exact.item(), abs=3 * est.std().item() / 32**0.5)


def test_rff_needs_gaussian() -> None:
    with pytest.raises(ValueError, match="Gaussian"):
        mmd(torch.randn(4, 2), torch.randn(4, 2), kernel=InverseMultiquadraticKernel(), mode="rff")


# --- dtypes, autocast, compile -------------------------------------------------------------


def test_autocast_computes_in_float32() -> None:
    x, y = torch.randn(64, 8), torch.randn(48, 8)
    plain = mmd(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under = mmd(x, y)
        half = mmd(x.bfloat16(), y.bfloat16())
    assert under.dtype == torch.float32
    assert under.item() == plain.item()
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(mmd(x.bfloat16().float(), y.bfloat16().float()).item())


def test_bfloat16_input_gets_bfloat16_gradient() -> None:
    x = torch.randn(16, 4).bfloat16().requires_grad_(True)
    mmd(x, torch.randn(16, 4)).backward()
    assert x.grad is not None
    assert x.grad.dtype == torch.bfloat16


@pytest.mark.slow
def test_compiles_without_graph_breaks() -> None:
    torch._dynamo.reset()
    x = torch.randn(40, 6, requires_grad=True)
    y = torch.randn(30, 6)
    mask = torch.arange(40) % 4 != 0
    compiled = torch.compile(lambda a, b, m: mmd(a, b, x_mask=m), fullgraph=True)
    got = compiled(x, y, mask)
    (g,) = torch.autograd.grad(got, x)
    want = mmd(x, y, x_mask=mask)
    (gw,) = torch.autograd.grad(want, x)
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    torch.testing.assert_close(g, gw, rtol=1e-4, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 30),
    m=st.integers(2, 30),
    d=st.integers(1, 7),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    estimator=st.sampled_from(["biased", "unbiased"]),
    chunk=st.sampled_from([None, 1, 3, 8]),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(
    n: int, m: int, d: int, dtype: torch.dtype, estimator: str, chunk: int | None, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g).to(dtype)
    y = (torch.randn(m, d, generator=g) + 0.2).to(dtype)
    mode = "dense" if chunk is None else "chunked"
    got = mmd(x, y, estimator=estimator, mode=mode, chunk_size=chunk or 1)  # type: ignore[arg-type]
    want = ref_mmd(x, y, estimator=estimator).item()
    assert got.dtype == dtype
    # float32: 1e-5 relative, with a floor of 1e-6, about 10 ulp of the O(1) kernel
    # means whose difference the MMD is.
    tol = 1e-10 * abs(want) + 1e-15 if dtype == torch.float64 else 1e-5 * abs(want) + 1e-6
    assert abs(got.item() - want) <= tol
    if estimator == "biased":
        assert got.item() >= -tol


# --- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "y", "kw", "match"),
    [
        (torch.randn(5), torch.randn(5, 2), {}, r"x must be 2-D.*\(5,\)"),
        (torch.randn(5, 2), torch.randn(2, 5, 2), {}, r"y must be 2-D.*\(2, 5, 2\)"),
        (torch.randn(5, 2), torch.randn(5, 3), {}, r"same number of features.*\(5, 2\).*\(5, 3\)"),
        (torch.randn(1, 2), torch.randn(5, 2), {"estimator": "unbiased"}, r"at least 2 rows in x"),
        (torch.randn(0, 2), torch.randn(5, 2), {}, r"at least one row"),
        (torch.randn(4, 2), torch.randn(3, 2), {"estimator": "v"}, "estimator"),
        (torch.randn(4, 2), torch.randn(3, 2), {"mode": "keops"}, "mode"),
        (
            torch.randn(4, 2),
            torch.randn(3, 2),
            {"x_mask": torch.ones(3, dtype=torch.bool)},
            r"presence mask of x must be a bool tensor of shape \(4,\), got torch.bool of "
            r"shape \(3,\)",
        ),
        (
            torch.randn(4, 2),
            torch.randn(3, 2),
            {"x_mask": torch.ones(4)},
            r"presence mask of x .* got torch.float32",
        ),
        (torch.arange(8).view(4, 2), torch.randn(3, 2), {}, "floating-point"),
    ],
)
def test_bad_input_raises(x: Tensor, y: Tensor, kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mmd(x, y, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_is_reported(bad: float) -> None:
    y = torch.randn(6, 3)
    y[4, 1] = bad
    with pytest.raises(ValueError, match=r"y has non-finite values \(row 4\)"):
        mmd(torch.randn(5, 3), y)


# --- module --------------------------------------------------------------------------------


def fixed_sampler(p: Tensor) -> Callable[[int, int, torch.device, torch.dtype], Tensor]:
    return lambda n, d, device, dtype: p[:n, :d].to(device=device, dtype=dtype)


def test_module_default_draws_standard_normal_of_batch_size() -> None:
    z = torch.randn(32, 5)
    loss = MMDPriorLoss(generator=torch.Generator().manual_seed(3))
    p = torch.randn(32, 5, generator=torch.Generator().manual_seed(3))
    assert loss(z).item() == pytest.approx(mmd(z, p).item(), rel=1e-6)
    assert loss(z).item() != loss(z).item()  # redrawn at every call


@pytest.mark.parametrize(
    "prior",
    [
        Normal(torch.zeros(4), torch.ones(4)),
        Independent(Normal(torch.zeros(4), torch.ones(4)), 1),
        Normal(0.0, 1.0),
    ],
)
def test_module_accepts_distributions(prior: torch.distributions.Distribution) -> None:
    loss = MMDPriorLoss(prior=prior)
    z = torch.randn(16, 4, requires_grad=True)
    loss(z).backward()
    assert z.grad is not None
    assert loss.sample_prior(7, 4, z).shape == (7, 4)


def test_module_uses_sampler_and_mask() -> None:
    p = torch.randn(20, 3, dtype=torch.float64)
    loss = MMDPriorLoss(prior=fixed_sampler(p), estimator="unbiased")
    z = torch.randn(20, 3, dtype=torch.float64)
    mask = torch.arange(20) % 2 == 0
    assert loss(z, mask).item() == pytest.approx(
        mmd(z[mask], p, estimator="unbiased").item(), rel=1e-12
    )


def test_module_rejects_wrong_prior_shape() -> None:
    loss = MMDPriorLoss(prior=lambda n, d, device, dtype: torch.zeros(n, d + 1))
    with pytest.raises(ValueError, match=r"prior drew shape \(8, 4\), expected \(8, 3\)"):
        loss(torch.randn(8, 3))


def test_module_analytic_is_deterministic_and_closer_on_average() -> None:
    z = torch.randn(64, 4, generator=torch.Generator().manual_seed(26))
    analytic = MMDPriorLoss(estimator="analytic-unbiased")
    sampled = MMDPriorLoss(estimator="unbiased", generator=torch.Generator().manual_seed(27))
    a = torch.stack([analytic(z) for _ in range(3)])
    s = torch.stack([sampled(z) for _ in range(60)])
    assert (a == a[0]).all()
    assert s.std() > 0
    assert a[0].item() == pytest.approx(s.mean().item(), abs=4 * s.std().item() / 60**0.5)


def test_module_analytic_with_diagonal_prior() -> None:
    prior = Independent(Normal(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5])), 1)
    z = torch.randn(10, 2)
    loss = MMDPriorLoss(estimator="analytic", prior=prior)
    want = gaussian_prior_mmd(z, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.5]))
    assert loss(z).item() == want.item()


def test_module_state_dict_round_trip_and_exports() -> None:
    loss = MMDPriorLoss(estimator="analytic")
    loss.load_state_dict(MMDPriorLoss(estimator="analytic").state_dict())
    z = torch.randn(12, 3)
    assert loss(z).item() == MMDPriorLoss(estimator="analytic")(z).item()
    for name in ("mmd", "MMDPriorLoss", "gaussian_prior_mmd", "GaussianKernel"):
        assert name in factorkit.__all__
    assert "kernel=GaussianKernel" in repr(loss)


# --- MMDPriorLoss.per_latent: every latent of a model at once -------------------------------


def latents_for_test(batch: int, dtype: torch.dtype = torch.float64) -> factorkit.FactorizedLatents:
    g = torch.Generator().manual_seed(5)
    private = {
        "a": torch.randn(batch, 3, generator=g, dtype=dtype),
        "b": torch.randn(batch, 3, generator=g, dtype=dtype) + 0.5,
        "c": torch.randn(batch, 2, generator=g, dtype=dtype),
    }
    present = {
        "a": torch.ones(batch, dtype=torch.bool),
        "b": torch.arange(batch) % 3 != 0,
        "c": torch.arange(batch) % 2 == 0,
    }
    # Absent rows may hold anything: NaN must not reach values or gradients.
    private["b"][~present["b"]] = float("nan")
    shared = torch.randn(batch, 5, generator=g, dtype=dtype) * 1.5
    return factorkit.FactorizedLatents(shared, private, present)


@pytest.mark.parametrize(
    ("estimator", "kernel"),
    [
        (estimator, kernel)
        for estimator in ("biased", "unbiased", "analytic", "analytic-unbiased")
        for kernel in ("mfm", "median", "imq")
        # The analytic estimators need a Gaussian kernel.
        if not (kernel == "imq" and estimator.startswith("analytic"))
    ],
)
@pytest.mark.parametrize("batch", [12, SMALL_ROWS])
def test_per_latent_equals_one_call_per_latent(estimator: str, kernel: str, batch: int) -> None:
    # batch 12 takes the batched path; at SMALL_ROWS only the analytic estimators do.
    kernels = {
        "mfm": GaussianKernel(),
        "median": GaussianKernel(rule="median"),
        "imq": InverseMultiquadraticKernel(),
    }
    latents = latents_for_test(batch)
    codes = {name: z.clone().requires_grad_(True) for name, z in latents.items()}
    leaves = factorkit.FactorizedLatents(
        codes["shared"], {m: codes[m] for m in "abc"}, latents.present
    )

    def make() -> MMDPriorLoss:
        gen = torch.Generator().manual_seed(11)
        return MMDPriorLoss(kernels[kernel], estimator=estimator, generator=gen)  # type: ignore[arg-type]

    got = make().per_latent(leaves)
    loss = make()
    expected = {name: loss(z, mask=leaves.mask(name)) for name, z in leaves.items()}
    assert list(got) == ["shared", "a", "b", "c"]
    for name in got:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-9, atol=1e-12)
    grads = torch.autograd.grad(sum(got.values()), [*codes.values()])
    ref = torch.autograd.grad(sum(expected.values()), [*codes.values()])
    for g, r in zip(grads, ref, strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r, rtol=1e-7, atol=1e-12)


def test_per_latent_matches_the_float64_reference_in_float32() -> None:
    latents = latents_for_test(64, dtype=torch.float32)
    gen = torch.Generator().manual_seed(3)
    got = MMDPriorLoss(estimator="analytic", generator=gen).per_latent(latents)
    for name, z in latents.items():
        mask = latents.mask(name)
        z64 = z.double() if mask is None else z.double()[mask]
        expected = gaussian_prior_mmd(z64)
        assert got[name].dtype == torch.float32
        torch.testing.assert_close(got[name].double(), expected, rtol=1e-5, atol=1e-8)


def test_per_latent_names_the_latent_with_non_finite_values() -> None:
    latents = latents_for_test(16)
    latents.private["c"][0, 1] = float("inf")  # row 0 of "c" is present
    with pytest.raises(ValueError, match=r"latent 'c' has non-finite values \(row 0\)"):
        MMDPriorLoss().per_latent(latents)


def test_per_latent_gives_zero_for_a_latent_present_nowhere() -> None:
    latents = latents_for_test(16)
    assert latents.present is not None
    latents.present["a"] = torch.zeros(16, dtype=torch.bool)
    a = latents.private["a"].requires_grad_(True)
    out = MMDPriorLoss().per_latent(latents)
    assert out["a"].item() == 0.0
    (g,) = torch.autograd.grad(sum(out.values()), a)
    assert torch.equal(g, torch.zeros_like(g))


@pytest.mark.slow
def test_per_latent_compiles_without_graph_breaks() -> None:
    # The analytic estimator draws nothing, so compiled and eager runs must agree (the
    # sampled one draws its prior sample from a different random stream when compiled).
    torch._dynamo.reset()
    latents = latents_for_test(16, dtype=torch.float32)
    codes = [z.clone().requires_grad_(True) for _, z in latents.items()]
    loss = MMDPriorLoss(estimator="analytic")

    def total(shared: Tensor, a: Tensor, b: Tensor, c: Tensor) -> Tensor:
        z = factorkit.FactorizedLatents(shared, {"a": a, "b": b, "c": c}, latents.present)
        return sum(loss.per_latent(z).values())  # type: ignore[return-value]

    got = torch.compile(total, fullgraph=True)(*codes)
    grads = torch.autograd.grad(got, codes)
    want = total(*codes)
    expected = torch.autograd.grad(want, codes)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    for g, e in zip(grads, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-7)
