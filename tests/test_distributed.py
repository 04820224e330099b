"""all_gather_with_grad: two gloo processes against one process on the concatenated batch.

The children only compute and save; every assertion runs here, so a failing value is
reported by pytest, and an exception in a child surfaces (with its traceback) as the
error of the ``two_ranks`` fixture.
"""

from __future__ import annotations

import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

from factorkit import MMDPriorLoss, mmd
from factorkit.distributed import all_gather_with_grad, is_distributed, world_info

WORLD = 2
# Uneven on purpose: rank 0 holds rows 0:5, rank 1 rows 5:8.
SLICES = [(0, 5), (5, 8)]
IN_SIZE, OUT_SIZE, N_REF = 4, 3, 6
MASK = torch.tensor([True, True, False, True, True, True, False, True])
TOL = 1e-6
# The negative controls must miss by far more than the tolerance of the positive checks.
GAP = 1e4 * TOL


def _problem() -> tuple[Tensor, Tensor, nn.Linear]:
    """The concatenated batch, the fixed reference sample, and the shared model."""
    gen = torch.Generator().manual_seed(1234)
    x = torch.randn(8, IN_SIZE, generator=gen, dtype=torch.float64)
    # Asymmetric ranks: rank 1's rows come from a shifted, wider distribution.
    x[5:] = 2.0 * x[5:] + 1.5
    reference = torch.randn(N_REF, OUT_SIZE, generator=gen, dtype=torch.float64)
    model = nn.Linear(IN_SIZE, OUT_SIZE, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.randn(OUT_SIZE, IN_SIZE, generator=gen))
        model.bias.copy_(torch.randn(OUT_SIZE, generator=gen))
    return x, reference, model


def _own_reference(reference: Tensor, rank: int) -> Tensor:
    """A different reference per rank, like a prior sample drawn on each rank."""
    return reference + 0.5 * rank


def _naive_mmd2(a: Tensor, b: Tensor) -> Tensor:
    """Biased Gaussian-kernel MMD^2 through an explicit pairwise broadcast."""

    def kernel(u: Tensor, v: Tensor) -> Tensor:
        return torch.exp(-((u[:, None, :] - v[None, :, :]) ** 2).sum(-1) / u.shape[1])

    return kernel(a, a).mean() + kernel(b, b).mean() - 2.0 * kernel(a, b).mean()


def _ddp_average(model: nn.Module) -> dict[str, Tensor]:
    """Average parameter gradients over ranks, as DDP does."""
    grads = {}
    for name, param in model.named_parameters():
        assert param.grad is not None
        grad = param.grad.clone()
        dist.all_reduce(grad)
        grads[name] = grad / dist.get_world_size()
    return grads


def _rank_results(rank: int) -> dict[str, Any]:
    x_full, reference, model = _problem()
    lo, hi = SLICES[rank]
    x = x_full[lo:hi].clone().requires_grad_(True)

    z_all = all_gather_with_grad(model(x))
    loss = _naive_mmd2(z_all, reference)
    loss.backward()

    _, _, local_model = _problem()
    local_loss = _naive_mmd2(local_model(x.detach()), reference)
    local_loss.backward()

    _, _, own_model = _problem()
    own_z_all = all_gather_with_grad(own_model(x.detach()))
    _naive_mmd2(own_z_all, _own_reference(reference, rank)).backward()

    # Rank 0 holds no rows here: the smaller slice is now on rank 0, and it is empty.
    empty_first = all_gather_with_grad(x_full[:0] if rank == 0 else x_full[:4])
    try:
        all_gather_with_grad(torch.zeros(2, 3 + rank, dtype=torch.float64))
        shape_error = ""
    except ValueError as error:
        shape_error = str(error)

    # factorkit's own losses with gather=True: the same prior sample on every rank (equal
    # seeds), a presence mask, and a second data sample for mmd(x, y).
    _, _, prior_model = _problem()
    prior_loss = MMDPriorLoss(gather=True, generator=torch.Generator().manual_seed(7))
    mask = MASK[lo:hi]
    prior_value = prior_loss(prior_model(x.detach()), mask=mask)
    y = _own_reference(reference, 0)[rank * 3 : rank * 3 + 2 + rank]
    pair_value = mmd(prior_model(x.detach()), y, gather=True)
    (prior_value + pair_value).backward()

    return {
        "gathered_loss": (prior_value + pair_value).detach(),
        "gathered_param_grads": _ddp_average(prior_model),
        "world_info": world_info(),
        "is_distributed": is_distributed(),
        "x_all": all_gather_with_grad(x.detach()),
        "z_all": z_all.detach(),
        "loss": loss.detach(),
        "x_grad": x.grad,
        "param_grads": _ddp_average(model),
        "local_loss": local_loss.detach(),
        "local_param_grads": _ddp_average(local_model),
        "own_reference_param_grads": _ddp_average(own_model),
        "empty_first": empty_first,
        "shape_error": shape_error,
    }


