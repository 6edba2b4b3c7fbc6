"""The exact checks C1, C2, C4, C5, C9, C11, C12 (docs/concepts/checks.md#checks) and :func:`run_exact_checks`.

Exact: an identity that holds to float precision (C1, C2 by quadrature, C4, C5, C9 for a forward-only field, C12);
C2 by Monte Carlo is statistical, C9 for a non-forward-only field and C11 are diagnostics. Tolerances: the table in
:mod:`~lightning_fm.duality.checks`. Pure torch (+ numpy for Gauss-Legendre nodes), CPU, float64 unless stated.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_fm.duality.checks.base import (
    DIVERGENCE_TOL,
    QUADRATURE_TOL,
    ROUND_TRIP_TOL,
    TRAJECTORY_TOL,
    CheckResult,
    _dtype_name,
    _result,
    _setup,
    default_toy,
)
from lightning_fm.duality.maps import field_from_velocity, velocity_from_field
from lightning_fm.duality.wrappers import VelocityAsField, _velocity_fn
from lightning_fm.fields import CoulombField, InteractionField, StrongInteractionField
from lightning_fm.paths import GaussianPath
from lightning_fm.utils.tensors import as_time


# -- C1: divergence ------------------------------------------------------------------------------------------
def divergence_terms(field_: InteractionField, z: Tensor, x: Tensor, x0: Tensor, x1: Tensor) -> Tensor:
    """``(B, 1 + D)``: ``d_z E_z`` and ``d_{x_d} E_{x,d}`` of pair i's field at point i, by autograd.

    ``pair_field`` is point-separable (point i depends on pair i only), so one backward pass of ``sum_i`` per
    component gives all points' partial derivatives; D + 1 passes in all.
    """
    z = as_time(z, x).detach().clone().requires_grad_(True)
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        ez, ex = field_.pair_field(z, x, x0, x1)
        ex = ex.flatten(1)
        dim = ex.shape[1]
        (dz,) = torch.autograd.grad(ez.sum(), z, retain_graph=True)
        terms = [dz]
        for d in range(dim):
            (gx,) = torch.autograd.grad(ex[:, d].sum(), x, retain_graph=d < dim - 1)
            terms.append(gx.flatten(1)[:, d])
    return torch.stack(terms, 1).detach()


def check_divergence(
    field_: InteractionField, z: Tensor, x: Tensor, x0: Tensor, x1: Tensor, tolerance: float | None = None
) -> CheckResult:
    """C1 (exact): the pair field is divergence-free, ``d_z E_z + grad_x . E_x = 0``
    (docs/concepts/duality.md#forward-only-fields, (I1)).

    Autograd in x's dtype; the value is the largest cancellation ratio over the points,
    ``|d_z E_z + sum_d d_xd E_xd| / (|d_z E_z| + sum_d |d_xd E_xd|)`` (points where every term is 0 count as 0).
    Tolerance: 1e-10 in fp64, 1e-4 in fp32 (docs/concepts/checks.md#c1). Points must lie strictly between the plates.
    """
    terms = divergence_terms(field_, z, x, x0, x1)
    scale = terms.abs().sum(1)
    ratio = terms.sum(1).abs() / scale.clamp_min(torch.finfo(terms.dtype).tiny)
    ratio = torch.where(scale > 0, ratio, torch.zeros_like(ratio))
    tol = DIVERGENCE_TOL.get(x.dtype, 1e-4) if tolerance is None else tolerance
    return _result(
        f"C1 divergence ({_dtype_name(x.dtype)})",
        ratio.max(),
        tol,
        "exact",
        mean=float(ratio.mean()),
        n_points=x.shape[0],
    )


# -- C2: unit flux per slice ---------------------------------------------------------------------------------
def _window(field_: InteractionField, x0: Tensor, x1: Tensor, t: float) -> tuple[Tensor, float]:
    path = getattr(field_, "path", None)
    if not isinstance(path, GaussianPath):
        raise ValueError("check_flux needs `center` and `width` for a field without a path")
    tt = torch.full((1,), t, dtype=x0.dtype)
    return path.mean(x0, x1, tt)[0], float(path.std(tt)[0])


def check_flux(
    field_: InteractionField,
    x0: Tensor,
    x1: Tensor,
    z_values: Sequence[float],
    method: str = "auto",
    half_width: float = 12.0,
    n_grid: int | None = None,
    n_mc: int = 20000,
    n_se: float = 3.0,
    center: Tensor | None = None,
    width: float | None = None,
    generator: torch.Generator | None = None,
) -> CheckResult:
    """C2: unit flux through every slice, ``int E_z(z, x) dx = 1`` for one pair ``x0, x1`` ``(1, D)``
    (docs/concepts/duality.md#forward-only-fields, (I2)).

    ``quadrature`` (default for D <= 2, exact): trapezoid rule on the box ``center +- half_width * width`` (the
    path's mean and std at ``t = z/L``), ``n_grid`` nodes per axis (20001 for D = 1, 601 for D = 2); for a Gaussian
    slice density the trapezoid rule converges geometrically and 12 widths cut ``e^{-72}``: tolerance 1e-10.
    ``mc`` (default for D > 2, statistical): importance sampling from ``q = N(center, (1.25 width)^2 I)``,
    ``int E_z = E_q[E_z/q]``; passes if every slice is within ``n_se`` standard errors of 1 (value: the largest
    ``|I - 1|``, tolerance: ``n_se`` times the largest standard error).
    """
    x0, x1 = x0.reshape(1, -1), x1.reshape(1, -1)
    dim = x0.shape[1]
    method = ("quadrature" if dim <= 2 else "mc") if method == "auto" else method
    L = field_.L
    if (center is None) != (width is None):
        raise ValueError("check_flux takes `center` and `width` together (or neither: the path's mean and std)")
    errors, ses, fluxes = [], [], []
    for zz in z_values:
        c, w = (
            (center.reshape(-1).to(x0.dtype), float(width))
            if center is not None and width is not None
            else _window(field_, x0, x1, zz / L)
        )
        if method == "quadrature":
            if dim > 2:
                raise ValueError("quadrature flux is for D <= 2; use method='mc'")
            n = n_grid or (20001 if dim == 1 else 601)
            axis = torch.linspace(-half_width * w, half_width * w, n, dtype=x0.dtype)
            grids = torch.meshgrid(*([axis] * dim), indexing="ij")
            pts = torch.stack([g.reshape(-1) for g in grids], 1) + c
            ez, _ = field_.pair_field(
                torch.full((pts.shape[0],), zz, dtype=x0.dtype), pts, x0.expand_as(pts), x1.expand_as(pts)
            )
            vals = ez.reshape(*([n] * dim))
            for _ in range(dim):
                vals = torch.trapezoid(vals, axis, dim=0)
            flux, se = float(vals), 0.0
        elif method == "mc":
            s = 1.25 * w
            eps = torch.randn(n_mc, dim, generator=generator, dtype=x0.dtype)
            pts = c + s * eps
            log_q = -0.5 * eps.square().sum(1) - dim * math.log(s) - 0.5 * dim * math.log(2 * math.pi)
            ez, _ = field_.pair_field(
                torch.full((n_mc,), zz, dtype=x0.dtype), pts, x0.expand_as(pts), x1.expand_as(pts)
            )
            ratio = ez / torch.exp(log_q)
            flux, se = float(ratio.mean()), float(ratio.std() / math.sqrt(n_mc))
        else:
            raise ValueError(f"unknown flux method {method!r}: 'auto', 'quadrature' or 'mc'")
        fluxes.append(flux)
        errors.append(abs(flux - 1))
        ses.append(se)
    if method == "quadrature":
        return _result("C2 unit flux (quadrature)", max(errors), QUADRATURE_TOL, "exact", fluxes=fluxes)
    return _result("C2 unit flux (MC)", max(errors), n_se * max(ses), "statistical", fluxes=fluxes, standard_errors=ses)


# -- C4: round trip ------------------------------------------------------------------------------------------
def check_round_trip(u: Tensor, L: float, tolerance: float | None = None, flag_fz: float = 1e-3) -> CheckResult:
    """C4 (exact): ``v -> f = (1, v/L)/||.|| -> L f_x/f_z`` returns ``v`` (docs/concepts/duality.md#time-and-velocity).

    Value: ``max ||v' - v|| / ||v||`` (absolute where ``v = 0``). Tolerance 1e-13 (fp64), 1e-6 (fp32) while
    ``||v||/L <= 1e3``; points with ``f_z < flag_fz`` (``||v||/L`` above ~1e3) are counted in ``details``
    (``flagged``) and not held to the tolerance. Also reports the reverse ``f -> v -> f`` error.
    """
    nz, nx = field_from_velocity(u, L)
    back = velocity_from_field(nz, nx, L)
    norm = u.flatten(1).norm(dim=1)
    err = (back.velocity - u).flatten(1).norm(dim=1) / torch.where(norm > 0, norm, torch.ones_like(norm))
    flagged = nz < flag_fz
    nz2, nx2 = field_from_velocity(back.velocity, L)
    reverse = ((nz2 - nz).abs() + (nx2 - nx).flatten(1).norm(dim=1)).max()
    tol = ROUND_TRIP_TOL.get(u.dtype, 1e-6) if tolerance is None else tolerance
    value = err[~flagged].max() if bool((~flagged).any()) else torch.zeros(())
    return _result(
        f"C4 round trip v->f->v ({_dtype_name(u.dtype)})",
        value,
        tol,
        "exact",
        flagged=int(flagged.sum()),
        invalid=back.n_invalid,
        reverse=float(reverse),
    )


# -- C5: trajectories coincide -------------------------------------------------------------------------------
def check_trajectory_coincidence(
    velocity_model: Any,
    x_source: Tensor,
    L: float,
    steps: int = 100,
    method: str = "euler",
    t0: float = 0.0,
    field_fn: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None,
    tolerance: float | None = None,
) -> CheckResult:
    """C5 (exact): field lines stepped in z (step ``dz``) = CFM trajectories stepped in t (``dt = dz/L``).

    t side: :func:`lightning_fm.sampling.ode.integrate` of ``velocity(x, t)`` from ``t0`` to 1. z side:
    :func:`lightning_fm.sampling.field_lines.integrate_field_lines` of ``field_fn`` (default: the field of the velocity,
    :class:`VelocityAsField`) from ``z = t0 L`` to L. Value: ``max |x_z - x_t| / (1 + max |x_t|)``; tolerance
    1e-12 (fp64), 1e-5 (fp32): only rounding separates them (docs/concepts/checks.md#c5).
    """
    from lightning_fm.sampling.field_lines import integrate_field_lines
    from lightning_fm.sampling.ode import integrate

    v = _velocity_fn(velocity_model)
    field_fn = VelocityAsField(v, L).field_output if field_fn is None else field_fn
    with torch.no_grad():
        xt = integrate(lambda t, x: v(x, t), x_source, t0, 1.0, method=method, steps=steps).x
        xz = integrate_field_lines(field_fn, x_source, L, method=method, steps=steps, eps=t0 * L).x
    value = (xz - xt).abs().max() / (1 + xt.abs().max())
    tol = TRAJECTORY_TOL.get(x_source.dtype, 1e-5) if tolerance is None else tolerance
    return _result(
        f"C5 trajectories ({method}, {_dtype_name(x_source.dtype)})",
        value,
        tol,
        "exact",
        max_abs=float((xz - xt).abs().max()),
        steps=steps,
    )


# -- C9: forward-only guard ----------------------------------------------------------------------------------
def check_forward_only(
    field_: InteractionField | Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
    z: Tensor,
    x: Tensor,
    x0: Tensor | None = None,
    x1: Tensor | None = None,
    expect_forward_only: bool | None = None,
) -> CheckResult:
    """C9: the fraction of points where the field points backward, ``f_z <= 0``
    (docs/concepts/interaction-fields.md#samplers-and-stopping, docs/concepts/checks.md#c9).

    ``field_`` is an :class:`InteractionField` (its superposition over the pairs ``x0, x1`` is evaluated) or any
    ``field_fn(z, x) -> (f_z, f_x)`` (a learned model's ``field_output``). ``expect_forward_only`` (default: the
    field's ``forward_only`` flag, or None for a callable) sets the verdict: True - exact, passes iff the fraction
    is 0 (the field of a CFM path); False - diagnostic, passes iff the fraction is > 0 (EFM behind the plates:
    not a CFM); None - diagnostic, always passes (a learned net: just the count).
    """
    with torch.no_grad():
        if isinstance(field_, InteractionField):
            if expect_forward_only is None:
                expect_forward_only = field_.forward_only
            if x0 is None or x1 is None:
                raise ValueError("check_forward_only of an InteractionField needs its charges x0 and x1")
            fz, _ = field_.direction(z, x, x0, x1)
        else:
            fz, _ = field_(as_time(z, x), x)
    fraction = float((~(fz > 0)).float().mean())
    count = int((~(fz > 0)).sum())
    if expect_forward_only:
        return _result("C9 forward-only guard", fraction, 0.0, "exact", count=count)
    if expect_forward_only is None:
        return CheckResult("C9 forward-only guard", fraction, 0.0, True, "diagnostic", {"count": count})
    return CheckResult("C9 backward points", fraction, 0.0, fraction > 0, "diagnostic", {"count": count})


# -- C11: reference-code strong field vs exact current -------------------------------------------------------
def check_code_field(field_: StrongInteractionField, z: Tensor, x: Tensor, x0: Tensor, x1: Tensor) -> CheckResult:
    """C11 (diagnostic): mean ``1 - cos`` between the reference code's strong-interaction pair field
    (``exact=False``) and the exact sine-bridge current, pair i at point i
    (docs/concepts/interaction-fields.md#reference-code-field). The angle is O((|x1 - x0|/L)^2), so ``1 - cos`` is
    O((|x1 - x0|/L)^4): tolerance ``min(2, mean((|x1-x0|/L)^4))`` (reference: 1.4e-7 at 0.05, 1.2e-3 at 0.5, 3.6e-2 at
    1.5, 0.16 at 5)."""
    exact = StrongInteractionField(field_.L, field_.scale, exact=True, ramp=field_.path.ramp)
    code = StrongInteractionField(field_.L, field_.scale, exact=False, ramp=field_.path.ramp)

    def unit(pair):
        ez, ex = pair
        e = torch.cat([ez[:, None], ex.flatten(1)], 1)
        return e / e.norm(dim=1, keepdim=True)

    cos = (unit(code.pair_field(z, x, x0, x1)) * unit(exact.pair_field(z, x, x0, x1))).sum(1)
    ratio = (x1 - x0).flatten(1).norm(dim=1) / field_.L
    err = 1 - cos
    return _result(
        "C11 code field vs exact current",
        err.mean(),
        min(2.0, float(ratio.pow(4).mean())),
        "diagnostic",
        max=float(err.max()),
        delta_over_L=float(ratio.mean()),
    )


# -- C12: Poisson kernel normalisation -----------------------------------------------------------------------
def check_poisson_kernel(
    dims: Sequence[int] = (1, 2, 3, 8, 32), z_values: Sequence[float] = (0.01, 1.0, 50.0), n_nodes: int = 96
) -> CheckResult:
    """C12 (exact): one unit charge at the origin of ``R^{D+1}`` sends half its flux up: ``int 2 E_z(z, x) dx = 1``
    with ``2 E_z = (2/S_D) z / (||x||^2 + z^2)^{(D+1)/2}`` (the PFGM Poisson kernel; D = 1: Cauchy).

    ``E_z`` is :meth:`CoulombField.kernel` (the library's normalisation). The heavy tail is integrated exactly
    with the radial substitution ``r = z tan(theta)``:
    ``int = S_{D-1} int_0^{pi/2} (z tan th)^{D-1} 2 E_z(z, z tan th) z sec^2 th dth``, whose integrand is
    ``(2 S_{D-1}/S_D) sin^{D-1} th``, by Gauss-Legendre with ``n_nodes`` nodes (fp64). Tolerance 1e-10.
    """
    nodes, weights = np.polynomial.legendre.leggauss(n_nodes)
    theta = torch.as_tensor((nodes + 1) * math.pi / 4, dtype=torch.float64)
    w = torch.as_tensor(weights * math.pi / 4, dtype=torch.float64)
    kernel = CoulombField(1.0).kernel
    errors, values = [], {}
    for D in dims:
        log_s = math.log(2) + 0.5 * D * math.log(math.pi) - math.lgamma(0.5 * D)  # log S_{D-1}, independently
        for zz in z_values:
            r = zz * torch.tan(theta)
            ux = torch.zeros(len(r), D, dtype=torch.float64)
            ux[:, 0] = r
            ez, _ = kernel(torch.full_like(r, zz), ux)
            integrand = math.exp(log_s) * r.pow(D - 1) * 2 * ez * zz / torch.cos(theta).square()
            total = float((w * integrand).sum())
            values[f"D={D},z={zz}"] = total
            errors.append(abs(total - 1))
    return _result("C12 Poisson kernel normalisation", max(errors), QUADRATURE_TOL, "exact", integrals=values)


# -- drivers -------------------------------------------------------------------------------------------------
def run_exact_checks(
    path_or_field: GaussianPath | InteractionField,
    L: float | None = None,
    D: int = 2,
    n_points: int = 256,
    n_pairs: int = 64,
    steps: int = 50,
    seed: int = 0,
) -> list[CheckResult]:
    """All exact checks for one path (through Phi) or one forward-only field that is a path's current:
    C1 (fp64, fp32), C2 (quadrature for D <= 2, else Monte Carlo), C4 (fp64, fp32), C5 (Euler, field superposed
    over ``n_pairs`` pairs vs the path's posterior velocity), C9 and C12. Toy data of :func:`default_toy`;
    ``n_points`` points on the pairs' conditional paths with ``t ~ U(0.05, 0.95)``.
    """
    field_, path = _setup(path_or_field, L)
    L = field_.L
    g = torch.Generator().manual_seed(seed)
    toy = default_toy(path, D)
    x0, x1 = toy.sample_pairs(n_pairs, g)
    idx = torch.arange(n_points) % n_pairs
    t = 0.05 + 0.9 * torch.rand(n_points, generator=g, dtype=torch.float64)
    p0, p1 = x0[idx], x1[idx]
    x = path.sample(
        p0, p1, t, noise=None if path.requires_gaussian_source else torch.randn(p0.shape, generator=g, dtype=p0.dtype)
    ).xt
    z = t * L
    results = [check_divergence(field_, z, x, p0, p1)]
    z32, x32, p0_32, p1_32 = (v.float() for v in (z, x, p0, p1))
    results.append(check_divergence(field_, z32, x32, p0_32, p1_32))
    results.append(check_flux(field_, x0[:1], x1[:1], [f * L for f in (0.05, 0.25, 0.5, 0.75, 0.95)], generator=g))
    u = path.posterior(x, t, x0, x1).velocity
    u = torch.cat([u, u * 10.0, u * 100.0 * L, u * 1e3 * L / u.norm(dim=1, keepdim=True).clamp_min(1e-300)])
    results.append(check_round_trip(u, L))
    results.append(check_round_trip(u.float(), L))
    t0 = 0.0 if float(path.sigma(torch.zeros(1, dtype=torch.float64))[0]) > 0 else 1e-3
    posterior = lambda xx, tt: path.posterior(xx, tt, x0, x1).velocity  # noqa: E731
    results.append(
        check_trajectory_coincidence(
            posterior,
            toy.sample_source(n_points, g),
            L,
            steps=steps,
            t0=t0,
            field_fn=lambda zz, xx: field_.direction(zz, xx, x0, x1),
        )
    )
    zs = torch.cat([z, L * (0.01 + 0.98 * torch.rand(n_points, generator=g, dtype=torch.float64))])
    xs = torch.cat([x, x + 3 * torch.randn(x.shape, generator=g, dtype=x.dtype)])
    results.append(check_forward_only(field_, zs, xs, x0, x1))
    results.append(check_poisson_kernel())
    return results
