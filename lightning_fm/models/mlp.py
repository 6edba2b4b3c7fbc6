"""Multi-layer perceptron backbone ``net(x, t, y=None)`` for any data shape (flattened internally)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from lightning_fm.models.embeddings import ClassEmbedding, SinusoidalTimeEmbedding, data_shape_tuple
from lightning_fm.utils.spec import Buildable

ACTIVATIONS = {"selu": nn.SELU, "silu": nn.SiLU, "relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLP(Buildable, nn.Module):
    """``net(x, t, y=None)``: the flattened ``x``, a time embedding of ``t`` and (``num_classes > 0``) a learned
    embedding of the class ``y`` are concatenated and mapped through ``depth`` hidden layers to a tensor shaped
    like ``x`` (a velocity). Wrap it in :class:`~lightning_fm.models.FieldHead` for IFM's ``(f_z, f_x)``.

    Args:
        data_shape: per-sample shape, e.g. ``[2]`` for 2-D toys, ``[1, 8, 8]`` for digits; the CLI fills it in from
            the data (``data.data_shape``) when it is left out.
        width: hidden width. depth: number of hidden layers. activation: one of ``ACTIVATIONS``.
        time_frequencies: sinusoidal frequencies of the time embedding (0 = raw t, as in torchcfm).
        num_classes: class-conditional with this many classes (0 = unconditional); ``y=None`` is the null class.
    """

    def __init__(
        self,
        data_shape: int | list[int] | None = None,
        width: int = 64,
        depth: int = 3,
        activation: str = "selu",
        time_frequencies: int = 0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.data_shape = data_shape_tuple(data_shape, "MLP")
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP.activation={activation!r} is unknown; choose one of {sorted(ACTIVATIONS)}")
        if width < 1 or depth < 1:
            raise ValueError(f"MLP needs width >= 1 and depth >= 1, got width={width}, depth={depth}")
        self.dim = math.prod(self.data_shape)
        self.feature_dim = width
        self.time_embedding = SinusoidalTimeEmbedding(time_frequencies)
        self.class_embedding = ClassEmbedding(num_classes, width)
        layers: list[nn.Module] = []
        fan_in = self.dim + self.time_embedding.dim + self.class_embedding.dim
        for _ in range(depth):
            layers += [nn.Linear(fan_in, width), ACTIVATIONS[activation]()]
            fan_in = width
        self.hidden = nn.Sequential(*layers)
        self.out = nn.Linear(width, self.dim)

    @property
    def num_classes(self) -> int:
        return self.class_embedding.num_classes

    def forward_with_features(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The output shaped like ``x`` and the last hidden layer ``(B, width)`` (what a head projects)."""
        if tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"MLP was built for data_shape {list(self.data_shape)}, got input {tuple(x.shape)}")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0])
        parts = [x.flatten(1), self.time_embedding(t)]
        if self.class_embedding.dim:
            parts.append(self.class_embedding(y, x.shape[0], x.device).to(x.dtype))
        elif y is not None:
            raise ValueError("MLP was built unconditional (num_classes=0) but got labels y")
        h = self.hidden(torch.cat(parts, dim=1))
        return self.out(h).reshape(x.shape), h

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.forward_with_features(x, t, y)[0]
