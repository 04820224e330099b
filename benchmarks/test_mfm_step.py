"""One training step of the digits MFM vs the discriminative baseline (issue target: <= 2x).

Run:  python -m pytest benchmarks/test_mfm_step.py --benchmark-only
      python benchmarks/mfm_step_table.py     # the ratio, measured in one run
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from examples.mfm import digits_mfm
from examples.multiview_data import load_uci_mfeat, standardize
from examples.training import Split, autocast
from factorkit import MMDPriorLoss, mfm_loss

BATCH = 64


def make_steps(
    batch_size: int = BATCH, device: str = "cpu", compile_mode: str | None = None
) -> dict[str, Callable[[], None]]:
    """A closure per model that runs one optimisation step on a fixed batch.

    On CUDA the step runs under the examples' bf16 autocast, as in training. With
    ``compile_mode`` (``"default"``, ``"reduce-overhead"``, ...) each model's loss
    function is ``torch.compile``d as ``examples.training.fit(compile=True)`` does.
    """
    torch.manual_seed(0)
    data, _ = standardize(load_uci_mfeat(seed=0))
    train = Split(*data.split("train"))
    batch = train.take(torch.arange(batch_size))
    views = {m: v.to(device) for m, v in batch.views.items()}
    labels = batch.labels.to(device)
    dev = torch.device(device)
    prior = MMDPriorLoss()
    mfm = digits_mfm(data.view_shapes, data.num_classes).to(device)
    disc = digits_mfm(data.view_shapes, data.num_classes, generative=False).to(device)

    def mfm_objective() -> torch.Tensor:
        return mfm_loss(mfm(views), views, labels, prior=prior)["total"]

    def disc_loss() -> torch.Tensor:
        return mfm_loss(disc(views), views, labels)["total"]

    def stepper(model: torch.nn.Module, loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)
        if compile_mode is not None:
            loss = torch.compile(loss, dynamic=False, mode=compile_mode)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast(dev):
                value = loss()
            value.backward()
            optimizer.step()

        return step

    return {"mfm": stepper(mfm, mfm_objective), "discriminative": stepper(disc, disc_loss)}


@pytest.mark.parametrize("model", ["discriminative", "mfm"])
def test_training_step(benchmark: pytest.FixtureRequest, model: str) -> None:
    torch.set_num_threads(1)
    step = make_steps()[model]
    benchmark(step)  # type: ignore[operator]
