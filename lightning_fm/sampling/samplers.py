"""Samplers as components: configured like paths and couplings (``model.sampler`` in YAML, a spec in checkpoints),
called by the modules with the function to follow. Keyword overrides per call (``sample(x, steps=20)``) replace
the configured options for that call only.

* :class:`ODESampler` - ``dx/dt = v(x, t)`` from t = 0 to t = 1 (CFM, and any forward-only model read as a
  velocity), :func:`lightning_fm.sampling.ode.integrate`.
* :class:`FieldLineSampler` - along the lines of a field from the plate z = 0 to z = L, continued by arclength
  beyond the target plate for fields that are not forward-only (IFM, EFM),
  :func:`lightning_fm.sampling.field_lines.integrate_field_lines`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from lightning_fm.sampling.field_lines import NONPOSITIVE_FZ_RULES, FieldFn, integrate_field_lines
from lightning_fm.sampling.ode import check_solver_options, integrate
from lightning_fm.sampling.result import SampleResult
from lightning_fm.utils.spec import Buildable, describe


class Sampler(Buildable):
    """Base: the configured options are the recorded init args (the one copy of them), per-call overrides apply."""

    def options(self, **overrides: Any) -> dict[str, Any]:
        """The configured options with ``overrides`` applied; an unknown option raises, naming it."""
        options = self.init_args
        unknown = sorted(set(overrides) - set(options))
        if unknown:
            raise TypeError(f"{type(self).__name__} has no option {unknown}; options: {sorted(options)}")
        options.update({k: v for k, v in overrides.items() if v is not None})
        return options

    def __repr__(self) -> str:
        return describe(self)


class ODESampler(Sampler):
    """Integrate ``dx/dt = v(x, t)`` from ``x(0) = x_source`` to t = 1 and count the evaluations of v.

    Args:
        method: ``euler``, ``midpoint``, ``heun``, ``rk4`` (fixed step ``1/steps``) or ``dopri5`` (adaptive).
        steps: fixed-step steps (NFE = steps x stages); for dopri5 only the recorded grid.
        atol, rtol: dopri5 tolerances (torchcfm's CIFAR-10 FID: 1e-5, 1e-5). max_steps: dopri5's step bound.
    """

    def __init__(
        self, method: str = "euler", steps: int = 100, atol: float = 1e-5, rtol: float = 1e-5, max_steps: int = 10_000
    ) -> None:
        check_solver_options(method, steps, atol, rtol, max_steps, owner="ODESampler")

    def __call__(
        self,
        velocity: Callable[[Tensor, Tensor], Tensor],
        x_source: Tensor,
        record: bool | int = False,
        t0: float = 0.0,
        t1: float = 1.0,
        **overrides: Any,
    ) -> SampleResult:
        """``velocity(t (B,), x (B, *dims))``; ``record``: trajectories of all (True) or of the first k lines."""
        return integrate(velocity, x_source, t0, t1, record=record, **self.options(**overrides))


class FieldLineSampler(Sampler):
    """Move points from the source plate along a field's lines to the target plate, ``dx/dz = f_x / f_z``
    (docs/concepts/interaction-fields.md#field-line-sampling), and continue the lines that cross the target plate by
    arclength until they return (docs/concepts/interaction-fields.md#stopping).

    Args:
        method, steps, atol, rtol: the z-integration (as :class:`ODESampler`, in z from ``eps`` to L).
        eps: start height (0: exactly on the plate, as CFM starts at t = 0; a learned field is smooth there).
        continue_outside: continue lines past the target plate; None: when the field is not forward-only.
        arc_step, max_arc_steps: the arclength step of that continuation and its cap.
        return_tol, cross_probe, fz_min_rel: how crossing and return are decided for a learned EFM field and the
            phase-1 slope bound (:func:`lightning_fm.sampling.field_lines.integrate_field_lines`).
        nonpositive_fz: the rule where a learned ``f_z <= 0`` (counted in ``info["guarded"]``, lines in
            ``info["backward"]``): ``"hold"`` (slope 0, Psi's guard), ``"clamp"`` (``f_z`` raised to a floor); None:
            ``"hold"`` for a forward-only field, ``"clamp"`` otherwise.
        max_radius: a line whose ``||x||`` exceeds it is stopped there and flagged as not returned
            (docs/concepts/interaction-fields.md#lines-astray); None: no bound.
    """

    def __init__(
        self,
        method: str = "euler",
        steps: int = 100,
        eps: float = 0.0,
        continue_outside: bool | None = None,
        arc_step: float = 0.05,
        max_arc_steps: int = 2000,
        return_tol: float = 0.05,
        cross_probe: float = 0.0,
        fz_min_rel: float = 0.0,
        atol: float = 1e-5,
        rtol: float = 1e-5,
        nonpositive_fz: str | None = None,
        max_radius: float | None = None,
    ) -> None:
        check_solver_options(method, steps, atol, rtol, owner="FieldLineSampler")
        if max_radius is not None and not max_radius > 0:
            raise ValueError(f"FieldLineSampler.max_radius must be > 0 or null, got {max_radius}")
        if not (arc_step > 0 and max_arc_steps >= 0 and return_tol >= 0 and cross_probe >= 0 and eps >= 0):
            raise ValueError(
                "FieldLineSampler needs arc_step > 0, max_arc_steps >= 0, return_tol >= 0, "
                f"cross_probe >= 0, eps >= 0; got {arc_step}, {max_arc_steps}, {return_tol}, "
                f"{cross_probe}, {eps}"
            )
        if not 0 <= fz_min_rel < 1:
            raise ValueError(f"FieldLineSampler.fz_min_rel must be in [0, 1), got {fz_min_rel}")
        if nonpositive_fz is not None and nonpositive_fz not in NONPOSITIVE_FZ_RULES:
            raise ValueError(
                f"FieldLineSampler.nonpositive_fz must be one of {NONPOSITIVE_FZ_RULES} or null, got {nonpositive_fz!r}"
            )

    def __call__(
        self,
        field_fn: FieldFn,
        x_source: Tensor,
        L: float,
        record: bool | int = False,
        forward_only: bool = True,
        **overrides: Any,
    ) -> SampleResult:
        """``field_fn(z (B,), x) -> (f_z, f_x)``; ``forward_only``: the field's lines never leave the slab (decides
        ``continue_outside`` when it is None)."""
        options = self.options(**overrides)
        if options["continue_outside"] is None:
            options["continue_outside"] = not forward_only
        if options["nonpositive_fz"] is None:
            options["nonpositive_fz"] = "hold" if forward_only else "clamp"
        return integrate_field_lines(field_fn, x_source, L, record=record, **options)
