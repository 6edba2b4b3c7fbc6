"""Classifier-free guidance (Ho & Salimans 2022) for velocity and field models.

A class-conditional network trained with label dropout (the labels replaced by the null class with probability
``label_dropout``) learns both the conditional and the unconditional model. Guidance scale ``w`` extrapolates from
the unconditional towards the conditional prediction (``w = 0``: the conditional model; ``w = -1``: the
unconditional one; the convention of FAIR's flow_matching, ``cfg_scale``):

* velocity (CFM): ``v_w = (1 + w) v(x, t | y) - w v(x, t | null)``;
* forward-only field: the same in velocity space, through the duality ``v = L f_x / f_z``
  (docs/concepts/duality.md#time-and-velocity): the slope ``s = f_x / f_z`` is guided,
  ``s_w = (1 + w) s(y) - w s(null)``, and the result is returned as the field ``sqrt(D+1) (1, s_w) / ||(1, s_w)||``. A
  guided forward-only IFM then follows exactly the guided dynamics of its dual CFM. Where either prediction has
  ``f_z <= 0`` (no velocity exists) the field rule below is used, so the sampler still sees, guards and counts that
  point;
* field that is not forward-only (EFM): the network outputs themselves, ``f_w = (1 + w) f(y) - w f(null)``.

A sampler's NFE counts calls of the guided function: each call evaluates the network once on twice the batch (the
conditional and the null rows together), so a guided sample costs about twice the network work of its NFE.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lightning_fm.utils.tensors import pad_like

Prediction = Tensor | tuple[Tensor, ...]


def both_conditions(
    net: Callable[[Tensor, Tensor, Tensor], Prediction], x: Tensor, t: Tensor, y: Tensor, null_class: int
) -> tuple[Prediction, Prediction]:
    """``net(x, t, y)`` and ``net(x, t, null)`` in ONE batched call of twice the batch: ``(conditional,
    unconditional)``, each a tensor or a tuple of tensors as ``net`` returns."""
    null = torch.full_like(y, null_class)
    out = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))
    if isinstance(out, tuple):
        halves = [o.chunk(2) for o in out]
        return tuple(h[0] for h in halves), tuple(h[1] for h in halves)
    conditional, unconditional = out.chunk(2)
    return conditional, unconditional


def extrapolate(conditional: Tensor, unconditional: Tensor, w: float) -> Tensor:
    """``(1 + w) conditional - w unconditional``."""
    return conditional + w * (conditional - unconditional)


def guided_field(
    conditional: tuple[Tensor, Tensor], unconditional: tuple[Tensor, Tensor], w: float, forward_only: bool
) -> tuple[Tensor, Tensor]:
    """The guided field ``(f_z, f_x)`` of a conditional and an unconditional field prediction (module docstring)."""
    (fz_c, fx_c), (fz_u, fx_u) = conditional, unconditional
    fz, fx = extrapolate(fz_c, fz_u, w), extrapolate(fx_c, fx_u, w)
    if not forward_only:
        return fz, fx
    valid = (fz_c > 0) & (fz_u > 0)
    one = torch.ones_like(fz_c)
    slope = extrapolate(
        fx_c / pad_like(torch.where(valid, fz_c, one), fx_c), fx_u / pad_like(torch.where(valid, fz_u, one), fx_u), w
    )
    norm = torch.sqrt(1 + slope.flatten(1).square().sum(1))
    scale = math.sqrt(fx_c[0].numel() + 1) / norm
    return torch.where(valid, scale, fz), torch.where(pad_like(valid, fx), pad_like(scale, slope) * slope, fx)
