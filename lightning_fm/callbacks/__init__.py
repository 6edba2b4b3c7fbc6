"""Callbacks: validation plots, prediction writer, duality checks (image metrics plug in here)."""
from lightning_fm.callbacks.duality import DualityCheck
from lightning_fm.callbacks.plots import SamplePlotCallback, plot_validation
from lightning_fm.callbacks.predictions import SampleWriter

__all__ = ["DualityCheck", "SamplePlotCallback", "SampleWriter", "plot_validation"]
