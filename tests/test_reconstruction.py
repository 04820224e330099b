import pytest
import torch
import torch.nn.functional as F

from factorkit import ReconstructionLoss, reconstruction_loss

SHAPES = {"fou": (5,), "pix": (1, 4, 3)}


def pair(batch: int = 6) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    x_hat = {m: torch.randn(batch, *s) for m, s in SHAPES.items()}
    x = {m: torch.randn(batch, *s) for m, s in SHAPES.items()}
    return x_hat, x


PRESENT = {
    "fou": torch.tensor([True, False, True, True, False, True]),
    "pix": torch.tensor([False, False, True, False, False, False]),
}


def naive(
    x_hat: dict[str, torch.Tensor],
    x: dict[str, torch.Tensor],
    present: dict[str, torch.Tensor],
    weights: dict[str, float],
) -> torch.Tensor:
    total = torch.zeros((), dtype=torch.float64)
    for m in x:
        rows = [i for i in range(x[m].shape[0]) if present[m][i]]
        if not rows:
            continue
        errors = [((x_hat[m][i].double() - x[m][i].double()) ** 2).mean() for i in rows]
        total += weights.get(m, 1.0) * sum(errors) / len(rows)
    return total


def test_matches_a_naive_float64_reference_for_vectors_and_images() -> None:
    x_hat, x = pair()
    weights = {"pix": 0.25}
    loss, terms = reconstruction_loss(x_hat, x, PRESENT, weights=weights, per_modality=True)
    torch.testing.assert_close(loss.double(), naive(x_hat, x, PRESENT, weights))
    # The per-modality terms are unweighted; a single present row is its own mean.
    torch.testing.assert_close(terms["pix"], (x_hat["pix"][2] - x["pix"][2]).square().mean())
    torch.testing.assert_close(loss, terms["fou"] + 0.25 * terms["pix"])
    assert torch.equal(ReconstructionLoss(weights)(x_hat, x, PRESENT), loss)


def test_without_a_mask_it_is_the_plain_mse_sum() -> None:
    x_hat, x = pair()
    expected = F.mse_loss(x_hat["fou"], x["fou"]) + F.mse_loss(x_hat["pix"], x["pix"])
    torch.testing.assert_close(reconstruction_loss(x_hat, x), expected)
    everyone = {m: torch.ones(6, dtype=torch.bool) for m in SHAPES}
    torch.testing.assert_close(reconstruction_loss(x_hat, x, everyone), expected)


def test_nan_in_absent_targets_reaches_neither_value_nor_gradient() -> None:
    x_hat, x = pair()
    clean = reconstruction_loss(x_hat, x, PRESENT)
    poisoned = {
        m: torch.where(PRESENT[m].view(-1, *[1] * len(s)), x[m], float("nan"))
        for m, s in SHAPES.items()
    }
    poisoned["pix"][0, 0, 0, 0] = float("inf")  # absent row too
    leaves = {m: t.clone().requires_grad_() for m, t in x_hat.items()}
    loss = reconstruction_loss(leaves, poisoned, PRESENT)
    assert torch.equal(loss, clean)
    loss.backward()
    for m, leaf in leaves.items():
        assert leaf.grad is not None and torch.isfinite(leaf.grad).all()
        absent = leaf.grad[~PRESENT[m]]
        assert torch.equal(absent, torch.zeros_like(absent)), m
        assert leaf.grad[PRESENT[m]].abs().sum() > 0, m


def test_a_modality_present_nowhere_contributes_zero() -> None:
    x_hat, x = pair()
    nobody = {"fou": torch.zeros(6, dtype=torch.bool), "pix": PRESENT["pix"]}
    leaves = {m: t.clone().requires_grad_() for m, t in x_hat.items()}
    loss, terms = reconstruction_loss(leaves, x, nobody, per_modality=True)
    assert terms["fou"] == 0.0
    torch.testing.assert_close(loss, terms["pix"])
    loss.backward()
    assert leaves["fou"].grad is not None
    assert torch.equal(leaves["fou"].grad, torch.zeros(6, 5))


