"""The numerical checks C1-C13 (docs/concepts/checks.md#checks), as plain functions returning :class:`CheckResult`.

Kinds: ``"exact"`` - an identity that holds to float precision (C1, C2 by quadrature, C4, C5, C9 for a forward-only
field, C12); ``"statistical"`` - holds in expectation or in a limit, tested against a Monte-Carlo standard error
(C2 by Monte Carlo, C3, C6, C7, C8); ``"diagnostic"`` - reported, with an indicative tolerance (C9 for learned or
non-forward-only fields, C11, C13). Tolerances (docs/concepts/checks.md#tolerances):

==== ================================================= ======================================================
C1   ``max |div E| / (|d_z E_z| + sum_d |d_xd E_xd|)`` 1e-10 (fp64), 1e-4 (fp32)
C2   ``max_z |int E_z(z, x) dx - 1|``                  1e-10 (quadrature, D <= 2); 3 s.e. (importance MC)
C3   ``mean (1 - cos)`` minibatch vs closed form       4/B; rate: slope -1 +- 0.3
C4   ``max ||v -> f -> v - v|| / ||v||``               1e-13 (fp64), 1e-6 (fp32), for ``||v||/L <= 1e3``
C5   ``max |x_z-Euler - x_t-Euler| / (1 + max |x|)``   1e-12 (fp64), 1e-5 (fp32)
C6   push-forward moments vs ``p_1``                   3 s.e. (family-wise over 2D moments) + O(dz) allowance
C7   slice moments vs ``p_{z/L}`` (z-scores)           3 sigma (family-wise over 2D moments)
C8   ``|gap(theta_a) - gap(theta_b)|``                 3 s.e. (common random numbers)
C9   fraction of ``f_z <= 0``                          0 for a forward-only field; > 0 expected for EFM
C11  ``mean (1 - cos)`` code field vs exact current    ``(|x1 - x0|/L)^4`` (angle O((|x1-x0|/L)^2))
C12  ``|int 2 E_z dx - 1|`` one charge                 1e-10 (Gauss-Legendre in ``r = z tan(theta)``)
C13  rel. L2 of ``v_theta`` vs ``L f_x/f_z``; W2       0.1 and 0.1 by default (no exact tolerance)
==== ================================================= ======================================================

:func:`run_exact_checks` (:mod:`.exact`: C1, C2, C4, C5, C9, C11, C12) runs C1 (fp64, fp32), C2, C4 (fp64, fp32),
C5, C9 and C12 for one path or forward-only field; :func:`run_statistical_checks` (:mod:`.statistical`: C3, C6, C7,
C8, C13) runs C3, C6, C7, C8 on the Gaussian toy; :mod:`.learned` holds the checks of a trained network (C4, C5 step
by step, C9 guards) and of a module's own path or field; :class:`CheckResult`, the tolerances and
:func:`format_checks` are in :mod:`.base`. This package re-exports all of them.
"""

from lightning_fm.duality.checks.base import (  # noqa: F401
    DIVERGENCE_TOL,
    QUADRATURE_TOL,
    ROUND_TRIP_TOL,
    TRAJECTORY_TOL,
    CheckResult,
    default_toy,
    format_checks,
)
from lightning_fm.duality.checks.exact import (  # noqa: F401
    check_code_field,
    check_divergence,
    check_flux,
    check_forward_only,
    check_poisson_kernel,
    check_round_trip,
    check_trajectory_coincidence,
    divergence_terms,
    run_exact_checks,
)
from lightning_fm.duality.checks.learned import (  # noqa: F401
    euler_step_identity,
    field_checks,
    guard_fraction,
    learned_cfm_checks,
    learned_ifm_checks,
    model_family,
)
from lightning_fm.duality.checks.statistical import (  # noqa: F401
    check_learned_consistency,
    check_loss_gap,
    check_push_forward,
    check_slice_marginal,
    check_superposition,
    check_superposition_rate,
    family_quantile,
    run_statistical_checks,
    superposition_error,
    toy_lines,
)
