"""Sample-quality metrics: distances between sample sets (:mod:`.distances`), feature-space distances FD / KID
(:mod:`.frechet`) on Inception features (:mod:`.inception`, FID) or a small classifier's for grey images
(:mod:`.classifier`), cached reference statistics (:mod:`.reference`), and their streaming, DDP-aware accumulation
(:mod:`.streaming`, :class:`FeatureStatistics`), and the straightness of a flow's lines (:mod:`.straightness`). Pure
torch + POT + torchmetrics, no Lightning."""

from lightning_fm.metrics.classifier import DigitsClassifier, load_or_train_classifier
from lightning_fm.metrics.distances import mmd_rbf, sliced_wasserstein2, wasserstein2
from lightning_fm.metrics.frechet import (
    FeatureStatistics,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_inception_distance,
    mean_and_covariance,
)
from lightning_fm.metrics.inception import InceptionFeatures
from lightning_fm.metrics.reference import reference_statistics
from lightning_fm.metrics.straightness import straightness
from lightning_fm.metrics.streaming import SampleW2

__all__ = [
    "DigitsClassifier",
    "FeatureStatistics",
    "InceptionFeatures",
    "SampleW2",
    "frechet_distance",
    "frechet_distance_from_stats",
    "kernel_inception_distance",
    "load_or_train_classifier",
    "mean_and_covariance",
    "mmd_rbf",
    "reference_statistics",
    "sliced_wasserstein2",
    "straightness",
    "wasserstein2",
]
