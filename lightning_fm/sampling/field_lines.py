"""Moving samples along the lines of a field (docs/concepts/interaction-fields.md#field-line-sampling,
docs/concepts/interaction-fields.md#samplers-and-stopping).

``field_fn(z (B,), x (B, *dims)) -> (fz (B,), fx (B, *dims))`` is any field: a learned network's output or an exact
field (e.g. ``lambda z, x: field.direction(z, x, x0, x1)``). Only its direction matters.

Phase 1 (every field): from ``z = eps`` (source plate) to ``z = L`` (target plate), ``dx/dz = fx / fz`` with a
fixed-step Runge-Kutta method in z (``euler``, ``midpoint``, ``heun``, ``rk4``) or adaptive ``dopri5`` through
:func:`lightning_fm.sampling.ode.integrate`. For a forward-only field this is exactly the CFM ODE in ``t = z / L``
(docs/concepts/duality.md#time-and-velocity: Euler in z with step dz = Euler in t with dt = dz / L). ``fz <= 0`` cannot
be followed in z: such evaluations are guarded by one of two rules (never a silent division by 0), counted per
evaluation in ``info["guarded"]`` and per line in ``info["backward"]`` (lines with ``fz <= 0`` at some evaluation;
docs/concepts/checks.md#c9: 0 for an exact forward-only field):

* ``nonpositive_fz="hold"`` (the default of :class:`~lightning_fm.sampling.FieldLineSampler` for forward-only
  fields): where ``fz <= fz_min`` the slope is 0, the line holds its ``x`` for that evaluation. It is the rule of
  the duality map Psi (:func:`lightning_fm.duality.velocity_from_field`: velocity 0 where ``f_z <= min_ez``), so a
  forward-only model sampled along its field lines and as a velocity (``FieldAsVelocity``) take the same steps
  wherever ``f_z`` is above both thresholds (``fz_min`` here, 1e-7 by default; ``min_fz`` 1e-6 there).
* ``nonpositive_fz="clamp"`` (the default for other fields, EFM): ``fz`` is raised to ``fz_min`` and optionally to
  ``fz_min_rel * ||f||``; the line keeps moving along ``fx`` with a slope of at most ``|fx| / fz_min``.

Phase 2 (``continue_outside``, for fields that are not forward-only, e.g. EFM): lines whose field still points
forward at ``z = L`` (``fz > 0``: they would cross the target plate) are continued by arclength steps
``x~ <- x~ + h E/||E||`` (same Runge-Kutta method; euler for dopri5) until they come back down: through
``z = L + return_tol`` if they went above it (docs/concepts/interaction-fields.md#stopping: until the line returns to
``z <= L + 0.05``), else through ``z = L``; the end point is interpolated linearly on that plane. At most
``max_arc_steps`` steps; the lines that never return are counted in ``info["not_returned"]`` and flagged
(``returned`` False; their ``x`` is where they stopped, ``end_z > L``). A continued line whose step reverses the
previous one (a turn of more than 90 degrees in one step) has reached a sink, a point charge of the target plate, and
ends there (``info["absorbed"]``). With finitely many point charges (an exact EFM field), every line reaching ``z = L``
off a charge has ``E_z > 0`` there and is continued; methods whose last stage evaluates the field on the plate itself
(heun, rk4) meet the charges' singularity: prefer euler/midpoint, or ``z_end < L`` without phase 2. Learned (smooth)
fields have no such singularity.

Learned EFM fields (an approximation, documented here): the true field jumps across the target plate (by its charge
density), a network is smooth there, so the crossing is decided by the sign of ``fz`` at ``z = L + cross_probe``
(``E_z(L+)``), and with ``return_tol`` of the same size the returning lines end before the layer where a finite-batch
regression target is dominated by single charges (its self-normalised direction is biased there). The end point is
then the line's position on the plane ``z = L + return_tol``: a straight vertical projection onto the plate (its
cost on an exact field: ``efm_exact_field`` on the docs' Results pages).

Lines that leave the region a learned field was trained on (docs/concepts/interaction-fields.md#lines-astray): with
``max_radius`` a line whose ``x`` goes farther than ``max_radius`` from the origin (at the end of phase 1, or at any
phase-2 step) is stopped there and flagged as not returned (``info["escaped"]``, included in
``info["not_returned"]``). Outside its training volume a network's direction is an extrapolation; without the bound
such a line can wander for the whole step budget and hand back a point far from both plates' data.

Phase 2 follows lines by arclength with :func:`lightning_fm.sampling.arclength.follow_arclength`; both phases
return one :class:`~lightning_fm.sampling.result.SampleResult` (``times`` are z values).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lightning_fm.sampling.arclength import follow_arclength, unit_vector
from lightning_fm.sampling.ode import check_solver_options, integrate
from lightning_fm.sampling.result import SampleResult, recorded_lines
from lightning_fm.utils.tensors import pad_like

FieldFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]
#: what phase 1 does where ``fz <= fz_min`` (module docstring)
NONPOSITIVE_FZ_RULES = ("clamp", "hold")


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
    record: bool | int = False,
    return_tol: float = 0.05,
    cross_probe: float = 0.0,
    fz_min: float = 1e-7,
    fz_min_rel: float = 0.0,
    nonpositive_fz: str = "clamp",
    z_end: float | None = None,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    max_radius: float | None = None,
) -> SampleResult:
    """Move ``x_source`` (on the source plate) along ``field_fn`` to the target plate (see the module docstring).

    The result's ``info`` counts lines: ``backward`` (``fz <= 0`` at some phase-1 evaluation), ``guarded`` (phase-1
    evaluations, line by line, where the ``nonpositive_fz`` rule applied), ``crossing`` (``fz > 0`` at the target
    plate; only evaluated with ``continue_outside``), ``not_returned`` (lines flagged ``returned`` False: still
    outside after ``max_arc_steps``, or escaped), ``escaped`` (stopped by ``max_radius``; only with a bound),
    ``absorbed`` (continued lines stopped at a sink: a step reversing the previous one, a point charge of the target
    plate, where the line ends). ``end_z`` and ``returned`` are per line; ``times``, ``trajectory`` (phase 1, in z)
    and ``arcs`` (phase 2, augmented ``(z, x)``) with ``record``.

    Args:
        field_fn: ``(z (B,), x) -> (fz, fx)``; it may be called on a subset of the lines in phase 2.
        x_source: start points ``(B, *dims)`` at ``z = eps``.
        L: plate distance. steps: phase-1 steps (a cap on dopri5's steps, per lightning_fm.sampling.ode).
        method: euler, midpoint, heun, rk4 (fixed step ``(z_end - eps)/steps``) or dopri5 (atol, rtol).
        eps: start height. z_end: end of phase 1 (default L; e.g. ``L - eps`` for an exact bridge field, which is
            singular on the plate; must be L with ``continue_outside``).
        continue_outside: run phase 2. arc_step: its arclength step (default ``L / steps``). max_arc_steps: its cap
            (default ``10 * steps``). return_tol: the return plane is ``z = L + return_tol``.
        cross_probe: a line is continued when ``fz > 0`` at ``(L + cross_probe, x)``, just behind the plate
            (default 0: on the plate itself). A learned field is smooth across the target plate, where the true
            field jumps (by the plate's charge density); its sign at ``z = L`` is then an average of the two
            sides, while ``E_z(L+)`` decides whether the line crosses or ends there
            (docs/concepts/interaction-fields.md#stopping).
        fz_min: the guard's threshold: ``fz <= fz_min`` is never divided by.
        nonpositive_fz: what the guard does there (module docstring): ``"clamp"`` (``fz`` raised to ``fz_min``, and
            to ``fz_min_rel * ||f||``) or ``"hold"`` (slope 0: the line does not move in ``x`` at that evaluation).
        fz_min_rel: and to at least ``fz_min_rel * ||f||``: the slope ``||dx/dz||`` is then at most
            ``sqrt(1 - r^2) / r`` (r = fz_min_rel; 0.05: 20). For fields whose ``E_z`` is known to be positive
            inside the slab (EFM: both plates push upwards there), a learned ``fz <= 0`` is an error near a plate
            where the field is nearly parallel to it; the guard keeps such a line moving along ``fx``, slowly
            rising, instead of a step of length ``|fx| / fz_min``. Guarded lines are counted in ``info["backward"]``
            when ``fz <= 0``.
        record: keep the trajectories: ``True`` for all lines, an int ``k`` for the first ``k`` (memory
            ``(steps + 1) k D``).
        max_radius: stop and flag a line whose ``||x||`` exceeds it (module docstring); None: no bound.
    """
    check_solver_options(method, steps, atol, rtol, owner="field-line")
    if not 0 <= fz_min_rel < 1:
        raise ValueError(f"fz_min_rel must be in [0, 1), got {fz_min_rel}")
    if nonpositive_fz not in NONPOSITIVE_FZ_RULES:
        raise ValueError(f"nonpositive_fz must be one of {NONPOSITIVE_FZ_RULES}, got {nonpositive_fz!r}")
    L = float(L)
    z_end = L if z_end is None else float(z_end)
    if not 0 <= eps < z_end <= L:
        raise ValueError(f"need 0 <= eps < z_end <= L, got eps={eps}, z_end={z_end}, L={L}")
    if continue_outside and z_end != L:
        raise ValueError("continue_outside starts at the target plate: leave z_end = L")
    if max_radius is not None and not max_radius > 0:
        raise ValueError(f"max_radius must be > 0 or None, got {max_radius}")
    n_lines = x_source.shape[0]
    nfe = 0
    backward = torch.zeros(n_lines, dtype=torch.bool, device=x_source.device)
    guarded = torch.zeros((), dtype=torch.long, device=x_source.device)

    def slope(z: float | Tensor, x: Tensor) -> Tensor:
        nonlocal nfe, backward, guarded
        zv = torch.as_tensor(z, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
        fz, fx = field_fn(zv, x)
        nfe += 1
        backward = backward | (fz <= 0)
        if nonpositive_fz == "hold":
            ok = fz > fz_min  # also False for NaN
            guarded = guarded + (~ok).sum()
            safe = torch.where(ok, fz, torch.ones_like(fz))
            return torch.where(pad_like(ok, fx), fx / pad_like(safe, fx), torch.zeros_like(fx))
        floor = torch.full_like(fz, fz_min)
        if fz_min_rel > 0:
            norm = torch.sqrt(fz.square() + fx.flatten(1).square().sum(1))
            floor = torch.maximum(floor, fz_min_rel * norm)
        guarded = guarded + (fz < floor).sum()
        return fx / pad_like(torch.maximum(fz, floor), fx)

    # -- phase 1: in z ------------------------------------------------------------------------------------------
    solution = integrate(slope, x_source, eps, z_end, method=method, steps=steps, atol=atol, rtol=rtol, record=record)
    escaped = outside_radius(solution.x, max_radius)
    result = SampleResult(
        x=solution.x,
        nfe=nfe,
        times=solution.times,
        trajectory=solution.trajectory,
        end_z=torch.full((n_lines,), z_end, dtype=x_source.dtype, device=x_source.device),
        returned=~escaped,
        info={
            "backward": float(backward.sum()),
            "guarded": float(guarded),
            "crossing": 0.0,
            "not_returned": float(escaped.sum()),
            "absorbed": 0.0,
        },
    )
    if max_radius is not None:
        result.info["escaped"] = float(escaped.sum())
    if continue_outside:
        _continue_outside(
            field_fn,
            result,
            L,
            method,
            steps,
            arc_step,
            max_arc_steps,
            return_tol,
            recorded_lines(record, n_lines),
            cross_probe,
            max_radius,
        )
    return result


def outside_radius(x: Tensor, max_radius: float | None) -> Tensor:
    """``(B,)`` True where ``||x|| > max_radius`` (never with None; a non-finite ``x`` is outside)."""
    if max_radius is None:
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    return ~(x.flatten(1).norm(dim=1) <= max_radius)


def _continue_outside(
    field_fn: FieldFn,
    result: SampleResult,
    L: float,
    method: str,
    steps: int,
    arc_step: float | None,
    max_arc_steps: int | None,
    return_tol: float,
    record: int,
    cross_probe: float = 0.0,
    max_radius: float | None = None,
) -> None:
    """Phase 2, in place on ``result``: the lines that cross the target plate (escaped ones excepted)."""
    x = result.x
    shape = x.shape[1:]
    # phase 1 (integrate_field_lines) sets both before calling this
    assert result.end_z is not None and result.returned is not None
    if not cross_probe >= 0:
        raise ValueError(f"cross_probe must be >= 0, got {cross_probe}")
    fz, _ = field_fn(torch.full((x.shape[0],), L + float(cross_probe), dtype=x.dtype, device=x.device), x)
    result.nfe += 1
    crossing = (fz > 0) & result.returned
    result.info["crossing"] = float(crossing.sum())
    if not bool(crossing.any()):
        return
    h = L / steps if arc_step is None else float(arc_step)
    cap = 10 * steps if max_arc_steps is None else int(max_arc_steps)
    if h <= 0 or cap < 0:
        raise ValueError(f"arc_step must be > 0 and max_arc_steps >= 0, got {h}, {cap}")

    def direction(y: Tensor) -> Tensor:
        fz, fx = field_fn(y[:, 0], y[:, 1:].reshape(-1, *shape))
        result.nfe += 1
        return unit_vector(fz, fx)

    lines = torch.cat([result.end_z[:, None], x.flatten(1)], 1)
    continued = crossing.nonzero().squeeze(1)
    above = torch.zeros(continued.numel(), dtype=torch.bool, device=x.device)  # has been above L + return_tol
    last = torch.zeros_like(lines[continued])  # each line's previous displacement
    escaped = torch.zeros(continued.numel(), dtype=torch.bool, device=x.device)  # left the ball of max_radius
    absorbed = 0

    def stop(index: Tensor, y: Tensor, y_new: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal absorbed
        level = torch.where(above[index], torch.full_like(y[:, 0], L + return_tol), torch.full_like(y[:, 0], L))
        back = y_new[:, 0] <= level
        # a step that reverses the previous one (a turn of more than 90 degrees within one step) has reached a
        # sink: a point charge of the target plate, where lines end (exact fields of finitely many charges)
        sink = ~back & ((y_new - y) * last[index]).sum(1).lt(0)
        away = ~back & ~sink & outside_radius(y_new[:, 1:], max_radius)  # stopped where it left the ball
        escaped[index] |= away
        lam = ((y[:, 0] - level) / (y[:, 0] - y_new[:, 0]).clamp_min(torch.finfo(y.dtype).tiny)).clamp(0, 1)
        on_plane = y + lam[:, None] * (y_new - y)
        above[index] |= y_new[:, 0] > L + return_tol
        last[index] = y_new - y
        absorbed += int(sink.sum())
        return back | sink | away, torch.where(back[:, None], on_plane, y)

    step_method = "euler" if method == "dopri5" else method
    shown = int((continued < record).sum())  # continued lines among the recorded ones (``continued`` is sorted)
    start = lines[:record].clone()
    arcs = follow_arclength(direction, lines[continued], h, cap, step_method, stop, record=shown)
    lines[continued] = arcs.ends
    result.x = lines[:, 1:].reshape(x.shape)
    result.end_z = lines[:, 0]
    lost = arcs.moving | escaped
    result.returned[continued[lost]] = False
    result.info["not_returned"] += float(lost.sum())
    if max_radius is not None:
        result.info["escaped"] += float(escaped.sum())
    result.info["absorbed"] = float(absorbed)
    if shown:  # (M, record, 1 + D): the recorded lines that were not continued stay where phase 1 left them
        assert arcs.trajectory is not None  # follow_arclength records when record > 0
        result.arcs = arcs_all = start.expand(arcs.trajectory.shape[0], -1, -1).clone()
        arcs_all[:, continued[:shown]] = arcs.trajectory
