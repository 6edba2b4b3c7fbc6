"""Sampling: ODE solvers in t (:mod:`.ode`), field lines in z and by arclength (:mod:`.field_lines`,
:mod:`.arclength`), the samplers as configurable components (:mod:`.samplers`) and their one result type
(:class:`SampleResult`). Pure torch, no Lightning; the only stepping loops of the package live here."""

from lightning_fm.sampling.arclength import ArclengthLines, follow_arclength, unit_vector
from lightning_fm.sampling.field_lines import integrate_field_lines
from lightning_fm.sampling.ode import FIXED_STEP_STAGES, METHODS, integrate, step
from lightning_fm.sampling.result import LinesNotReturnedWarning, SampleResult, recorded_lines
from lightning_fm.sampling.samplers import FieldLineSampler, ODESampler, Sampler

__all__ = [
    "FIXED_STEP_STAGES",
    "METHODS",
    "ArclengthLines",
    "FieldLineSampler",
    "ODESampler",
    "SampleResult",
    "LinesNotReturnedWarning",
    "Sampler",
    "follow_arclength",
    "integrate",
    "integrate_field_lines",
    "recorded_lines",
    "step",
    "unit_vector",
]
