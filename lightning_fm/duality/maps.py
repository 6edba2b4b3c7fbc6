"""The two maps of the duality, on objects and on values (docs/concepts/duality.md#the-bijection,
docs/concepts/duality.md#time-and-velocity).

* Phi, CFM -> forward-only IFM: a path ``(p_t(.|c), u_t(.|c))`` becomes its space-time probability current
  ``E_c(z, x) = p_t(x|c) (1, u_t(x|c)/L)`` with ``t = z/L`` (:func:`field_from_path`).
* Psi, forward-only IFM -> CFM, on values: ``u = L E_x / E_z`` (:func:`velocity_from_field`). It divides by ``E_z``,
  which is exactly where "forward-only" is needed: points with ``E_z <= min_ez`` are *not* divided, their velocity
  is set to 0 and they are reported in an ``invalid`` mask (docs/concepts/interaction-fields.md#samplers-and-stopping:
  "guard f_z > 0, count violations").
* The normalised field of a velocity: ``n = (1, u/L) / ||(1, u/L)||``; the IFM regression target is
  ``sqrt(D+1) n`` (:func:`field_from_velocity`, :func:`field_target_from_velocity`).

Round trip (check C4): ``velocity_from_field(*field_from_velocity(u, L), L).velocity == u`` to a few ulps.
Tensors: ``ez`` ``(B,)``, ``ex`` and ``u`` ``(B, *dims)``; pure torch, any dtype and device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_fm.fields import ForwardOnlyField, InteractionField, normalize
from lightning_fm.paths import GaussianPath
from lightning_fm.utils.tensors import pad_like


def t_of_z(z: Tensor | float, L: float) -> Tensor | float:
    """CFM time of the slice ``z``: ``t = z / L``."""
    return z / L


def z_of_t(t: Tensor | float, L: float) -> Tensor | float:
    """Slice of the CFM time ``t``: ``z = t L``."""
    return t * L


def field_from_path(path: GaussianPath, L: float = 1.0) -> ForwardOnlyField:
    """Phi: the forward-only field ``E_c = p_t(x|c) (1, u_t(x|c)/L)``, ``t = z/L``, of a CFM path."""
    return ForwardOnlyField(path, L)


def path_from_field(field: InteractionField) -> GaussianPath:
    """Psi on objects, for the fields of this package that are the current of a known path.

    ``ForwardOnlyField(path, L)`` and ``StrongInteractionField(exact=True)`` give their path back (``Psi o Phi = id``).
    A field that is not forward-only (e.g. ``CoulombField``) has a signed slice density ``E_z``: Psi is undefined
    and a ``ValueError`` says so. The reference-code strong field (``exact=False``) is forward-only but is not the
    exact current of a path (docs/concepts/interaction-fields.md#reference-code-field): use :func:`velocity_from_field`
    on its values instead.
    """
    if not field.forward_only:
        raise ValueError(
            f"{type(field).__name__} is not forward-only: E_z changes sign, so Psi (u = L E_x/E_z) is "
            "undefined and no CFM path reproduces its dynamics (docs/concepts/duality.md#forward-only-models)"
        )
    if getattr(field, "exact", True) is False:
        raise ValueError(
            f"{field!r} is the reference-code field, not the exact current of a path; "
            "use velocity_from_field on its values"
        )
    path = getattr(field, "path", None)
    if not isinstance(path, GaussianPath):
        raise ValueError(f"{type(field).__name__} carries no path; use velocity_from_field on its values")
    return path


@dataclass
class FieldVelocity:
    """Psi on values: ``velocity = L ex / ez`` where valid, 0 where ``invalid`` (``ez <= min_ez``)."""

    velocity: Tensor
    invalid: Tensor

    @property
    def n_invalid(self) -> int:
        """Number of guarded points (``ez <= min_ez``): 0 for the field of a CFM path (check C9)."""
        return int(self.invalid.sum())


def velocity_from_field(ez: Tensor, ex: Tensor, L: float, min_ez: float = 1e-6) -> FieldVelocity:
    """Psi on values: ``u = L ex / ez`` (docs/concepts/duality.md#time-and-velocity, ``dx/dz = E_x/E_z = u/L``).

    Points with ``ez <= min_ez`` (a field that is not forward-only there, or an untrained network) are never
    divided: their velocity is 0 and they are flagged in ``invalid``. ``min_ez`` applies to the field as given:
    for a unit direction or a ``sqrt(D+1)``-scaled target, ``ez`` is ``1/sqrt(1 + ||u||^2/L^2)`` (times the scale),
    so the guard ``1e-6`` admits ``||u||/L`` up to about ``1e6``.
    """
    if ez.shape != ex.shape[:1]:
        raise ValueError(f"ez must have shape ({ex.shape[0]},) to match ex {tuple(ex.shape)}, got {tuple(ez.shape)}")
    invalid = ~(ez > min_ez)  # also catches NaN
    safe = torch.where(invalid, torch.ones_like(ez), ez)
    velocity = (L * ex) / pad_like(safe, ex)
    velocity = torch.where(pad_like(invalid, ex), torch.zeros_like(velocity), velocity)
    return FieldVelocity(velocity=velocity, invalid=invalid)


def field_from_velocity(u: Tensor, L: float, scale: bool = False) -> tuple[Tensor, Tensor]:
    """The unit field direction of a velocity: ``(nz, nx) = (1, u/L) / ||(1, u/L)||``
    (docs/concepts/duality.md#time-and-velocity).

    ``nz`` is ``(B,)``, ``nx`` is shaped like ``u``; ``nz > 0`` always (the field of a velocity is forward-only).
    Overflow-safe for huge ``u/L``. ``scale=True`` multiplies both by ``sqrt(D+1)`` (D = elements of one sample):
    the IFM regression target of :func:`field_target_from_velocity`.
    """
    w = u.flatten(1) / L
    _, nz, nx = normalize(torch.ones_like(w[:, 0]), w)
    nx = nx.reshape(u.shape)
    if scale:
        factor = math.sqrt(u[0].numel() + 1)
        return factor * nz, factor * nx
    return nz, nx


def field_target_from_velocity(u: Tensor, L: float) -> tuple[Tensor, Tensor]:
    """``sqrt(D+1) (1, u/L) / ||(1, u/L)||``: what a forward-only IFM network regresses
    (docs/concepts/interaction-fields.md#regression-target, docs/concepts/duality.md#forward-only-target)."""
    return field_from_velocity(u, L, scale=True)
