"""Present a trained model of one family as a model of the other (docs/concepts/duality.md#time-and-velocity, the maps
on networks).

* :class:`FieldAsVelocity` - any forward-only IFM model (an object with ``field_output(z, x) -> (f_z, f_x)`` and
  ``L``) as a CFM velocity model: ``v(x, t) = L f_x / f_z`` at ``z = t L`` (Psi), with the guard of
  :func:`~lightning_fm.duality.maps.velocity_from_field` (points with ``f_z <= min_fz`` get velocity 0 and are
  counted), sampled in t with :func:`lightning_fm.sampling.integrate`.
* :class:`VelocityAsField` - any CFM model (an object with ``velocity(x, t)``, or a plain callable ``v(x, t)``) as
  a forward-only field model: ``field_output(z, x) = sqrt(D+1) (1, v/L) / ||(1, v/L)||`` at ``t = z/L`` (Phi on
  networks), sampled in z along its lines with :func:`lightning_fm.sampling.integrate_field_lines`.

Both ``sample`` methods return a :class:`~lightning_fm.sampling.SampleResult`. With Euler and the same number of
steps the two samplers give the same points to float precision (check C5): the z-step ``dz`` of the field is the
t-step ``dt = dz/L`` of the velocity. No Lightning import: the wrappers only call the two method names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import Tensor

from lightning_fm.duality.maps import field_target_from_velocity, velocity_from_field
from lightning_fm.sampling import SampleResult, integrate, integrate_field_lines
from lightning_fm.utils.tensors import as_time


def _velocity_fn(model: Any) -> Callable[[Tensor, Tensor], Tensor]:
    if hasattr(model, "velocity"):
        return model.velocity
    if callable(model):  # taken as velocity(x, t) itself (callable() narrows to (...) -> object)
        return cast(Callable[[Tensor, Tensor], Tensor], model)
    raise TypeError(f"{type(model).__name__} has no velocity(x, t) method and is not callable")


class FieldAsVelocity:
    """A forward-only field model seen as a velocity model: ``velocity(x, t) = L f_x / f_z`` at ``z = t L``.

    Args:
        field_model: anything with ``field_output(z (B,), x) -> (f_z (B,), f_x)`` and an attribute ``L``.
        min_fz: the guard of Psi: ``f_z <= min_fz`` is not divided (velocity 0) and counted in ``n_invalid``
            (cumulative over calls; :meth:`reset_counts` clears it); ``last_invalid`` is the ``(B,)`` mask of the
            latest call.
    """

    def __init__(self, field_model: Any, min_fz: float = 1e-6) -> None:
        if not hasattr(field_model, "field_output"):
            raise TypeError(f"{type(field_model).__name__} has no field_output(z, x) method")
        self.field_model = field_model
        self.min_fz = float(min_fz)
        self.n_invalid = 0
        self.n_evaluated = 0
        self.last_invalid: Tensor | None = None

    @property
    def L(self) -> float:
        return float(self.field_model.L)

    def reset_counts(self) -> None:
        self.n_invalid = 0
        self.n_evaluated = 0

    def velocity(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``L f_x / f_z`` at ``(z = t L, x)``; guarded points (``f_z <= min_fz``) give 0 and are counted."""
        t = as_time(t, x)
        f_z, f_x = self.field_model.field_output(t * self.L, x)
        result = velocity_from_field(f_z, f_x, self.L, self.min_fz)
        self.n_invalid += result.n_invalid
        self.n_evaluated += x.shape[0]
        self.last_invalid = result.invalid
        return result.velocity

    @torch.no_grad()
    def sample(
        self,
        x_source: Tensor,
        steps: int = 100,
        method: str = "euler",
        record: bool = False,
        t0: float = 0.0,
        t1: float = 1.0,
        **options: Any,
    ) -> SampleResult:
        """Integrate ``dx/dt = L f_x/f_z`` from ``t0`` to ``t1`` with :func:`lightning_fm.sampling.integrate`
        (``options``: its other settings, e.g. ``atol``).

        ``info["invalid"]``: guarded evaluations (points x stages) during this call; ``info["evaluated"]``: all.
        """
        before_invalid, before_eval = self.n_invalid, self.n_evaluated
        result = integrate(
            lambda t, x: self.velocity(x, t), x_source, t0, t1, method=method, steps=steps, record=record, **options
        )
        result.info = {
            "invalid": float(self.n_invalid - before_invalid),
            "evaluated": float(self.n_evaluated - before_eval),
        }
        return result


class VelocityAsField:
    """A velocity model seen as a forward-only field model (Phi on networks).

    ``field_output(z, x) = sqrt(D+1) (1, v/L) / ||(1, v/L)||`` with ``v = velocity(x, z/L)``; ``f_z > 0`` always,
    so ``forward_only`` is True and the lines never turn back.

    Args:
        velocity_model: anything with ``velocity(x, t)`` (t ``(B,)``), or a callable ``v(x, t)``.
        L: plate distance (the velocity scale: ``dx/dz = v/L``).
    """

    forward_only = True

    def __init__(self, velocity_model: Any, L: float = 1.0) -> None:
        self.velocity_model = velocity_model
        self._velocity = _velocity_fn(velocity_model)
        L = float(L)
        if not L > 0:
            raise ValueError(f"plate distance L must be > 0, got {L}")
        self.L = L

    def field_output(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(f_z (B,), f_x (B, *dims))`` at ``(z, x)``: the normalised field of ``v(x, z/L)`` times sqrt(D+1)."""
        z = as_time(z, x)
        return field_target_from_velocity(self._velocity(x, z / self.L), self.L)

    @torch.no_grad()
    def sample(
        self,
        x_source: Tensor,
        steps: int = 100,
        method: str = "euler",
        record: bool = False,
        eps: float = 0.0,
        **options: Any,
    ) -> SampleResult:
        """Move ``x_source`` from the plate ``z = eps`` to ``z = L`` along the field (``dx/dz = f_x/f_z = v/L``)
        with :func:`lightning_fm.sampling.integrate_field_lines` (``options``: its other settings, e.g. ``z_end``).

        ``eps = 0`` (default) starts exactly on the source plate, like a CFM sampler starting at t = 0; use
        ``eps > 0`` for a velocity that is singular at t = 0. ``times`` are z values.
        """
        return integrate_field_lines(
            self.field_output, x_source, self.L, method=method, steps=steps, eps=eps, record=record, **options
        )
