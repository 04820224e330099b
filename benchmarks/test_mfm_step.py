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
from examples.training import Split
from factorkit import MMDPriorLoss, mfm_loss

BATCH = 64


def make_steps(batch_size: int = BATCH) -> dict[str, Callable[[], None]]:
    """A closure per model that runs one optimisation step on a fixed batch."""
    torch.manual_seed(0)
    data, _ = standardize(load_uci_mfeat(seed=0))
    train = Split(*data.split("train"))
    batch = train.take(torch.arange(batch_size))
    prior = MMDPriorLoss()
    mfm = digits_mfm(data.view_shapes, data.num_classes)
    disc = digits_mfm(data.view_shapes, data.num_classes, generative=False)

    def mfm_objective() -> torch.Tensor:
        return mfm_loss(mfm(batch.views), batch.views, batch.labels, prior=prior)["total"]

    def disc_loss() -> torch.Tensor:
        return mfm_loss(disc(batch.views), batch.views, batch.labels)["total"]

    def stepper(model: torch.nn.Module, loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4, fused=True)

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            loss().backward()
            optimizer.step()

        return step

    return {"mfm": stepper(mfm, mfm_objective), "discriminative": stepper(disc, disc_loss)}


@pytest.mark.parametrize("model", ["discriminative", "mfm"])
def test_training_step(benchmark: pytest.FixtureRequest, model: str) -> None:
    torch.set_num_threads(1)
    step = make_steps()[model]
    benchmark(step)  # type: ignore[operator]
