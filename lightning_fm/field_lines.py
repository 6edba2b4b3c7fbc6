"""Moving samples along the lines of a field (MATH.md §4.3, §5.4, §8).

``field_fn(z (B,), x (B, *dims)) -> (fz (B,), fx (B, *dims))`` is any field: a learned network's output or an exact
field (e.g. ``lambda z, x: field.direction(z, x, x0, x1)``). Only its direction matters.

Phase 1 (every field): from ``z = eps`` (source plate) to ``z = L`` (target plate), ``dx/dz = fx / fz`` with a
fixed-step Runge-Kutta method in z (``euler``, ``midpoint``, ``heun``, ``rk4``) or adaptive ``dopri5`` through
:func:`lightning_fm.solvers.integrate`. For a forward-only field this is exactly the CFM ODE in ``t = z / L``
(MATH.md §6.3: Euler in z with step dz = Euler in t with dt = dz / L). ``fz <= 0`` cannot be followed in z: such
evaluations are guarded (``fz`` is clamped to ``fz_min`` and optionally to ``fz_min_rel * ||f||``, never a silent
division by 0) and the lines where it happened are counted in ``n_backward`` (MATH.md C9: 0 for a forward-only field).

Phase 2 (``continue_outside``, for fields that are not forward-only, e.g. EFM): lines whose field still points
forward at ``z = L`` (``fz > 0``: they would cross the target plate) are continued by arclength steps
``x~ <- x~ + h E/||E||`` (same Runge-Kutta method; euler for dopri5) until they come back down: through
``z = L + return_tol`` if they went above it (MATH.md §4.3: "until the line returns to z <= L + 0.05"), else through
``z = L``; the end point is interpolated linearly on that plane. At most ``max_arc_steps`` steps; the lines that
never return are counted in ``n_not_returned`` (their ``x`` is where they stopped, ``z_end > L``). A continued line
whose step reverses the previous one (a turn of more than 90 degrees in one step) has reached a sink, a point charge
of the target plate, and ends there (``n_absorbed``). With finitely many point charges (an exact EFM field),
every line reaching ``z = L`` off a charge has ``E_z > 0`` there and is continued; methods whose last stage evaluates
the field on the plate itself (heun, rk4) meet the charges' singularity: prefer euler/midpoint, or ``z_end < L``
without phase 2. Learned (smooth) fields have no such singularity.

Learned EFM fields (an approximation, documented here): the true field jumps across the target plate (by its charge
density), a network is smooth there, so the crossing is decided by the sign of ``fz`` at ``z = L + cross_probe``
(``E_z(L+)``), and with ``return_tol`` of the same size the returning lines end before the layer where a finite-batch
regression target is dominated by single charges (its self-normalised direction is biased there). The end point is
then the line's position on the plane ``z = L + return_tol``: a straight vertical projection onto the plate. On the
2-D toy (exact field, 2000 + 2000 charges, L = 0.3) W2 goes from 0.30 (reference: 0, 0.05) to 0.34 (0.2, 0.2).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from lightning_fm.paths import pad_like
from lightning_fm.solvers import METHODS, integrate, step

FieldFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]



@dataclass
class FieldLineResult:
    """End points and diagnostics of :func:`integrate_field_lines`.

    x: end points ``(B, *dims)``. z_end: their z ``(B,)`` (L; ``L + return_tol`` for lines that came back from
    behind the plate; ``> L`` for those that did not return). nfe: field evaluations (one per batched call).
    n_backward: lines with ``fz <= 0`` at some phase-1 evaluation. n_crossing: lines with ``fz > 0`` at ``z = L``
    (only evaluated with ``continue_outside``). n_not_returned: of those, lines still outside after
    ``max_arc_steps``. n_absorbed: continued lines stopped at a sink (a step reversing the previous one: a point
    charge of the target plate, where the line ends). returned: ``(B,)`` bool, False for the not-returned.
    z, trajectory: phase-1 z grid ``(K,)`` and positions ``(K, B, *dims)`` when ``record``. arc_trajectory:
    phase-2 augmented positions ``(M, B, 1 + D)`` (lines not being continued stay put) when ``record`` and some
    line was continued.
    """

    x: Tensor
    z_end: Tensor
    nfe: int
    n_backward: int
    n_crossing: int = 0
    n_not_returned: int = 0
    n_absorbed: int = 0
    returned: Tensor | None = None
    z: Tensor | None = None
    trajectory: Tensor | None = None
    arc_trajectory: Tensor | None = None


def _unit(ez: Tensor, ex: Tensor) -> Tensor:
    """``E / ||E||`` as an augmented ``(n, 1 + D)`` tensor (0 where E = 0); overflow-safe."""
    e = torch.cat([ez[:, None], ex.flatten(1)], 1)
    scale = e.abs().amax(1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
    e = e / scale
    return e / e.norm(dim=1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)


def integrate_field_lines(
    field_fn: FieldFn,
    x_source: Tensor,
    L: float,
    method: str = "euler",
    steps: int = 100,
    eps: float = 1e-3,
    continue_outside: bool = False,
    arc_step: float | None = None,
    max_arc_steps: int | None = None,
    record: bool = False,
    return_tol: float = 0.05,
    cross_probe: float = 0.0,
    fz_min: float = 1e-7,
    fz_min_rel: float = 0.0,
    z_end: float | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
) -> FieldLineResult:
    """Move ``x_source`` (on the source plate) along ``field_fn`` to the target plate (see the module docstring).

    Args:
        field_fn: ``(z (B,), x) -> (fz, fx)``; it may be called on a subset of the lines in phase 2.
        x_source: start points ``(B, *dims)`` at ``z = eps``.
        L: plate distance. steps: phase-1 steps (a cap on dopri5's steps, per lightning_fm.solvers).
        method: euler, midpoint, heun, rk4 (fixed step ``(z_end - eps)/steps``) or dopri5 (atol, rtol).
        eps: start height. z_end: end of phase 1 (default L; e.g. ``L - eps`` for an exact bridge field, which is
            singular on the plate; must be L with ``continue_outside``).
        continue_outside: run phase 2. arc_step: its arclength step (default ``L / steps``). max_arc_steps: its cap
            (default ``10 * steps``). return_tol: the return plane is ``z = L + return_tol``.
        cross_probe: a line is continued when ``fz > 0`` at ``(L + cross_probe, x)``, just behind the plate
            (default 0: on the plate itself). A learned field is smooth across the target plate, where the true
            field jumps (by the plate's charge density); its sign at ``z = L`` is then an average of the two
            sides, while ``E_z(L+)`` decides whether the line crosses or ends there (MATH.md §4.3).
        fz_min: ``fz`` is clamped to at least this in ``fx / fz``.
        fz_min_rel: and to at least ``fz_min_rel * ||f||``: the slope ``||dx/dz||`` is then at most
            ``sqrt(1 - r^2) / r`` (r = fz_min_rel; 0.05: 20). For fields whose ``E_z`` is known to be positive
            inside the slab (EFM: both plates push upwards there), a learned ``fz <= 0`` is an error near a plate
            where the field is nearly parallel to it; the guard keeps such a line moving along ``fx``, slowly
            rising, instead of a step of length ``|fx| / fz_min``. Guarded lines are counted in ``n_backward``
            when ``fz <= 0``.
        record: keep the trajectories (memory ``(steps + 1) B D``).
    """
    if method not in METHODS:
        raise ValueError(f"unknown field-line method {method!r}; choose one of {list(METHODS)}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 <= fz_min_rel < 1:
        raise ValueError(f"fz_min_rel must be in [0, 1), got {fz_min_rel}")
    L = float(L)
    z_end = L if z_end is None else float(z_end)
    if not 0 <= eps < z_end <= L:
        raise ValueError(f"need 0 <= eps < z_end <= L, got eps={eps}, z_end={z_end}, L={L}")
    if continue_outside and z_end != L:
        raise ValueError("continue_outside starts at the target plate: leave z_end = L")
    n_lines = x_source.shape[0]
    nfe = 0
    backward = torch.zeros(n_lines, dtype=torch.bool, device=x_source.device)

    def slope(z: float | Tensor, x: Tensor) -> Tensor:
        nonlocal nfe, backward
        zv = torch.as_tensor(z, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        fz, fx = field_fn(zv, x)
        nfe += 1
        backward = backward | (fz <= 0)
        floor = torch.full_like(fz, fz_min)
        if fz_min_rel > 0:
            norm = torch.sqrt(fz.square() + fx.flatten(1).square().sum(1))
            floor = torch.maximum(floor, fz_min_rel * norm)
        return fx / pad_like(torch.maximum(fz, floor), fx)

    # -- phase 1: in z ------------------------------------------------------------------------------------------
    solution = integrate(slope, x_source, eps, z_end, method=method, steps=steps, atol=atol, rtol=rtol,
                         record=record)
    x, grid, positions = solution.x, solution.times, solution.trajectory
    result = FieldLineResult(x=x, z_end=torch.full((n_lines,), z_end, dtype=x.dtype, device=x.device), nfe=nfe,
                             n_backward=int(backward.sum()), returned=torch.ones_like(backward), z=grid,
                             trajectory=positions)
    if continue_outside:
        _continue_outside(field_fn, result, L, method, steps, arc_step, max_arc_steps, return_tol, record,
                          cross_probe)
    return result


def _continue_outside(field_fn: FieldFn, result: FieldLineResult, L: float, method: str, steps: int,
                      arc_step: float | None, max_arc_steps: int | None, return_tol: float, record: bool,
                      cross_probe: float = 0.0) -> None:
    """Phase 2, in place on ``result``."""
    x = result.x
    shape = x.shape[1:]
    if not cross_probe >= 0:
        raise ValueError(f"cross_probe must be >= 0, got {cross_probe}")
    fz, _ = field_fn(torch.full((x.shape[0],), L + float(cross_probe), dtype=x.dtype, device=x.device), x)
    result.nfe += 1
    crossing = fz > 0
    result.n_crossing = int(crossing.sum())
    if result.n_crossing == 0:
        return
    h = L / steps if arc_step is None else float(arc_step)
    cap = 10 * steps if max_arc_steps is None else int(max_arc_steps)
    if h <= 0 or cap < 0:
        raise ValueError(f"arc_step must be > 0 and max_arc_steps >= 0, got {h}, {cap}")
    step_method = "euler" if method == "dopri5" else method

    def unit_field(_s: float, y: Tensor) -> Tensor:
        fz, fx = field_fn(y[:, 0], y[:, 1:].reshape(-1, *shape))
        result.nfe += 1
        return _unit(fz, fx)

    idx = crossing.nonzero().squeeze(1)  # lines still being continued
    y = torch.cat([torch.full((idx.numel(), 1), L, dtype=x.dtype, device=x.device), x[idx].flatten(1)], 1)
    above = torch.zeros(idx.numel(), dtype=torch.bool, device=x.device)  # has been above L + return_tol
    last = torch.zeros_like(y)  # previous step's displacement
    ends = torch.cat([result.z_end[:, None], x.flatten(1)], 1)
    arc = [ends.clone()] if record else None
    for _ in range(cap):
        if idx.numel() == 0:
            break
        y_new = step(unit_field, 0.0, y, h, step_method)
        level = torch.where(above, torch.full_like(y[:, 0], L + return_tol), torch.full_like(y[:, 0], L))
        back = y_new[:, 0] <= level
        # a step that reverses the previous one (a turn of more than 90 degrees within one step) has reached a
        # sink: a point charge of the target plate, where lines end (exact fields of finitely many charges)
        sink = ~back & ((y_new - y) * last).sum(1).lt(0)
        lam = ((y[:, 0] - level) / (y[:, 0] - y_new[:, 0]).clamp_min(torch.finfo(y.dtype).tiny)).clamp(0, 1)
        crossing_point = y + lam[:, None] * (y_new - y)
        ends[idx] = torch.where(back[:, None], crossing_point, torch.where(sink[:, None], y, y_new))
        if arc is not None:
            arc.append(ends.clone())
        above = above | (y_new[:, 0] > L + return_tol)
        keep = ~(back | sink)
        result.n_absorbed += int(sink.sum())
        idx, y, above, last = idx[keep], y_new[keep], above[keep], (y_new - y)[keep]
    returned = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    returned[idx] = False
    result.x = ends[:, 1:].reshape(x.shape)
    result.z_end = ends[:, 0]
    result.returned = returned
    result.n_not_returned = int(idx.numel())
    if arc is not None:
        result.arc_trajectory = torch.stack(arc)
