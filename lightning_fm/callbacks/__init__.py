"""Callbacks: validation plots, prediction writer, duality checks (image metrics plug in here)."""
from lightning_fm.callbacks.duality import DualityCheck
from lightning_fm.callbacks.plots import SamplePlotCallback, SampleWriter, plot_validation

__all__ = ["DualityCheck", "SamplePlotCallback", "SampleWriter", "plot_validation"]
