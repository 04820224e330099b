import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from factorkit import (
    FactorGenerators,
    FactorizedHead,
    FactorizedLatents,
    ModalityDecoders,
    Predictor,
    VectorDecoder,
)
from factorkit.probes import (
    content_transfer,
    linear_probe_accuracy,
    linear_probe_r2,
    recombine_latents,
    style_transfer,
    transfer_grid,
)
from factorkit.testing import make_synthetic_views


def split_rows(n: int, test_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_test = round(n * test_fraction)
    return order[n_test:], order[:n_test]


def test_r2_is_one_for_a_linear_target_and_zero_for_noise() -> None:
    x = torch.randn(2000, 5)
    linear = x @ torch.randn(5, 3) + 2.0
    assert linear_probe_r2(x, linear, ridge=1e-8).item() > 1 - 1e-9
    noise = torch.randn(2000, 3)
    assert abs(linear_probe_r2(x, noise).item()) < 0.05
    per_column = linear_probe_r2(x, torch.cat([linear[:, :1], noise[:, :1]], 1), reduction="none")
    assert per_column.shape == (2,) and per_column[0] > 0.999 and abs(per_column[1]) < 0.05
    assert linear_probe_r2(x, linear[:, 0], reduction="none").shape == ()


def test_r2_matches_least_squares_in_numpy() -> None:
    x = torch.randn(120, 4)
    y = torch.tanh(x @ torch.randn(4, 2)) + 0.3 * torch.randn(120, 2)
    train, test = split_rows(120, 0.25, seed=3)
    xn, yn = x.double().numpy(), y.double().numpy()
    design = np.c_[xn[train.numpy()], np.ones(len(train))]
    coef, *_ = np.linalg.lstsq(design, yn[train.numpy()], rcond=None)
    pred = np.c_[xn[test.numpy()], np.ones(len(test))] @ coef
    yt = yn[test.numpy()]
    expected = 1 - ((yt - pred) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0)
    got = linear_probe_r2(x, y, ridge=0.0, seed=3, reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    mask = torch.zeros(120, dtype=torch.bool)
    mask[train] = True
    torch.testing.assert_close(linear_probe_r2(x, y, ridge=0.0, train=mask, reduction="none"), got)


def test_moderate_ridge_matches_the_augmented_least_squares_problem() -> None:
    """(1/n)||Y - b - XW||^2 + ridge ||W||^2 is least squares on [X; sqrt(n ridge) I]."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(60, 3, generator=gen) * torch.tensor([1.0, 5.0, 0.2]) + 3.0
    y = x @ torch.tensor([[1.0, 0.0], [0.3, -1.0], [2.0, 4.0]]) + 7.0
    y = y + 0.5 * torch.randn(60, 2, generator=gen)
    mask = torch.arange(60) % 4 != 0
    ridge = 0.3
    xn, yn, m = x.double().numpy(), y.double().numpy(), mask.numpy()
    mean, std = xn[m].mean(0), xn[m].std(0, ddof=1)
    xs_train, xs_test = (xn[m] - mean) / std, (xn[~m] - mean) / std
    n = int(m.sum())
    design = np.r_[xs_train, np.sqrt(n * ridge) * np.eye(3)]
    centred = np.r_[yn[m] - yn[m].mean(0), np.zeros((3, 2))]
    w, *_ = np.linalg.lstsq(design, centred, rcond=None)
    pred = xs_test @ w + yn[m].mean(0)
    yt = yn[~m]
    expected = 1 - ((yt - pred) ** 2).sum(0) / ((yt - yt.mean(0)) ** 2).sum(0)
    assert expected.min() < 0.95  # the penalty matters at this ridge
    got = linear_probe_r2(x, y, ridge=ridge, train=mask, reduction="none")
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_huge_ridge_predicts_the_training_mean() -> None:
    x = torch.randn(200, 3)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 1.0
    assert linear_probe_r2(x, y, ridge=1e-6).item() > 0.999
    train, test = split_rows(200, 0.25, seed=0)
    yt = y[test].double()
    expected = 1 - (yt - y[train].double().mean()).square().sum() / (yt - yt.mean()).square().sum()
    torch.testing.assert_close(linear_probe_r2(x, y, ridge=1e12), expected, rtol=1e-6, atol=1e-9)


def test_accuracy_matches_scikit_learn_and_is_deterministic() -> None:
    linear_model = pytest.importorskip(
        "sklearn.linear_model", reason="needs scikit-learn: pip install -e '.[examples]'"
    )
    x = torch.randn(300, 4)
    labels = (x @ torch.randn(4, 3) + 0.7 * torch.randn(300, 3)).argmax(1)
    train, test = split_rows(300, 0.25, seed=0)
    mean, std = x[train].double().mean(0), x[train].double().std(0)
    xs = ((x.double() - mean) / std).numpy()
    wd = 1e-2
    ref = linear_model.LogisticRegression(C=1 / (wd * len(train)), tol=1e-10, max_iter=10_000)
    ref.fit(xs[train.numpy()], labels[train].numpy())
    expected = (ref.predict(xs[test.numpy()]) == labels[test].numpy()).mean()
    got = linear_probe_accuracy(x, labels, weight_decay=wd)
    assert got.item() == pytest.approx(expected, abs=1e-12)
    assert torch.equal(got, linear_probe_accuracy(x, labels, weight_decay=wd))


def test_accuracy_separable_vs_random_labels() -> None:
    x = torch.randn(400, 3)
    separable = (x @ torch.randn(3, 4)).argmax(1)
    assert linear_probe_accuracy(x, separable).item() >= 0.97
    random = torch.randint(0, 2, (400,))
    assert linear_probe_accuracy(x, random).item() < 0.62
    other_split = linear_probe_accuracy(x, separable, seed=1)
    assert other_split.item() >= 0.97


def test_probe_errors() -> None:
    x = torch.randn(10, 2)
    with pytest.raises(ValueError, match=r"codes have 10 rows, the targets 9"):
        linear_probe_r2(x, torch.randn(9))
    with pytest.raises(ValueError, match=r"test_fraction must be in \(0, 1\)"):
        linear_probe_r2(x, torch.randn(10), test_fraction=1.0)
    with pytest.raises(ValueError, match="labels must be integers"):
        linear_probe_accuracy(x, torch.rand(10))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 2\)"):
        linear_probe_accuracy(x, torch.arange(10) % 3, num_classes=2)
    with pytest.raises(ValueError, match="non-finite"):
        linear_probe_r2(torch.full((10, 2), float("nan")), torch.randn(10))
    with pytest.raises(ValueError, match=r"train must be a bool mask of shape \(10,\)"):
        linear_probe_r2(x, torch.randn(10), train=torch.ones(10))


def small_mfm() -> tuple[FactorGenerators, ModalityDecoders, FactorizedLatents]:
    head = FactorizedHead({"a": 4, "b": 3}, shared_size=3, private_size={"a": 2, "b": 1})
    gens = FactorGenerators.for_head(head, factor_size=5).double()
    decs = ModalityDecoders({"a": VectorDecoder(5, 5, 4), "b": VectorDecoder(5, 5, 3)}).double()
    z = head.double()(
        {"a": torch.randn(6, 4, dtype=torch.float64), "b": torch.randn(6, 3, dtype=torch.float64)}
    )
    return gens, decs, z


def test_style_and_content_transfer_swap_the_right_codes() -> None:
    gens, decs, z = small_mfm()
    source = torch.tensor([3, 0, 5, 1, 1, 2])
    style = style_transfer(gens, decs, z, source)
    content = content_transfer(gens, decs, z, source)
    f = gens(z)
    for i, j in enumerate(source.tolist()):
        for m in ("a", "b"):
            dec = functools.partial(decs.decode, m)
            direct_style = dec(f.private[m][j : j + 1], f.shared[i : i + 1])[0]
            direct_content = dec(f.private[m][i : i + 1], f.shared[j : j + 1])[0]
            torch.testing.assert_close(style[m][i], direct_style)
            torch.testing.assert_close(content[m][i], direct_content)
    plain = decs(f)
    identity = torch.arange(6)
    for m in ("a", "b"):
        torch.testing.assert_close(style_transfer(gens, decs, z, identity)[m], plain[m])
        torch.testing.assert_close(content_transfer(None, decs, f, identity)[m], plain[m])


def test_transfer_grid_cells() -> None:
    gens, decs, z = small_mfm()
    content, style = torch.tensor([4, 1]), torch.tensor([0, 2, 5])
    grid = transfer_grid(gens, decs, z, content=content, style=style)
    f = gens(z)
    assert grid["a"].shape == (2, 3, 4) and grid["b"].shape == (2, 3, 3)
    for r, i in enumerate(content.tolist()):
        for c, j in enumerate(style.tolist()):
            direct = decs.decode("b", f.private["b"][j : j + 1], f.shared[i : i + 1])[0]
            torch.testing.assert_close(grid["b"][r, c], direct)


def test_recombine_follows_presence_and_checks_indices() -> None:
    present = {
        "a": torch.tensor([1, 0, 1], dtype=torch.bool),
        "b": torch.tensor([1, 1, 0], dtype=torch.bool),
    }
    z = FactorizedLatents(
        torch.randn(3, 2), {"a": torch.randn(3, 1), "b": torch.randn(3, 1)}, present
    )
    mixed = recombine_latents(
        z, shared_from=torch.tensor([0, 2]), private_from=torch.tensor([1, 2])
    )
    assert mixed.present is not None
    assert mixed.present["a"].tolist() == [False, True] and mixed.present["b"].tolist() == [
        True,
        False,
    ]
    torch.testing.assert_close(mixed.shared, z.shared[[0, 2]])
    torch.testing.assert_close(mixed.private["a"], z.private["a"][[1, 2]])
    with pytest.raises(ValueError, match=r"private_from must index samples in \[0, 3\)"):
        recombine_latents(z, shared_from=torch.tensor([0]), private_from=torch.tensor([3]))
    with pytest.raises(ValueError, match="same length"):
        recombine_latents(z, shared_from=torch.tensor([0, 1]), private_from=torch.tensor([1]))
    nobody = {
        "a": torch.tensor([1, 0, 1], dtype=torch.bool),
        "b": torch.tensor([1, 0, 0], dtype=torch.bool),
    }
    z_none = FactorizedLatents(z.shared, z.private, nobody)
    with pytest.raises(ValueError, match="without any observed modality"):
        recombine_latents(z_none, shared_from=torch.tensor([1]), private_from=torch.tensor([0]))


def test_recombine_without_a_mask_keeps_no_mask() -> None:
    z = FactorizedLatents(
        torch.arange(6.0).reshape(3, 2), {"a": torch.tensor([[7.0], [8.0], [9.0]])}
    )
    mixed = recombine_latents(
        z, shared_from=torch.tensor([2, 0]), private_from=torch.tensor([1, 1])
    )
    assert mixed.present is None
    assert mixed.shared.tolist() == [[4.0, 5.0], [0.0, 1.0]]
    assert mixed.private["a"].tolist() == [[8.0], [8.0]]


@pytest.mark.parametrize(
    ("index", "shown"),
    [
        (torch.tensor([[0, 1]]), r"torch.int64 \(1, 2\)"),
        (torch.tensor([0.0, 1.0]), r"torch.float32 \(2,\)"),
        (torch.tensor([True, False]), r"torch.bool \(2,\)"),
    ],
)
def test_row_indices_must_be_1d_integers_and_errors_name_the_argument(
    index: Tensor, shown: str
) -> None:
    gens, decs, z = small_mfm()
    ok = torch.tensor([0, 1])
    calls = {
        "shared_from": lambda: recombine_latents(z, shared_from=index, private_from=ok),
        "private_from": lambda: recombine_latents(z, shared_from=ok, private_from=index),
        "content": lambda: transfer_grid(gens, decs, z, content=index, style=ok),
        "style": lambda: transfer_grid(gens, decs, z, content=ok, style=index),
    }
    for what, call in calls.items():
        with pytest.raises(ValueError, match=rf"^{what} must be a 1-D integer tensor, got {shown}"):
            call()


def test_transfer_grid_range_errors_name_the_argument() -> None:
    gens, decs, z = small_mfm()
    with pytest.raises(ValueError, match=r"^content must index samples in \[0, 6\), got \[0, 6\]"):
        transfer_grid(gens, decs, z, content=torch.tensor([0, 6]), style=torch.tensor([0]))
    with pytest.raises(ValueError, match=r"^style must index samples in \[0, 6\), got \[-1, -1\]"):
        transfer_grid(gens, decs, z, content=torch.tensor([0]), style=torch.tensor([-1]))


def gaussian_mmd(z: Tensor) -> Tensor:
    """The MFM reference MMD^2 to N(0, I): kernel exp(-||x - y||^2 / d^2), V-statistic."""
    prior = torch.randn_like(z)
    scale = z.shape[1] ** 2

    def k(x: Tensor, y: Tensor) -> Tensor:
        return torch.exp(-torch.cdist(x, y).square() / scale).mean()

    return k(z, z) + k(prior, prior) - 2 * k(z, prior)


def factorization_probes(seed: int) -> dict[str, float]:
    """Train a small MFM on synthetic views and probe its codes on fresh samples.

    World: 2 shared factors (the label is the argmax of a linear map of all of them),
    2 private factors per view, views of 24 and 32 features, tanh mixing, noise 0.1.
    Codes are sized like the true factors (shared 2, private 2): the private codes' size
    is their information bottleneck (with private_size=4 they also copy the shared
    factors and reach the shared code's label accuracy).
    """
    torch.manual_seed(seed)
    sizes = {"a": 24, "b": 32}
    train = make_synthetic_views(2000, view_sizes=sizes, seed=seed)
    test = make_synthetic_views(1000, view_sizes=sizes, seed=seed, sample_seed=seed + 100)
    encoders = nn.ModuleDict(
        {
            m: nn.Sequential(nn.Linear(d, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU())
            for m, d in sizes.items()
        }
    )
    head = FactorizedHead({"a": 32, "b": 32}, shared_size=2, private_size=2)
    gens = FactorGenerators.for_head(head, factor_size=16)
    decs = ModalityDecoders({m: VectorDecoder(16, 16, d) for m, d in sizes.items()})
    predictor = Predictor(16, 3)
    model = nn.ModuleList([encoders, head, gens, decs, predictor])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.Generator().manual_seed(seed)
    for _ in range(30):
        for rows in torch.randperm(2000, generator=order).split(128):
            x = {m: v[rows] for m, v in train.views.items()}
            z = head({m: encoders[m](x[m]) for m in sizes})
            f = gens(z)
            recon = decs(f)
            loss = F.cross_entropy(predictor(f.shared), train.labels[rows])
            loss = loss + 5.0 * sum(F.mse_loss(recon[m], x[m]) for m in sizes)
            loss = loss + 1.0 * sum(gaussian_mmd(code) for _, code in z.items())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        z = head({m: encoders[m](v) for m, v in test.views.items()})
    out = {
        "shared->s R2": linear_probe_r2(z.shared, test.shared).item(),
        "shared->y acc": linear_probe_accuracy(z.shared, test.labels).item(),
    }
    for m in sizes:
        out[f"{m}->p_{m} R2"] = linear_probe_r2(z.private[m], test.private[m]).item()
        out[f"shared->p_{m} R2"] = linear_probe_r2(z.shared, test.private[m]).item()
        out[f"{m}->y acc"] = linear_probe_accuracy(z.private[m], test.labels).item()
    return out


def test_trained_mfm_factorizes_synthetic_views() -> None:
    """The shared code holds the shared factors and the label, each private code its own."""
    probes = factorization_probes(seed=0)
    assert probes["shared->s R2"] >= 0.9, probes
    assert probes["shared->y acc"] >= 0.9, probes
    for m in ("a", "b"):
        assert probes[f"{m}->p_{m} R2"] >= probes[f"shared->p_{m} R2"] + 0.3, probes
        assert probes[f"{m}->y acc"] <= probes["shared->y acc"] - 0.2, probes


def test_logistic_probe_weight_decay_shrinks_to_the_majority_class() -> None:
    """Separable 1-D data with 3:1 class priors: a light penalty separates the test rows
    perfectly; a penalty of 1e6 leaves W ~ 0, so every test row gets the class favoured
    by the (unpenalised) bias, the training majority, and the accuracy is that class's
    share of the test rows (a dropped or sign-flipped penalty would separate again)."""
    g = torch.Generator().manual_seed(0)
    labels = (torch.arange(80) % 4 == 0).long()  # 20 ones, 60 zeros
    codes = (labels.double() * 4.0 - 2.0 + 0.3 * torch.randn(80, generator=g, dtype=torch.float64))[
        :, None
    ]
    train = torch.arange(80) < 60
    majority_share = float((labels[~train] == 0).double().mean())
    light = linear_probe_accuracy(codes, labels, train=train, weight_decay=1e-4)
    heavy = linear_probe_accuracy(codes, labels, train=train, weight_decay=1e6)
    assert float(light) == 1.0
    assert float(heavy) == pytest.approx(majority_share)
    assert majority_share == 0.75
