"""Sample-quality metrics: distances between sample sets (:mod:`.distances`), feature-space distances FD / KID
(:mod:`.frechet`), a small classifier whose features they use for grey images (:mod:`.classifier`), and their
streaming, DDP-aware accumulation (:mod:`.streaming`, :class:`FeatureStatistics`). Pure torch + POT +
torchmetrics, no Lightning."""
from lightning_fm.metrics.classifier import DigitsClassifier, load_or_train_classifier
from lightning_fm.metrics.distances import mmd_rbf, wasserstein2
from lightning_fm.metrics.frechet import (
    FeatureStatistics,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_inception_distance,
)
from lightning_fm.metrics.streaming import SampleW2

__all__ = [
    "DigitsClassifier",
    "FeatureStatistics",
    "SampleW2",
    "frechet_distance",
    "frechet_distance_from_stats",
    "kernel_inception_distance",
    "load_or_train_classifier",
    "mmd_rbf",
    "wasserstein2",
]