def _worker(rank: int, init_method: str, out_dir: Path) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=init_method,
        rank=rank,
        world_size=WORLD,
        timeout=timedelta(seconds=60),
    )
    try:
        torch.save(_rank_results(rank), out_dir / f"rank{rank}.pt")
    except BaseException:
        # The other rank then fails too (its collective loses its peer): keep this
        # rank's traceback so the root cause, not the echo, reaches the report.
        (out_dir / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("dist")
    try:
        mp.spawn(_worker, args=(f"file://{tmp / 'store'}", tmp), nprocs=WORLD, join=True)
    except mp.ProcessRaisedException as error:
        reports = [path.read_text() for path in sorted(tmp.glob("rank*.error"))]
        pytest.fail("child process failed:\n" + "\n".join(reports or [str(error)]))
    return [torch.load(tmp / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.fixture(scope="module")
def single() -> dict[str, Any]:
    """The same loss in one process on the concatenated batch."""
    x_full, reference, model = _problem()
    x = x_full.clone().requires_grad_(True)
    z = model(x)
    loss = _naive_mmd2(z, reference)
    loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return {"x": x_full, "z": z.detach(), "loss": loss.detach(), "x_grad": x.grad, "grads": grads}


def test_factorkit_losses_with_gather_match_single_process(
    two_ranks: list[dict[str, Any]],
) -> None:
    x_full, reference, model = _problem()
    prior_loss = MMDPriorLoss(generator=torch.Generator().manual_seed(7))
    y = torch.cat([_own_reference(reference, 0)[0:2], _own_reference(reference, 0)[3:6]])
    loss = prior_loss(model(x_full), mask=MASK) + mmd(model(x_full), y)
    loss.backward()
    for result in two_ranks:
        torch.testing.assert_close(result["gathered_loss"], loss.detach(), rtol=0, atol=TOL)
        for name, param in model.named_parameters():
            got = result["gathered_param_grads"][name]
            torch.testing.assert_close(got, param.grad, rtol=0, atol=TOL)
    # Without gathering, each rank's value is a different estimate.
    _, _, local = _problem()
    lo, hi = SLICES[0]
    local_value = MMDPriorLoss(generator=torch.Generator().manual_seed(7))(
        local(x_full[lo:hi]), mask=MASK[lo:hi]
    ) + mmd(local(x_full[lo:hi]), y[:2])
    assert abs(float(local_value.detach()) - float(loss.detach())) > GAP


def test_ranks_see_the_process_group(two_ranks: list[dict[str, Any]]) -> None:
    for rank, result in enumerate(two_ranks):
        assert result["world_info"] == (rank, WORLD)
        assert result["is_distributed"]


def test_gathered_tensor_is_the_concatenation_in_rank_order(
    two_ranks: list[dict[str, Any]], single: dict[str, Any]
) -> None:
    for result in two_ranks:
        assert torch.equal(result["x_all"], single["x"])
        torch.testing.assert_close(result["z_all"], single["z"], rtol=0, atol=1e-12)


def test_empty_slice_on_one_rank(two_ranks: list[dict[str, Any]], single: dict[str, Any]) -> None:
    for result in two_ranks:
        assert torch.equal(result["empty_first"], single["x"][:4])


def test_trailing_shape_mismatch_raises_on_every_rank(two_ranks: list[dict[str, Any]]) -> None:
    for result in two_ranks:
        assert "rank 0: (2, 3), rank 1: (2, 4)" in result["shape_error"]


def test_global_loss_matches_single_process(
    two_ranks: list[dict[str, Any]], single: dict[str, Any]
) -> None:
    for result in two_ranks:
        torch.testing.assert_close(result["loss"], single["loss"], rtol=0, atol=TOL)


def test_ddp_averaged_parameter_gradients_match_single_process(
    two_ranks: list[dict[str, Any]], single: dict[str, Any]
) -> None:
    for result in two_ranks:
        for name, grad in single["grads"].items():
            torch.testing.assert_close(result["param_grads"][name], grad, rtol=0, atol=TOL)


def test_input_gradient_is_world_times_single_process_slice(
    two_ranks: list[dict[str, Any]], single: dict[str, Any]
) -> None:
    # Convention: each rank receives the sum over ranks of its slice's gradient, i.e.
    # W * dL/dx_r; DDP's average over W then yields dL/dtheta exactly.
    for rank, result in enumerate(two_ranks):
        lo, hi = SLICES[rank]
        expected = WORLD * single["x_grad"][lo:hi]
        torch.testing.assert_close(result["x_grad"], expected, rtol=0, atol=TOL)


def test_different_losses_per_rank_train_their_mean(two_ranks: list[dict[str, Any]]) -> None:
    # When the ranks' losses differ (each drew its own prior sample), the DDP update is
    # the gradient of the mean of the per-rank global-batch losses.
    x_full, reference, model = _problem()
    losses = [_naive_mmd2(model(x_full), _own_reference(reference, r)) for r in range(WORLD)]
    torch.stack(losses).mean().backward()
    for result in two_ranks:
        for name, param in model.named_parameters():
            got = result["own_reference_param_grads"][name]
            torch.testing.assert_close(got, param.grad, rtol=0, atol=TOL)


def test_per_rank_estimate_differs_from_global(
    two_ranks: list[dict[str, Any]], single: dict[str, Any]
) -> None:
    for result in two_ranks:
        assert abs(result["local_loss"] - single["loss"]) > GAP
    # Averaging per-rank gradients (plain DDP without gathering) is a different update.
    weight_gap = two_ranks[0]["local_param_grads"]["weight"] - single["grads"]["weight"]
    assert weight_gap.abs().max() > GAP


def test_noop_outside_a_process_group() -> None:
    assert not is_distributed()
    assert world_info() == (0, 1)
    x = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    out = all_gather_with_grad(x)
    assert out is x
    upstream = torch.randn(3, 2, dtype=torch.float64)
    out.backward(upstream)
    assert torch.equal(x.grad, upstream)


def test_noop_with_world_size_one(tmp_path: Path) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert world_info() == (0, 1)
        assert not is_distributed()
        x = torch.randn(3, 2)
        assert all_gather_with_grad(x) is x
    finally:
        dist.destroy_process_group()


def test_scalar_input_raises() -> None:
    with pytest.raises(ValueError, match=r"shape \(B, \.\.\.\), got a scalar"):
        all_gather_with_grad(torch.tensor(1.0))
