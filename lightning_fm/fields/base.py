"""Base class of interaction fields and the shared numerics (docs/concepts/interaction-fields.md#interaction-fields,
docs/concepts/duality.md#forward-only-fields, docs/concepts/duality.md#superposition).

Conventions: an augmented point is ``(z, x)`` with ``z`` ``(b,)`` and ``x`` ``(b, *dims)``; the source plate is
``z = 0`` (t = 0), the target plate ``z = L`` (t = 1). A field value is a pair ``(ez (b,), ex (b, *dims))``.
A batch of pairs ``(x0, x1)`` is ``(B, *dims)`` each, with D = number of elements of one sample.

A superposed field over B pairs is returned as a :class:`SuperposedField`: its unit direction and the natural log of
its norm. The norm itself (e.g. ``1/sigma^D`` or ``||u||^{-(D+1)}`` factors) under- or overflows in image dimension,
the direction and the log-norm do not: every superposition is computed with log-domain weights (one shift per
point), as matrix products over the pairs, in chunks of points.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_fm.utils.spec import Buildable, describe
from lightning_fm.utils.tensors import as_time, pad_like

#: Points per chunk of a superposition: memory is O(chunk_size * B) per intermediate matrix.
DEFAULT_CHUNK = 4096


@dataclass
class SuperposedField:
    """The superposed field ``E = nz_ * exp(log_norm)``: unit direction ``(nz, nx)`` and ``log ||E||``.

    ``log_norm`` is ``-inf`` (and the direction 0) where the field vanishes, e.g. exactly on a charge of EFM.
    """

    log_norm: Tensor
    nz: Tensor
    nx: Tensor

    @property
    def direction(self) -> tuple[Tensor, Tensor]:
        return self.nz, self.nx

    def value(self) -> tuple[Tensor, Tensor]:
        """``(ez, ex)``: the field itself. It under/overflows in high D (``exp`` of the log-norm); fine for tests."""
        scale = torch.exp(self.log_norm)
        return scale * self.nz, pad_like(scale, self.nx) * self.nx


def work_dtype(x: Tensor) -> torch.dtype:
    """The dtype the superpositions are computed in: at least float32."""
    return torch.promote_types(x.dtype, torch.float32)


def normalize(ez: Tensor, ex: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Unit direction and log-norm of ``(ez (b,), ex (b, *dims))``, safe against overflow of the squared norm.

    Returns ``(log_norm (b,), nz (b,), nx (b, *dims))``; a zero vector gives direction 0 and log-norm ``-inf``.
    """
    flat = ex.flatten(1)
    scale = torch.maximum(ez.abs(), flat.abs().amax(1)).clamp_min(torch.finfo(ez.dtype).tiny)
    sz, sx = ez / scale, flat / scale[:, None]
    norm = torch.sqrt(sz.square() + sx.square().sum(1))
    zero = norm == 0
    safe = torch.where(zero, torch.ones_like(norm), norm)
    log_norm = torch.where(zero, torch.full_like(norm, -math.inf), torch.log(scale) + torch.log(safe))
    return log_norm, sz / safe, (sx / safe[:, None]).reshape(ex.shape)


def check_points(z: Tensor | float, x: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
    """Validate shapes; return ``z`` as a ``(b,)`` tensor."""
    if x0.shape != x1.shape:
        raise ValueError(f"source x0 {tuple(x0.shape)} and target x1 {tuple(x1.shape)} must have the same shape")
    if x.shape[1:] != x0.shape[1:]:
        raise ValueError(f"points x {tuple(x.shape)} and pairs {tuple(x0.shape)} must share the data shape")
    return as_time(z, x)


def pairwise_sq_dist(xi: Tensor, Y: Tensor, y_sq: Tensor) -> Tensor:
    """``||xi_i - Y_j||^2`` as ``||xi||^2 + ||Y||^2 - 2 xi Y^T`` (``(b, B)``, clamped at 0). ``y_sq = ||Y_j||^2``."""
    return (xi.pow(2).sum(1, keepdim=True) + y_sq - 2 * (xi @ Y.T)).clamp_min(0)


class InteractionField(Buildable, ABC):
    """A field between the source plate ``z = 0`` and the target plate ``z = L``
    (docs/concepts/interaction-fields.md#ifm, docs/concepts/duality.md#forward-only-fields).

    Subclasses give the field of one pair (:meth:`pair_field`) and the superposition over all pairs of a batch
    (:meth:`superpose`). ``forward_only`` is True when ``E_z > 0`` everywhere between the plates and no line leaves
    the slab (the CFM-dual fields, docs/concepts/duality.md#forward-only-fields).
    """

    forward_only: bool = False

    def __init__(self, L: float) -> None:
        L = float(L)
        if not (math.isfinite(L) and L > 0):
            raise ValueError(f"{type(self).__name__}.L must be > 0 and finite (the plate distance), got {L}")
        self.L = L

    # -- z <-> t ---------------------------------------------------------------------------------------------
    def t_of_z(self, z: Tensor | float) -> Tensor | float:
        """CFM time of a slice: ``t = z / L``."""
        return z / self.L

    def z_of_t(self, t: Tensor | float) -> Tensor | float:
        """Slice of a CFM time: ``z = t L``."""
        return t * self.L

    # -- what a subclass defines -----------------------------------------------------------------------------
    @abstractmethod
    def pair_field(self, z: Tensor | float, x: Tensor, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
        """Field of pair i ``(x0[i], x1[i])`` at point i ``(z[i], x[i])``: exact values ``(ez (B,), ex (B, *dims))``.

        Exact means not normalised and not log-domain: in high D the values under- or overflow (``1/sigma^D``,
        ``||u||^{-(D+1)}``). That is fine for this low-level function (tests, plots, low D); use :meth:`superpose`
        or :meth:`direction` for training targets.
        """

    @abstractmethod
    def superpose(
        self, z: Tensor | float, x: Tensor, x0: Tensor, x1: Tensor, chunk_size: int = DEFAULT_CHUNK
    ) -> SuperposedField:
        """The field of all B pairs superposed, at each of the b points (b need not equal B),
        docs/concepts/duality.md#superposition."""

    # -- derived ---------------------------------------------------------------------------------------------
    def direction(
        self, z: Tensor | float, x: Tensor, x0: Tensor, x1: Tensor, chunk_size: int = DEFAULT_CHUNK
    ) -> tuple[Tensor, Tensor]:
        """Unit direction ``(nz (b,), nx (b, *dims))`` of the superposed field of all pairs at each point."""
        return self.superpose(z, x, x0, x1, chunk_size).direction

    def field(
        self, z: Tensor | float, x: Tensor, x0: Tensor, x1: Tensor, chunk_size: int = DEFAULT_CHUNK
    ) -> tuple[Tensor, Tensor]:
        """The superposed field's values (under/overflow in high D: see :meth:`SuperposedField.value`)."""
        return self.superpose(z, x, x0, x1, chunk_size).value()

    def target(
        self, z: Tensor | float, x: Tensor, x0: Tensor, x1: Tensor, chunk_size: int = DEFAULT_CHUNK
    ) -> tuple[Tensor, Tensor]:
        """Regression target ``sqrt(D+1) * direction`` (docs/concepts/interaction-fields.md#regression-target), as a
        pair ``(tz, tx)``."""
        nz, nx = self.direction(z, x, x0, x1, chunk_size)
        scale = math.sqrt(x[0].numel() + 1)
        return scale * nz, scale * nx

    def __repr__(self) -> str:
        return describe(self)
