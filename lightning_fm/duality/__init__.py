"""The duality CFM <-> forward-only IFM, made executable (docs/concepts/duality.md#duality,
docs/concepts/checks.md#checks). Pure torch, no Lightning.

* :mod:`~lightning_fm.duality.maps` - Phi (``field_from_path``), Psi on values (``velocity_from_field``, guarded),
  the normalised field of a velocity (``field_from_velocity``, ``field_target_from_velocity``), ``t_of_z``, ``z_of_t``.
* :mod:`~lightning_fm.duality.wrappers` - ``FieldAsVelocity`` / ``VelocityAsField``: a trained model of one family
  seen as a model of the other, with ``velocity`` / ``field_output`` and ``sample``.
* :mod:`~lightning_fm.duality.gaussian_toy` - ``GaussianToy``: closed-form marginal path and velocity.
* :mod:`~lightning_fm.duality.checks` - checks C1-C13 as functions returning ``CheckResult``; ``run_exact_checks``.
"""

from lightning_fm.duality.checks import (
    CheckResult,
    check_code_field,
    check_divergence,
    check_flux,
    check_forward_only,
    check_learned_consistency,
    check_loss_gap,
    check_poisson_kernel,
    check_push_forward,
    check_round_trip,
    check_slice_marginal,
    check_superposition,
    check_superposition_rate,
    check_trajectory_coincidence,
    default_toy,
    divergence_terms,
    family_quantile,
    format_checks,
    run_exact_checks,
    run_statistical_checks,
    superposition_error,
    toy_lines,
)
from lightning_fm.duality.gaussian_toy import GaussianToy
from lightning_fm.duality.maps import (
    FieldVelocity,
    field_from_path,
    field_from_velocity,
    field_target_from_velocity,
    path_from_field,
    t_of_z,
    velocity_from_field,
    z_of_t,
)
from lightning_fm.duality.wrappers import FieldAsVelocity, VelocityAsField

__all__ = [
    "CheckResult",
    "FieldAsVelocity",
    "FieldVelocity",
    "GaussianToy",
    "VelocityAsField",
    "check_code_field",
    "check_divergence",
    "check_flux",
    "check_forward_only",
    "check_learned_consistency",
    "check_loss_gap",
    "check_poisson_kernel",
    "check_push_forward",
    "check_round_trip",
    "check_slice_marginal",
    "check_superposition",
    "check_superposition_rate",
    "check_trajectory_coincidence",
    "default_toy",
    "divergence_terms",
    "family_quantile",
    "field_from_path",
    "field_from_velocity",
    "field_target_from_velocity",
    "format_checks",
    "path_from_field",
    "run_exact_checks",
    "run_statistical_checks",
    "superposition_error",
    "t_of_z",
    "toy_lines",
    "velocity_from_field",
    "z_of_t",
]
