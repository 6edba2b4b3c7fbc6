"""Time embeddings shared by every backbone."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class SinusoidalTimeEmbedding(nn.Module):
    """``t -> [t, sin(2^k pi t), cos(2^k pi t)]_{k < frequencies}`` for ``t`` of shape ``(B,)``: ``(B, 1 + 2F)``.

    Octave frequencies resolve [0, 1] at scales down to 2^-F; ``frequencies=0`` gives the raw ``t`` (torchcfm MLP).
    """

    def __init__(self, frequencies: int = 0) -> None:
        super().__init__()
        self.register_buffer("scales", math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32), persistent=False)

    @property
    def dim(self) -> int:
        return 1 + 2 * self.scales.numel()

    def forward(self, t: Tensor) -> Tensor:
        t = t.reshape(-1, 1)
        angles = t * self.scales.to(t.dtype)
        return torch.cat([t, torch.sin(angles), torch.cos(angles)], dim=1)
