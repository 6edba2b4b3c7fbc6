"""Embeddings shared by every backbone: time (any real t: EFM trains behind the target plate, t > 1) and class."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def data_shape_tuple(data_shape: int | list[int] | tuple[int, ...] | None, owner: str) -> tuple[int, ...]:
    """``data_shape`` as a tuple of positive ints; a clear error when it is missing or malformed."""
    if data_shape is None:
        raise ValueError(
            f"{owner}.data_shape is not set: pass the per-sample shape (e.g. [2] or [1, 8, 8]), or let "
            "the CLI take it from the data (data.data_shape)"
        )
    shape = (data_shape,) if isinstance(data_shape, int) else tuple(data_shape)
    if not shape or any(int(d) != d or d < 1 for d in shape):
        raise ValueError(f"{owner}.data_shape must be positive integers, got {data_shape!r}")
    return tuple(int(d) for d in shape)


def sinusoidal_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """ADM/DDPM's timestep embedding of ``t`` ``(B,)``: ``(B, dim)`` with columns
    ``[cos(t w_0), ..., cos(t w_{h-1}), sin(t w_0), ..., sin(t w_{h-1})]``, ``w_k = max_period^(-k / h)``,
    ``h = dim // 2`` (a zero column pads an odd ``dim``). The periods ``2 pi / w_k`` run from ``2 pi`` almost to
    ``2 pi max_period`` in units of ``t``; computed in float32 (float64 for a float64 ``t``) under any autocast.
    """
    t = t.reshape(-1)
    t = t.to(torch.promote_types(t.dtype, torch.float32))
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=t.dtype, device=t.device) / half)
    angles = t[:, None] * freqs[None]
    parts = [torch.cos(angles), torch.sin(angles)] + ([torch.zeros_like(t[:, None])] if dim % 2 else [])
    return torch.cat(parts, dim=1)


class SinusoidalTimeEmbedding(nn.Module):
    """``t -> [t, sin(2^k pi t), cos(2^k pi t)]_{k < frequencies}`` for ``t`` of shape ``(B,)``: ``(B, 1 + 2F)``.

    Octave frequencies resolve [0, 1] at scales down to 2^-F; ``frequencies=0`` gives the raw ``t`` (torchcfm MLP).
    Defined for every real t (the raw t keeps times outside [0, 1] apart from their periodic images).
    """

    scales: Tensor  # a buffer

    def __init__(self, frequencies: int = 0) -> None:
        super().__init__()
        scales = math.pi * 2.0 ** torch.arange(frequencies, dtype=torch.float32)
        self.register_buffer("scales", scales, persistent=False)

    @property
    def dim(self) -> int:
        return 1 + 2 * self.scales.numel()

    def forward(self, t: Tensor) -> Tensor:
        t = t.reshape(-1, 1)
        angles = t * self.scales.to(t.dtype)
        return torch.cat([t, torch.sin(angles), torch.cos(angles)], dim=1)


class ClassEmbedding(nn.Module):
    """A learned embedding of ``num_classes`` classes plus a null class (index ``num_classes``, used for ``y=None``
    and for the labels dropped in classifier-free guidance training). ``num_classes=0``: no embedding (``dim`` 0)."""

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        if int(num_classes) != num_classes or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.table = nn.Embedding(self.num_classes + 1, dim) if self.num_classes else None

    @property
    def dim(self) -> int:
        return 0 if self.table is None else self.table.embedding_dim

    def forward(self, y: Tensor | None, batch: int, device: torch.device) -> Tensor:
        if y is None:
            y = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        y = y.to(device=device, dtype=torch.long)
        if y.shape != (batch,):  # (the range is checked once per batch by the modules: no device sync here)
            raise ValueError(f"labels y must have shape ({batch},), got {tuple(y.shape)}")
        if self.table is None:
            raise ValueError("this ClassEmbedding has num_classes=0: no labels to embed (its dim is 0)")
        return self.table(y)
