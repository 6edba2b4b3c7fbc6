"""Callbacks: validation plots, sample grids, prediction writer, duality checks, image metrics (FID/KID, and the
digits classifier's), held-out likelihoods (nll, bits/dim), crash-safe checkpoints."""
from lightning_fm.callbacks.checkpoints import CrashSafeModelCheckpoint
from lightning_fm.callbacks.classifier_metrics import ClassifierMetrics
from lightning_fm.callbacks.duality import DualityCheck
from lightning_fm.callbacks.fid import FIDCallback
from lightning_fm.callbacks.grids import SampleGrid
from lightning_fm.callbacks.likelihood import LikelihoodCallback
from lightning_fm.callbacks.plots import SamplePlotCallback, plot_validation
from lightning_fm.callbacks.predictions import SampleWriter

__all__ = ["ClassifierMetrics", "CrashSafeModelCheckpoint", "DualityCheck", "FIDCallback", "LikelihoodCallback",
           "SampleGrid", "SamplePlotCallback", "SampleWriter", "plot_validation"]
