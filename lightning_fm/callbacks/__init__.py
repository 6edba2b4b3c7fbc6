"""Callbacks, named for what they do: validation plots, sample grids, prediction writer, duality checks, image
metrics (Inception FID/KID, the digits classifier's), held-out likelihoods (nll, bits/dim), crash-safe checkpoints,
and the training guards every module adds itself (per-step seeding, the divergence guard, throughput)."""

from lightning_fm.callbacks.checkpoints import CrashSafeModelCheckpoint
from lightning_fm.callbacks.classifier_metrics import ClassifierMetrics
from lightning_fm.callbacks.divergence import DivergenceGuard
from lightning_fm.callbacks.duality import DualityCheck
from lightning_fm.callbacks.grids import SampleGrid
from lightning_fm.callbacks.held_out_likelihood import HeldOutLikelihood
from lightning_fm.callbacks.inception_metrics import InceptionMetrics
from lightning_fm.callbacks.predictions import SampleWriter
from lightning_fm.callbacks.sample_plots import SamplePlots, plot_validation
from lightning_fm.callbacks.step_seeding import StepSeeding
from lightning_fm.callbacks.throughput import Throughput

__all__ = [
    "ClassifierMetrics",
    "CrashSafeModelCheckpoint",
    "DivergenceGuard",
    "DualityCheck",
    "HeldOutLikelihood",
    "InceptionMetrics",
    "SampleGrid",
    "SamplePlots",
    "SampleWriter",
    "StepSeeding",
    "Throughput",
    "plot_validation",
]
