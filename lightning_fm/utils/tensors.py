"""Tensor helpers shared by the maths: per-sample times and broadcasting a ``(B,)`` tensor against ``(B, *dims)``."""

from __future__ import annotations

import torch
from torch import Tensor


def as_time(t: Tensor | float, x: Tensor) -> Tensor:
    """``t`` as a ``(B,)`` tensor on x's device and dtype (a float or 0-d tensor is broadcast to every sample)."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(
            f"t must have shape ({x.shape[0]},) to match x of shape {tuple(x.shape)}, got {tuple(t.shape)}"
        )
    return t


def pad_like(t: Tensor, x: Tensor) -> Tensor:
    """Reshape a ``(B,)`` tensor to ``(B, 1, ..., 1)`` so that it broadcasts against ``x`` ``(B, *dims)``."""
    return t.reshape(t.shape[0], *([1] * (x.dim() - 1)))
