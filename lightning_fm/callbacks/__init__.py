"""Callbacks: validation plots, prediction writer (duality checks and image metrics plug in here)."""
from lightning_fm.callbacks.plots import SamplePlotCallback, SampleWriter, plot_validation

__all__ = ["SamplePlotCallback", "SampleWriter", "plot_validation"]
