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


# ------------------------------------------------------------------- step masks (B, T)

SEQ_LENGTHS = torch.tensor([7, 3, 1, 5, 4, 2])


def steps_mask(lengths: torch.Tensor, steps: int = 7, front: bool = False) -> torch.Tensor:
    t = torch.arange(steps)
    return t >= steps - lengths[:, None] if front else t < lengths[:, None]


def sequences(seed: int = 0) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = {"seq": (7, 3), "vec": (4,)}
    x_hat = {m: torch.randn(6, *s, generator=gen) for m, s in shapes.items()}
    x = {m: torch.randn(6, *s, generator=gen) for m, s in shapes.items()}
    return x_hat, x


def naive_steps(x_hat: torch.Tensor, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Mean over the kept (sample, step) pairs of the mean squared error over features."""
    pairs = [
        ((x_hat[b, t].double() - x[b, t].double()) ** 2).mean()
        for b in range(x.shape[0])
        for t in range(x.shape[1])
        if keep[b, t]
    ]
    return torch.stack(pairs).mean() if pairs else torch.zeros((), dtype=torch.float64)


def test_step_masks_match_a_naive_float64_reference_with_presence_and_weights() -> None:
    x_hat, x = sequences()
    mask = steps_mask(SEQ_LENGTHS, front=True)
    present = {"seq": torch.tensor([True, True, False, True, False, True]), "vec": PRESENT["fou"]}
    loss, terms = reconstruction_loss(
        x_hat, x, present, mask={"seq": mask}, weights={"seq": 0.5}, per_modality=True
    )
    seq = naive_steps(x_hat["seq"], x["seq"], mask & present["seq"][:, None])
    vec = naive({"vec": x_hat["vec"]}, {"vec": x["vec"]}, {"vec": present["vec"]}, {})
    torch.testing.assert_close(terms["seq"], seq.float())
    torch.testing.assert_close(terms["vec"], vec.float())
    torch.testing.assert_close(loss, (0.5 * seq + vec).float())
    # A step mask alone: the valid steps of every sample; the module form agrees.
    alone = reconstruction_loss({"seq": x_hat["seq"]}, {"seq": x["seq"]}, mask=mask)
    torch.testing.assert_close(alone, naive_steps(x_hat["seq"], x["seq"], mask).float())
    module = ReconstructionLoss()({"seq": x_hat["seq"]}, {"seq": x["seq"]}, mask=mask)
    assert torch.equal(module, alone)
    # All steps valid: the plain MSE.
    every = torch.ones(6, 7, dtype=torch.bool)
    torch.testing.assert_close(
        reconstruction_loss({"seq": x_hat["seq"]}, {"seq": x["seq"]}, mask=every),
        F.mse_loss(x_hat["seq"], x["seq"]),
    )


def test_one_step_mask_tensor_applies_to_every_sequence_modality() -> None:
    gen = torch.Generator().manual_seed(3)
    x_hat = {m: torch.randn(6, 7, d, generator=gen) for m, d in (("a", 2), ("b", 5))}
    x = {m: torch.randn_like(t) for m, t in x_hat.items()}
    mask = steps_mask(SEQ_LENGTHS)
    assert torch.equal(
        reconstruction_loss(x_hat, x, mask=mask),
        reconstruction_loss(x_hat, x, mask={"a": mask, "b": mask}),
    )
    torch.testing.assert_close(
        reconstruction_loss(x_hat, x, mask=mask),
        sum(naive_steps(x_hat[m], x[m], mask) for m in x).float(),
    )


def test_padded_steps_reach_neither_value_nor_gradient() -> None:
    x_hat, x = sequences(1)
    x_hat, x = {"seq": x_hat["seq"]}, {"seq": x["seq"]}
    mask = steps_mask(SEQ_LENGTHS)
    present = {"seq": torch.tensor([True, True, True, False, True, True])}
    leaf = x_hat["seq"].clone().requires_grad_()
    clean = reconstruction_loss({"seq": leaf}, x, present, mask=mask)
    (grad,) = torch.autograd.grad(clean, leaf)
    assert (grad[~mask] == 0).all() and (grad[3] == 0).all()
    poisoned_x = x["seq"].masked_fill(~mask[:, :, None], float("nan"))
    poisoned_x[3] = float("nan")  # an absent sample
    poisoned_hat = leaf.detach().masked_fill(~mask[:, :, None], float("inf")).requires_grad_()
    loss = reconstruction_loss({"seq": poisoned_hat}, {"seq": poisoned_x}, present, mask=mask)
    (poisoned_grad,) = torch.autograd.grad(loss, poisoned_hat)
    assert torch.equal(loss, clean.detach())
    assert torch.equal(poisoned_grad, grad)


def test_non_finite_valid_step_raises_naming_the_modality() -> None:
    # The removed sequence_mse returned NaN here; the one loss raises, as for rows.
    x_hat, x = sequences(2)
    mask = steps_mask(SEQ_LENGTHS)
    x["seq"][1, 2, 0] = float("nan")  # step 2 of sample 1 is valid (length 3)
    with pytest.raises(
        ValueError,
        match=r"^modality 'seq': 1 non-finite value in the present rows of the target "
        r"\(shape \(6, 7, 3\)\)$",
    ):
        reconstruction_loss(x_hat, x, mask={"seq": mask})
    x["seq"][1, 2, 0] = 0.0
    x["seq"][1, 3, 0] = float("nan")  # step 3 of sample 1 is padding: ignored
    assert reconstruction_loss(x_hat, x, mask={"seq": mask}).isfinite()


def test_bad_step_masks_name_the_modality_and_shapes() -> None:
    x_hat, x = sequences()
    mask = steps_mask(SEQ_LENGTHS)
    with pytest.raises(
        ValueError, match=r"modality 'seq': step mask must be bool, got torch.int64"
    ):
        reconstruction_loss(x_hat, x, mask={"seq": mask.long()})
    with pytest.raises(
        ValueError,
        match=r"modality 'seq': a step mask \(B, T\) needs .* got a mask of shape \(6, 6\) for a "
        r"target of shape \(6, 7, 3\) \(expected mask shape: \(6, 7\)\)",
    ):
        reconstruction_loss(x_hat, x, mask={"seq": mask[:, :6]})
    with pytest.raises(
        ValueError,
        match=r"modality 'vec': a step mask \(B, T\) needs a target of shape \(B, T, \.\.\.\); "
        r"got a mask of shape \(6, 7\) for a target of shape \(6, 4\)",
    ):
        reconstruction_loss(x_hat, x, mask=mask)
    with pytest.raises(ValueError, match=r"mask: unknown \['sqe'\]; modalities are"):
        reconstruction_loss(x_hat, x, mask={"sqe": mask})
