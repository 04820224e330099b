"""The digits example's plots: classes told apart, labelled grids and axes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.figure
import pytest
import torch

from examples import plots
from examples.mfm import digits_mfm
from examples.multiview_data import load_uci_mfeat, standardize
from examples.training import Split


def test_one_per_class_spreads_over_the_classes() -> None:
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    assert plots.one_per_class(labels, 3).tolist() == [0, 4, 8]  # classes 0, 2, 4
    assert plots.one_per_class(labels, 5).tolist() == [0, 2, 4, 6, 8]
    # Fewer classes than asked: each class once, then the next samples in order.
    assert plots.one_per_class(torch.tensor([1, 1, 0]), 3).tolist() == [2, 0, 1]
    assert plots.one_per_class(torch.tensor([1, 1]), 4).tolist() == [0, 1]


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every figure ``save_all`` writes (by file name), with an untrained digits MFM."""
    data, _ = standardize(load_uci_mfeat(seed=0))
    test = Split(*data.split("test"))
    torch.manual_seed(0)
    model = digits_mfm(data.view_shapes, data.num_classes)
    history = [{"total": 3.0, "label": 2.3, "reconstruction/pix": 1.0, "mmd/shared": 0.01,
                "val_accuracy": 0.1}] * 3  # fmt: skip
    saved: dict[str, Any] = {}
    original = matplotlib.figure.Figure.savefig

    def keep(figure: matplotlib.figure.Figure, path: Path, **kwargs: Any) -> None:
        saved[Path(path).name] = figure
        original(figure, path, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(matplotlib.figure.Figure, "savefig", keep)
        plots.save_all(model, history, test, tmp_path_factory.mktemp("plots"))
    saved["classes"] = test.labels
    return saved


def test_codes_2d_has_a_class_legend_and_square_panels(figures: dict[str, Any]) -> None:
    figure = figures["codes_2d.png"]
    (legend,) = figure.legends
    assert legend.get_title().get_text() == "class"
    assert [t.get_text() for t in legend.get_texts()] == [str(c) for c in range(10)]
    width, height = figure.get_size_inches()
    assert width / height < 2.5  # 7 panels in 2 rows, not a 7:1 strip
    titled = [ax for ax in figure.axes if ax.get_title()]
    assert len(titled) == 7
    for ax in titled:
        assert ax.get_box_aspect() == 1


def test_reconstructions_show_different_classes(figures: dict[str, Any]) -> None:
    figure = figures["reconstructions.png"]
    titles = [ax.get_title() for ax in figure.axes if ax.get_title()]
    assert titles == ["class 0", "class 3", "class 6", "class 9"]


def test_swap_grid_labels_rows_and_columns(figures: dict[str, Any]) -> None:
    axes = figures["swap_grid.png"].axes
    assert len(axes) == 36
    rows = [ax.get_ylabel() for ax in axes[::6]]
    columns = [ax.get_title() for ax in axes[:6]]
    expected = [f"class {c}" for c in (0, 2, 4, 5, 7, 9)]
    assert rows == columns == expected
    assert figures["swap_grid.png"]._supylabel.get_text().startswith("shared code Z_y")
    assert figures["swap_grid.png"]._supxlabel.get_text().startswith("private codes Z_a")


def test_training_curves_label_their_y_axes(figures: dict[str, Any]) -> None:
    labels = {ax.get_title(): ax.get_ylabel() for ax in figures["training_curves.png"].axes}
    assert labels == {
        "label": "cross-entropy",
        "reconstruction/pix": "MSE (standardised)",
        "mmd/shared": "MMD (log scale)",
        "val_accuracy": "accuracy",
    }
