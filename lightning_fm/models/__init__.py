"""Backbones shared by all model families, called ``net(x, t)``."""
from lightning_fm.models.embeddings import SinusoidalTimeEmbedding
from lightning_fm.models.mlp import MLP

__all__ = ["MLP", "SinusoidalTimeEmbedding"]
