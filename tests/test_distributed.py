"""Two gloo processes against one process: all_gather_with_grad on the concatenated
batch, and the examples' ``fit(distributed=True)`` (DDP) against one process with the
global batch.

The children only compute and save; every assertion runs here, so a failing value is
reported by pytest, and an exception in a child surfaces (with its traceback) as the
error of the ``two_ranks`` fixture.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from examples import training
from examples.training import Split, cross_entropy_loss, fit
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
    uneven = (x_full[:0] if rank == 0 else x_full[:4]).clone().requires_grad_(True)
    empty_first = all_gather_with_grad(uneven)
    weights = torch.arange(1.0, 1.0 + empty_first.numel(), dtype=empty_first.dtype)
    (empty_first * weights.reshape(empty_first.shape)).sum().backward()
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
        "empty_first": empty_first.detach(),
        "uneven_grad": uneven.grad,
        "shape_error": shape_error,
    }


Job = Callable[[int], dict[str, Any]]


def _worker(rank: int, job: Job, init_method: str | None, out_dir: Path) -> None:
    """Run ``job(rank)`` (in a gloo group of WORLD ranks unless ``init_method`` is None)."""
    torch.set_num_threads(1)
    if init_method is not None:
        dist.init_process_group(
            "gloo",
            init_method=init_method,
            rank=rank,
            world_size=WORLD,
            timeout=timedelta(seconds=60),
        )
    try:
        torch.save(job(rank), out_dir / f"rank{rank}.pt")
    except BaseException:
        # The other rank then fails too (its collective loses its peer): keep this
        # rank's traceback so the root cause, not the echo, reaches the report.
        (out_dir / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    if dist.is_initialized():
        dist.destroy_process_group()


def spawn(job: Job, tmp: Path, *, group: bool = True) -> list[dict[str, Any]]:
    """Every rank's result of ``job``, run by WORLD spawned processes."""
    init_method = f"file://{tmp / 'store'}" if group else None
    try:
        mp.spawn(_worker, args=(job, init_method, tmp), nprocs=WORLD, join=True)
    except mp.ProcessRaisedException as error:
        reports = [path.read_text() for path in sorted(tmp.glob("rank*.error"))]
        pytest.fail("child process failed:\n" + "\n".join(reports or [str(error)]))
    return [torch.load(tmp / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return spawn(_rank_results, tmp_path_factory.mktemp("dist"))


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
    # Each rank's loss is sum(gathered * w): rank 1 owns every gathered row and receives
    # the sum over ranks of their gradient, WORLD * w; rank 0's empty slice gets nothing.
    x4 = single["x"][:4]
    weights = torch.arange(1.0, 1.0 + x4.numel(), dtype=x4.dtype).reshape(x4.shape)
    assert two_ranks[0]["uneven_grad"].shape == (0, *x4.shape[1:])
    assert torch.equal(two_ranks[1]["uneven_grad"], WORLD * weights)


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


# ---------------------------------------------------------------------------------------
# examples.training.fit(distributed=True): DDP, per-rank shards, identical decisions.

N_TRAIN, N_VAL, CODE, CLASSES = 256, 64, 4, 3
BATCH = 32  # the global batch: 16 samples per rank and step, 8 steps per epoch
FIT_SEED, LR = 0, 1e-2
EPOCHS_LONG = 40  # 320 steps
EPOCHS_SHORT = 4  # 32 steps
# Two ranks with batch B/2 against one process with batch B, float64: the two differ only
# in the order of the sums (DDP's average of two half-batch means, and the order of the
# gathered rows in the MMD), about 1e-16 relative per step (measured: 1.1e-16 after the 32 steps).
FIT_TOL = 1e-12


def _coding_data(dtype: torch.dtype) -> tuple[Split, Split]:
    """A 3-class problem; the view "id" carries each sample's index for the bookkeeping."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(N_TRAIN + N_VAL, IN_SIZE, generator=gen, dtype=dtype)
    labels = (x[:, :CLASSES] + 0.5 * torch.randn(len(x), CLASSES, generator=gen)).argmax(1)
    ids = torch.arange(len(x), dtype=dtype)[:, None]
    train, val = slice(0, N_TRAIN), slice(N_TRAIN, None)
    return (
        Split({"x": x[train], "id": ids[train]}, labels[train]),
        Split({"x": x[val], "id": ids[val]}, labels[val]),
    )


class _Coder(nn.Module):
    """Codes z of the view "x" (under an MMD prior, a loss that couples the batch) and
    class logits from z."""

    def __init__(self, dropout: float, dtype: torch.dtype) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Linear(IN_SIZE, 16, dtype=dtype),
            nn.Tanh(),
            nn.Dropout(dropout),
            nn.Linear(16, CODE, dtype=dtype),
        )
        self.classifier = nn.Linear(CODE, CLASSES, dtype=dtype)

    def forward(
        self, views: dict[str, Tensor], present: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        z = self.encoder(views["x"])
        return z, self.classifier(z)

    def predict(self, views: dict[str, Tensor], present: dict[str, Tensor] | None) -> Tensor:
        return self.forward(views)[1]


def _coupled_loss(
    prior: MMDPriorLoss, seen: list[tuple[bool, Tensor]]
) -> Callable[..., dict[str, Tensor]]:
    """Label loss + MMD of the codes; records whether the net is DDP and the sample ids."""

    def loss(
        net: nn.Module, views: dict[str, Tensor], labels: Tensor, present: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        seen.append((isinstance(net, DistributedDataParallel), views["id"].flatten().long()))
        z, logits = net(views, present)
        label = F.cross_entropy(logits, labels)
        prior_term = prior(z, mask=present["x"])
        return {"total": label + 10.0 * prior_term, "label": label, "mmd": prior_term}

    return loss


def _draw_presence(size: int, generator: torch.Generator) -> dict[str, Tensor]:
    return {"x": torch.rand(size, generator=generator) >= 0.25}


def _fit_jobs(rank: int) -> dict[str, Any]:
    # (a, b) float32, dropout on, a prior sample per rank, a validation-driven learning
    # rate; each rank starts from its own weights, which DDP must replace by rank 0's.
    train, val = _coding_data(torch.float32)
    torch.manual_seed(3 + rank)
    model = _Coder(0.5, torch.float32)
    seen: list[tuple[bool, Tensor]] = []
    long = fit(
        model, _coupled_loss(MMDPriorLoss(gather=True), seen), train, val,
        epochs=EPOCHS_LONG, batch_size=BATCH, lr=LR, lr_patience=2, seed=FIT_SEED,
        keep="last", train_presence=_draw_presence, distributed=True,
    )  # fmt: skip
    # (c) float64, dropout off, the same prior sample on every rank.
    train64, val64 = _coding_data(torch.float64)
    torch.manual_seed(3)
    model64 = _Coder(0.0, torch.float64)
    prior = MMDPriorLoss(gather=True, generator=torch.Generator().manual_seed(7))
    fit(
        model64, _coupled_loss(prior, []), train64, val64,
        epochs=EPOCHS_SHORT, batch_size=BATCH, lr=LR, lr_patience=None, seed=FIT_SEED,
        keep="last", train_presence=_draw_presence, distributed=True,
    )  # fmt: skip
    try:
        fit(model, _coupled_loss(prior, []), train, val, batch_size=33, distributed=True)
        odd_batch_error = ""
    except ValueError as error:
        odd_batch_error = str(error)
    return {
        "wrapped": [wrapped for wrapped, _ in seen],
        "ids": torch.stack([ids for _, ids in seen]),
        "history": long.history,
        "weights": model.state_dict(),
        "weights64": model64.state_dict(),
        "odd_batch_error": odd_batch_error,
    }


@pytest.fixture(scope="module")
def ddp_fit(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    return spawn(_fit_jobs, tmp_path_factory.mktemp("fit"))


def test_fit_trains_the_ddp_wrapped_model(ddp_fit: list[dict[str, Any]]) -> None:
    for result in ddp_fit:
        assert result["wrapped"] == [True] * (EPOCHS_LONG * N_TRAIN // BATCH)


def test_ddp_replicas_stay_bitwise_equal(ddp_fit: list[dict[str, Any]]) -> None:
    """After 320 steps with dropout and a different prior sample per rank: the same bits,
    the same averaged loss terms and validation numbers on both ranks."""
    first, second = (result["weights"] for result in ddp_fit)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert ddp_fit[0]["history"] == ddp_fit[1]["history"]
    assert len(ddp_fit[0]["history"]) == EPOCHS_LONG


def test_each_rank_trains_on_its_own_shard_of_every_epoch(ddp_fit: list[dict[str, Any]]) -> None:
    steps = N_TRAIN // BATCH
    shards = [result["ids"].reshape(EPOCHS_LONG, steps * BATCH // WORLD) for result in ddp_fit]
    for epoch in range(EPOCHS_LONG):
        together = torch.cat([shard[epoch] for shard in shards])
        assert torch.equal(together.sort().values, torch.arange(N_TRAIN))
    assert not torch.equal(shards[0][0], shards[0][1])  # set_epoch: a new shuffle


def _one_process_reference() -> dict[str, Tensor]:
    """What fit(distributed=True) must equal: one process, batch B, an independent loop."""
    train, _ = _coding_data(torch.float64)
    torch.manual_seed(3)
    model = _Coder(0.0, torch.float64)
    loss = _coupled_loss(MMDPriorLoss(generator=torch.Generator().manual_seed(7)), [])
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=1e-2, fused=True)
    masks = torch.Generator().manual_seed(FIT_SEED)
    for epoch in range(1, EPOCHS_SHORT + 1):
        # DistributedSampler's shuffle: a permutation seeded with seed + epoch.
        order = torch.randperm(N_TRAIN, generator=torch.Generator().manual_seed(FIT_SEED + epoch))
        for start in range(0, N_TRAIN, BATCH):
            batch = train.take(order[start : start + BATCH])
            terms = loss(model, batch.views, batch.labels, _draw_presence(BATCH, masks))
            optimizer.zero_grad()
            terms["total"].backward()
            optimizer.step()
    return model.state_dict()


def test_two_ranks_with_half_batches_train_like_one_process(
    ddp_fit: list[dict[str, Any]],
) -> None:
    reference = _one_process_reference()
    torch.manual_seed(3)
    start = _Coder(0.0, torch.float64).state_dict()
    for result in ddp_fit:
        for name, value in reference.items():
            torch.testing.assert_close(result["weights64"][name], value, rtol=0, atol=FIT_TOL)
    # The training moved the weights by far more than the tolerance.
    assert max(float((reference[k] - start[k]).abs().max()) for k in start) > 1e6 * FIT_TOL


def test_fit_distributed_argument_errors(ddp_fit: list[dict[str, Any]]) -> None:
    for result in ddp_fit:
        assert "batch_size 33 is the global batch" in result["odd_batch_error"]
        assert "world size 2" in result["odd_batch_error"]
    train, val = _coding_data(torch.float32)
    with pytest.raises(ValueError, match="needs an initialised process group"):
        fit(_Coder(0.0, torch.float32), cross_entropy_loss, train, val, distributed=True)


def _digits_example(rank: int, port: int, out: Path) -> dict[str, Any]:
    """``examples.mfm_digits --distributed`` as torchrun starts it, every fit recorded."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )  # fmt: skip
    calls: list[dict[str, Any]] = []

    def recording_fit(model: nn.Module, loss_fn: Any, *args: Any, **kwargs: Any) -> Any:
        wrapped: list[bool] = []

        def loss(net: nn.Module, *batch: Any) -> Any:
            wrapped.append(isinstance(net, DistributedDataParallel))
            return loss_fn(net, *batch)

        result = fit(model, loss, *args, **kwargs)
        weights = torch.cat(
            [v.flatten() for v in model.state_dict().values() if isinstance(v, torch.Tensor)]
        )
        calls.append({"name": kwargs.get("description"), "wrapped": wrapped, "weights": weights})
        return result

    # The example modules bind fit when they are imported: replace it before that.
    assert "examples.mfm_digits" not in sys.modules and "examples.missing" not in sys.modules
    training.fit = recording_fit
    from examples import mfm_digits

    args = ["--distributed", "--subset", "200", "--epochs", "2", "--no-progress", "--no-plots"]
    metrics = mfm_digits.main([*args, "--out", str(out)])
    return {"calls": calls, "world_size": metrics["world_size"]}


def test_digits_example_trains_every_model_under_ddp(tmp_path: Path) -> None:
    """The MFM, the baselines, the surrogate and the observed-only models of
    ``torchrun -m examples.mfm_digits --distributed``: DDP-wrapped, equal on both ranks."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    job = functools.partial(_digits_example, port=port, out=tmp_path / "run")
    ranks = spawn(job, tmp_path, group=False)
    names = [call["name"] for call in ranks[0]["calls"]]
    assert {"MFM", "discriminative", "surrogate", "only pix", "without_pix disc"} <= set(names)
    assert [call["name"] for call in ranks[1]["calls"]] == names
    for result in ranks:
        assert result["world_size"] == WORLD
        for call in result["calls"]:
            assert call["wrapped"] and all(call["wrapped"]), call["name"]
    for first, second in zip(ranks[0]["calls"], ranks[1]["calls"], strict=True):
        assert torch.equal(first["weights"], second["weights"]), first["name"]
