"""Checks on a trained network and on a module's own path or field (docs/concepts/checks.md#checks), used by the
``DualityCheck`` callback and by the duality experiment. Pure torch: the module is duck-typed (a CFM model has
``velocity(x, t)`` and ``path``; an IFM model has ``field_output(z, x)``, ``field``, ``volume``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from lightning_fm.duality.checks.base import TRAJECTORY_TOL, CheckResult
from lightning_fm.duality.checks.exact import (
    check_forward_only,
    check_poisson_kernel,
    check_round_trip,
    run_exact_checks,
)
from lightning_fm.duality.maps import velocity_from_field
from lightning_fm.duality.wrappers import FieldAsVelocity, VelocityAsField
from lightning_fm.sampling import integrate, integrate_field_lines


def model_family(module: Any) -> str | None:
    """``"cfm"`` (a velocity model with a path), ``"ifm"`` (a field model), or None (nothing to check)."""
    if hasattr(module, "velocity") and hasattr(module, "path") and not hasattr(module, "field_output"):
        return "cfm"
    if hasattr(module, "field_output") and hasattr(module, "field"):
        return "ifm"
    return None


def euler_step_identity(
    velocity_fn, field_fn, z_grid: Tensor, trajectory: Tensor, L: float, name: str, flag_fz: float = 1e-3
) -> CheckResult:
    """C5 on a learned network, one step at a time: from every point ``x_k`` of a recorded sampler path at
    ``z_k = t_k L``, one Euler step in t of ``velocity_fn`` (:func:`lightning_fm.sampling.integrate`, ``dt``) and
    one Euler step in z of ``field_fn`` (:func:`lightning_fm.sampling.integrate_field_lines`, ``dz = L dt``) land
    on the same point (docs/concepts/duality.md#time-and-velocity: the z-Euler step *is* the t-Euler step). Value: the
    largest ``|x_z - x_t| / (1 + max(|x_k|, |x_t|))`` over the points (rounding of ``x + h s`` is relative to the size
    of both terms); tolerance 1e-5 (fp32), 1e-12 (fp64).

    Unlike whole trajectories (where a steep, e.g. untrained, field amplifies rounding), this holds for any network.
    Points where ``f_z <= flag_fz`` (``v = L f_x/f_z`` huge or undefined: not forward-only there, C9) are not held to
    the tolerance; they are counted in ``details["excluded"]``.
    """
    k_steps, n = trajectory.shape[0] - 1, trajectory.shape[1]
    worst, worst_abs, excluded = 0.0, 0.0, 0
    with torch.no_grad():
        for k in range(k_steps):
            x, z0, z1 = trajectory[k], float(z_grid[k]), min(float(z_grid[k + 1]), L)
            fz, _ = field_fn(torch.full((n,), z0, dtype=x.dtype, device=x.device), x)
            xz = integrate_field_lines(field_fn, x, L, method="euler", steps=1, eps=z0, z_end=z1).x
            xt = integrate(lambda t, y: velocity_fn(y, t), x, z0 / L, z1 / L, method="euler", steps=1).x
            keep = (fz > flag_fz) & torch.isfinite(xz).flatten(1).all(1) & torch.isfinite(xt).flatten(1).all(1)
            excluded += int((~keep).sum())
            if bool(keep.any()):
                err = (xz[keep] - xt[keep]).flatten(1).abs().amax(1)
                size = 1 + torch.maximum(x[keep].flatten(1).abs().amax(1), xt[keep].flatten(1).abs().amax(1))
                worst = max(worst, float((err / size).max()))
                worst_abs = max(worst_abs, float(err.max()))
    value = worst
    tol = TRAJECTORY_TOL.get(trajectory.dtype, 1e-5)
    return CheckResult(
        name,
        value,
        tol,
        bool(value <= tol),
        "exact",
        {"max_abs": worst_abs, "excluded": excluded, "points": k_steps * n},
    )


def guard_fraction(field_fn, z: Tensor, x: Tensor, name: str) -> CheckResult:
    """C9 diagnostic on a learned field: the fraction of points ``(z, x)`` with ``f_z <= 0``."""
    result = check_forward_only(field_fn, z, x, expect_forward_only=None)
    return replace(result, name=name)


def learned_cfm_checks(
    module: Any,
    x0: Tensor,
    x1: Tensor,
    L: float,
    steps: int = 20,
    generator: torch.Generator | None = None,
    step_identity: bool = True,
) -> list[CheckResult]:
    """C4, C9 and (``step_identity``) C5 on a velocity model: points ``x_t ~ p_t(.|x0_i, x1_i)`` of its path
    (pairs as given), C5 along its ``steps``-step Euler trajectories from ``x0``."""
    n, dtype, device = x0.shape[0], x0.dtype, x0.device
    t = torch.rand(n, generator=generator, dtype=dtype).to(device)
    noise = torch.randn(x0.shape, generator=generator, dtype=dtype).to(device)
    path = module.path
    with torch.no_grad():
        xt = path.sample(x0, x1, t, noise=None if path.requires_gaussian_source else noise).xt
        v = module.velocity(xt, t)
    dual = VelocityAsField(module, L)
    results = [
        replace(
            check_round_trip(v, L),
            name="C4 round trip, learned v (fp32)" if v.dtype == torch.float32 else "C4 round trip, learned v",
        )
    ]
    guard = check_forward_only(dual.field_output, t * L, xt, expect_forward_only=True)
    results.append(replace(guard, name="C9 guard of VelocityAsField(learned v)"))
    if not step_identity:
        return results
    with torch.no_grad():
        run = integrate(lambda tt, xx: module.velocity(xx, tt), x0, 0.0, 1.0, method="euler", steps=steps, record=True)
    results.append(
        euler_step_identity(
            module.velocity,
            dual.field_output,
            run.recorded()[0] * L,
            run.recorded()[1],
            L,
            "C5 learned v: each Euler step in t = in z",
        )
    )
    return results


def _sampler_lines(module: Any, x0: Tensor, L: float, steps: int):
    """The z-Euler lines of the learned field from ``x0`` (recorded), and the points ``(z, x)`` where the sampler
    evaluated the field (every recorded point but the last)."""
    with torch.no_grad():
        lines = integrate_field_lines(module.field_output, x0, L, method="euler", steps=steps, eps=0.0, record=True)
    times, trajectory = lines.recorded()
    z = times[:-1, None].expand(-1, x0.shape[0]).reshape(-1)
    return lines, z, trajectory[:-1].reshape(-1, *x0.shape[1:])


def learned_ifm_checks(
    module: Any,
    x0: Tensor,
    x1: Tensor,
    L: float,
    steps: int = 20,
    generator: torch.Generator | None = None,
    step_identity: bool = True,
) -> list[CheckResult]:
    """C9 guard (training points, sampler lines); for a forward-only field also C4 and C5 on ``FieldAsVelocity``."""
    with torch.no_grad():
        z, x = module.volume(x0.cpu(), x1.cpu(), L, generator=generator)
        z, x = z.to(x0.device), x.to(x0.device)
        fz, fx = module.field_output(z, x)
    results = [guard_fraction(module.field_output, z, x, "C9 learned guard f_z<=0 (training points)")]
    lines, zs, xs = _sampler_lines(module, x0, L, steps)
    results.append(guard_fraction(module.field_output, zs, xs, "C9 learned guard f_z<=0 (sampler lines)"))
    if getattr(module.field, "forward_only", False):
        psi = velocity_from_field(fz, fx, L, min_ez=1e-3)
        round_trip = check_round_trip(psi.velocity[~psi.invalid], L) if bool((~psi.invalid).any()) else None
        if round_trip is not None:
            round_trip.details["guarded"] = psi.n_invalid
            results.append(
                replace(
                    round_trip,
                    name="C4 round trip, learned f (fp32)" if fx.dtype == torch.float32 else "C4 round trip, learned f",
                )
            )
        if step_identity:
            results.append(
                euler_step_identity(
                    FieldAsVelocity(module).velocity,
                    module.field_output,
                    *lines.recorded(),
                    L,
                    "C5 learned f: each Euler step in z = in t",
                )
            )
    return results


def behind_plates(x: Tensor, L: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Points behind the two plates, near the data: ``z ~ U(-L/2, 0)`` for half of ``x``, ``U(L, 3L/2)`` for the
    other half (``x`` as given)."""
    n = x.shape[0]
    u = 0.5 * L * torch.rand(n, generator=generator, dtype=x.dtype).to(x.device)
    z = torch.where(torch.arange(n, device=x.device) % 2 == 0, -u, L + u)
    return z, x


def field_checks(
    module: Any,
    x0: Tensor,
    x1: Tensor,
    L: float,
    dim: int,
    n_points: int = 256,
    generator: torch.Generator | None = None,
) -> list[CheckResult]:
    """The identities of the module's path or field, which do not depend on the weights (computed once).

    A path or forward-only field that is the current of a path with ``sigma_t > 0``: :func:`run_exact_checks`
    (on the Gaussian toy of dimension ``dim``). A path with ``sigma = 0`` (a line current, whose density is a
    delta): the round trip on its conditional velocities and C12. A forward-only field that is not a path's current
    (the reference-code strong field): C9 on the batch. A field that is not forward-only (EFM): C9 behind the
    plates (diagnostic, > 0 expected) and C12.
    """
    target = module.path if model_family(module) == "cfm" else module.field
    if model_family(module) == "ifm" and not getattr(target, "forward_only", False):
        pts = behind_plates(x0.double(), L, generator)
        res = check_forward_only(target, *pts, x0.double(), x1.double(), expect_forward_only=False)
        return [replace(res, name="C9 backward points behind the plates (exact field)"), check_poisson_kernel()]
    try:
        return run_exact_checks(
            target, None if model_family(module) == "ifm" else L, D=dim, n_points=n_points, n_pairs=min(64, n_points)
        )
    except ValueError:
        pass
    path = getattr(target, "path", None) if model_family(module) == "ifm" else target
    results = []
    if path is not None:
        t = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64)
        u = path.velocity(x0.double(), t, x0.double(), x1.double())
        results.append(check_round_trip(u, L))
    if model_family(module) == "ifm":
        z = L * (0.01 + 0.98 * torch.rand(x0.shape[0], generator=generator, dtype=torch.float64))
        xd = x0.double() + (z / L)[:, None] * (x1.double() - x0.double()).flatten(1).reshape(x0.shape)
        results.append(check_forward_only(target, z, xd, x0.double(), x1.double()))
    results.append(check_poisson_kernel())
    return results
