"""Validation figures: 2-D panels (with EFM continuation arcs) and image grids render and say what they show."""

import numpy as np
import torch

from lightning_fm.callbacks import plot_validation
from lightning_fm.modules import ValidationResult


def _result(data_shape, with_arcs=False):
    n, k = 50, 11
    x = torch.randn(n, *data_shape, generator=torch.Generator().manual_seed(0))
    arcs = None
    if with_arcs:  # 3 lines continued past z = 1, one of them did not move
        arcs = torch.zeros(7, 8, 3)
        arcs[:, :, 0] = torch.linspace(1.0, 1.3, 7)[:, None]
        arcs[:, 0] = arcs[0, 0]
    return ValidationResult(
        source=x,
        generated=x + 1,
        target=x - 1,
        times=torch.linspace(0, 1, k),
        trajectory=torch.randn(k, 8, *data_shape),
        time_label="z",
        arcs=arcs,
    )


def test_2d_figure_has_samples_and_line_panels_and_marks_continued_lines(tmp_path):
    fig = plot_validation(_result((2,), with_arcs=True), title="EFM")
    assert len(fig.axes) == 2
    assert "continued past the plate" in fig.axes[1].get_title()
    red = [line for line in fig.axes[1].get_lines() if line.get_color() == "tab:red"]
    assert len(red) == 7  # the 7 lines that moved; the one that stayed put is not drawn
    fig.savefig(tmp_path / "f.png")
    assert (tmp_path / "f.png").stat().st_size > 5000


def test_image_results_become_grids_of_samples_and_held_out_images():
    fig = plot_validation(_result((1, 8, 8)), title="digits")
    panels = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in panels] == ["samples", "held-out data"]
    # 50 images of 8x8 in 8 columns and 7 rows with 1-pixel borders, grey shown as equal RGB channels
    grid = panels[0].images[0].get_array()
    assert grid.shape == (1 + 7 * 9, 1 + 8 * 9, 3) and (grid[..., 0] == grid[..., 2]).all()
    generated = _result((1, 8, 8)).generated  # the same draw (seeded in _result)
    expected = ((generated[0, 0].clamp(-1, 1) + 1) / 2).numpy()
    assert abs(np.asarray(grid[1:9, 1:9, 0]) - expected).max() < 1e-6
    rgb = plot_validation(_result((3, 4, 4)))
    assert rgb.axes[0].images[0].get_array().shape == (1 + 7 * 5, 1 + 8 * 5, 3)


def test_other_shapes_plot_their_first_two_coordinates():
    fig = plot_validation(_result((5,)), title="5-D")
    assert "first two of (5,) coordinates" in fig.axes[0].get_title()
