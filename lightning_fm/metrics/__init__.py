"""Sample-quality metrics: distances between sample sets (:mod:`.distances`) and their streaming, DDP-aware
accumulation (:mod:`.streaming`). Pure torch + POT + torchmetrics, no Lightning."""
from lightning_fm.metrics.distances import mmd_rbf, wasserstein2
from lightning_fm.metrics.streaming import SampleW2

__all__ = ["SampleW2", "mmd_rbf", "wasserstein2"]
