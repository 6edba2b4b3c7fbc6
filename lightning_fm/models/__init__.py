"""Backbones shared by all model families, called ``net(x, t, y=None)``; :class:`FieldHead` gives IFM's
``(f_z, f_x)``."""

from lightning_fm.models.embeddings import ClassEmbedding, SinusoidalTimeEmbedding, sinusoidal_embedding
from lightning_fm.models.heads import FieldHead
from lightning_fm.models.mlp import MLP
from lightning_fm.models.unet import UNet

__all__ = ["MLP", "ClassEmbedding", "FieldHead", "SinusoidalTimeEmbedding", "UNet", "sinusoidal_embedding"]
