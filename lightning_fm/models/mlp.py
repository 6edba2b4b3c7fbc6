"""Multi-layer perceptron backbone ``net(x, t)`` for any data shape (flattened internally)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_fm.models.embeddings import SinusoidalTimeEmbedding
from lightning_fm.spec import Buildable

ACTIVATIONS = {"selu": nn.SELU, "silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLP(Buildable, nn.Module):
    """``net(x, t)``: concatenates the flattened ``x`` with a time embedding and maps it through ``depth`` hidden layers.

    Output: a tensor shaped like ``x`` (a velocity), or with ``field_head=True`` the pair ``(f_z (B,), f_x (B, *dims))``
    of an interaction-field model (one extra scalar output).

    Args:
        data_shape: per-sample shape, e.g. ``2`` or ``[2]`` for 2-D toys, ``[1, 8, 8]`` for digits.
        width: hidden width. depth: number of hidden layers. activation: one of ``ACTIVATIONS``.
        time_frequencies: sinusoidal frequencies of the time embedding (0 = raw t, as in torchcfm).
        field_head: add the scalar ``f_z`` output for IFM modules.
    """

    def __init__(
        self,
        data_shape: int | list[int] = 2,
        width: int = 64,
        depth: int = 3,
        activation: str = "selu",
        time_frequencies: int = 0,
        field_head: bool = False,
    ) -> None:
        super().__init__()
        self.data_shape = (data_shape,) if isinstance(data_shape, int) else tuple(data_shape)
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP.activation={activation!r} is unknown; choose one of {sorted(ACTIVATIONS)}")
        if width < 1 or depth < 1:
            raise ValueError(f"MLP needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        self.dim = math.prod(self.data_shape)
        self.field_head = field_head
        self.time_embedding = SinusoidalTimeEmbedding(time_frequencies)
        layers: list[nn.Module] = []
        fan_in = self.dim + self.time_embedding.dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), ACTIVATIONS[activation]()]
            fan_in = width
        layers.append(nn.Linear(fan_in, self.dim + int(field_head)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor, t: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"MLP was built for data_shape {list(self.data_shape)}, got input {tuple(x.shape)}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        out = self.net(torch.cat([x.flatten(1), self.time_embedding(t)], dim=1))
        if self.field_head:
            return out[:, 0], out[:, 1:].reshape(x.shape)
        return out.reshape(x.shape)