def test_each_modality_is_normalised_by_its_own_present_count() -> None:
    # Doubling the batch with absent copies of NaN leaves the loss unchanged.
    x_hat, x = pair()
    big_hat = {m: torch.cat([t, torch.full_like(t, float("nan"))]) for m, t in x_hat.items()}
    big = {m: torch.cat([t, t]) for m, t in x.items()}
    big_present = {m: torch.cat([p, torch.zeros(6, dtype=torch.bool)]) for m, p in PRESENT.items()}
    torch.testing.assert_close(
        reconstruction_loss(big_hat, big, big_present), reconstruction_loss(x_hat, x, PRESENT)
    )


def test_low_precision_inputs_are_summed_in_float32() -> None:
    x_hat, x = pair()
    half = {m: t.bfloat16() for m, t in x_hat.items()}
    loss = reconstruction_loss(half, {m: t.bfloat16() for m, t in x.items()}, PRESENT)
    assert loss.dtype == torch.float32
    reference = reconstruction_loss(
        {m: t.float() for m, t in half.items()},
        {m: t.bfloat16().float() for m, t in x.items()},
        PRESENT,
    )
    torch.testing.assert_close(loss, reference)


def test_bad_input_names_modality_and_shapes() -> None:
    x_hat, x = pair()
    with pytest.raises(ValueError, match=r"modality 'pix': reconstruction of shape \(6, 1, 4, 4\)"):
        reconstruction_loss(dict(x_hat, pix=torch.randn(6, 1, 4, 4)), x)
    with pytest.raises(ValueError, match=r"missing \['pix'\]"):
        reconstruction_loss({"fou": x_hat["fou"]}, x)
    with pytest.raises(ValueError, match=r"weights: unknown \['fuo'\]"):
        reconstruction_loss(x_hat, x, weights={"fuo": 1.0})
    with pytest.raises(ValueError, match=r"modality 'pix': batch size 5 differs"):
        reconstruction_loss(
            dict(x_hat, pix=torch.randn(5, 1, 4, 3)), dict(x, pix=torch.randn(5, 1, 4, 3))
        )
    with pytest.raises(ValueError, match=r"modality 'fou': expected presence mask of shape"):
        reconstruction_loss(x_hat, x, dict(PRESENT, fou=torch.ones(5, dtype=torch.bool)))


def test_non_finite_present_values_name_the_modality_the_role_and_the_count() -> None:
    x_hat, x = pair()
    x["fou"][0, :2] = float("nan")  # row 0 is present for fou
    x["fou"][1] = float("nan")  # row 1 is absent: not counted
    with pytest.raises(
        ValueError,
        match=r"^modality 'fou': 2 non-finite values in the present rows of the target "
        r"\(shape \(6, 5\)\)$",
    ):
        reconstruction_loss(x_hat, x, PRESENT)
    x_hat["pix"][2, 0, 1, 1] = float("inf")
    with pytest.raises(
        ValueError,
        match=r"modality 'fou': 2 non-finite values in the present rows of the target .*; "
        r"modality 'pix': 1 non-finite value in the present rows of the reconstruction "
        r"\(shape \(6, 1, 4, 3\)\)",
    ):
        ReconstructionLoss()(x_hat, x, PRESENT)
    # Without a mask every row counts: 2 + 5 values of fou.
    with pytest.raises(ValueError, match=r"modality 'fou': 7 non-finite values"):
        reconstruction_loss(x_hat, x)


def test_check_finite_false_lets_nan_through_as_before() -> None:
    x_hat, x = pair()
    x["fou"][0, 0] = float("nan")
    assert reconstruction_loss(x_hat, x, PRESENT, check_finite=False).isnan()
    assert ReconstructionLoss(check_finite=False)(x_hat, x, PRESENT).isnan()
    # The clean rows give the same value with and without the check.
    x["fou"][0, 0] = 0.0
    assert torch.equal(
        reconstruction_loss(x_hat, x, PRESENT, check_finite=False),
        reconstruction_loss(x_hat, x, PRESENT),
    )
