"""ODE solvers for sampling: ``dx/dt = f(t, x)`` from ``t0`` to ``t1`` (docs/concepts/flow-matching.md#ode-sampler,
docs/concepts/interaction-fields.md#samplers-and-stopping).

The same integrator serves CFM (time ``t``, ``f = v_theta``) and IFM / forward-only IFM (height ``z``,
``f = f_x / f_z``). Every call reports NFE, the number of evaluations of ``f`` (one batched call = one evaluation).

Fixed-step methods, with ``h = (t1 - t0) / steps`` and ``t_k = t0 + k h``:

* ``euler``    ``x <- x + h f(t, x)``                                                  order 1, NFE = steps
* ``midpoint`` ``x <- x + h f(t + h/2, x + (h/2) f(t, x))``                            order 2, NFE = 2 steps
* ``heun``     ``k1 = f(t, x), k2 = f(t + h, x + h k1), x <- x + (h/2)(k1 + k2)``      order 2, NFE = 2 steps
  (explicit trapezoid)
* ``rk4``      classical Runge-Kutta, ``x <- x + (h/6)(k1 + 2 k2 + 2 k3 + k4)``        order 4, NFE = 4 steps

Adaptive: ``dopri5`` (Dormand-Prince 5(4)) through ``torchdiffeq.odeint`` with tolerances ``atol``, ``rtol`` and at
most ``max_steps`` accepted steps (a hard bound; no solver here loops without one). ``t1 < t0`` integrates backwards.
Pure torch: any device and dtype; no gradient mode is forced (wrap the call in ``torch.no_grad()`` to sample).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from lightning_fm.sampling.result import SampleResult, recorded_lines

VectorField = Callable[[Tensor, Tensor], Tensor]
#: the ``f(t, x)`` of :func:`step`: its time is a python float, or a tensor where the step ``h`` is one per line
StepField = Callable[[float | Tensor, Tensor], Tensor]

#: stages (evaluations of f) per step of the fixed-step methods.
FIXED_STEP_STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
#: every method name :func:`integrate` accepts.
METHODS = (*FIXED_STEP_STAGES, "dopri5")


def check_solver_options(
    method: str, steps: int, atol: float = 1e-5, rtol: float = 1e-5, max_steps: int = 10_000, owner: str = "ODE"
) -> None:
    """Raise a ValueError naming ``owner`` for an unknown method, a bad number of steps or bad dopri5 options."""
    if method not in METHODS:
        raise ValueError(f"unknown {owner} method {method!r}; choose one of {list(METHODS)}")
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"{owner} steps must be an integer >= 1, got {steps!r}")
    if method == "dopri5":
        if not (math.isfinite(atol) and math.isfinite(rtol)) or atol < 0 or rtol < 0 or atol + rtol == 0:
            raise ValueError(f"dopri5 needs finite atol, rtol >= 0 (not both 0), got atol={atol}, rtol={rtol}")
        if isinstance(max_steps, bool) or int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"max_steps must be an integer >= 1, got {max_steps!r}")


def step(f: StepField, t: float | Tensor, x: Tensor, h: float | Tensor, method: str) -> Tensor:
    """One step ``t -> t + h`` of the fixed-step method ``method`` for ``dx/dt = f(t, x)`` (``f`` takes a python
    float time here). Shared by :func:`integrate` and the field-line sampler."""
    if method == "euler":
        return x + h * f(t, x)
    if method == "midpoint":
        k1 = f(t, x)
        return x + h * f(t + 0.5 * h, x + (0.5 * h) * k1)
    if method == "heun":
        k1 = f(t, x)
        k2 = f(t + h, x + h * k1)
        return x + (0.5 * h) * (k1 + k2)
    # rk4
    k1 = f(t, x)
    k2 = f(t + 0.5 * h, x + (0.5 * h) * k1)
    k3 = f(t + 0.5 * h, x + (0.5 * h) * k2)
    k4 = f(t + h, x + h * k3)
    return x + (h / 6.0) * (k1 + 2 * k2 + 2 * k3 + k4)


def integrate(
    f: VectorField,
    x: Tensor,
    t0: float = 0.0,
    t1: float = 1.0,
    method: str = "euler",
    steps: int = 100,
    atol: float = 1e-5,
    rtol: float = 1e-5,
    max_steps: int = 10_000,
    record: bool | int = False,
) -> SampleResult:
    """Integrate ``dx/dt = f(t, x)`` from ``x(t0) = x`` to ``t1`` and count the evaluations of ``f``: a
    :class:`~lightning_fm.sampling.result.SampleResult`.

    Args:
        f: the vector field, called as ``f(t, x)`` with ``t`` a ``(B,)`` tensor on x's device and dtype (all entries
            equal) and ``x`` ``(B, *dims)``; returns ``dx/dt`` shaped like x.
        x: the start ``(B, *dims)``.
        t0, t1: start and end time (finite; ``t1 < t0`` integrates backwards, ``t1 == t0`` returns x with NFE 0).
        method: one of :data:`METHODS`.
        steps: number of steps of a fixed-step method; for ``dopri5`` only the number of recorded intervals.
        atol, rtol: dopri5 tolerances. max_steps: dopri5's bound on the number of steps (a RuntimeError past it).
        record: keep the states at ``steps + 1`` uniform times: ``True`` for every line, an int ``k`` for the first
            ``k`` lines only (memory ``(steps + 1) k D``); ``times`` and ``trajectory`` of the result.
    """
    t0, t1 = float(t0), float(t1)
    check_solver_options(method, steps, atol, rtol, max_steps)
    if not (math.isfinite(t0) and math.isfinite(t1)):
        raise ValueError(f"t0 and t1 must be finite, got t0={t0}, t1={t1}")
    steps = int(steps)
    batch = x.shape[0]
    kept = recorded_lines(record, batch)
    nfe = 0

    def counted(t: Tensor | float, y: Tensor) -> Tensor:
        nonlocal nfe
        nfe += 1
        tb = torch.as_tensor(t, dtype=y.dtype, device=y.device).reshape(-1).expand(batch).contiguous()
        return f(tb, y)

    def grid() -> Tensor:
        return torch.linspace(t0, t1, steps + 1, dtype=x.dtype, device=x.device)

    if t0 == t1:
        if not kept:
            return SampleResult(x=x, nfe=0)
        return SampleResult(
            x=x, nfe=0, times=grid(), trajectory=x[:kept].unsqueeze(0).repeat(steps + 1, *([1] * x.dim()))
        )

    if method == "dopri5":
        from torchdiffeq import odeint  # imported lazily: only the adaptive solver needs it

        times = grid() if kept else torch.tensor([t0, t1], dtype=x.dtype, device=x.device)
        try:
            states = odeint(
                counted, x, times, method="dopri5", atol=atol, rtol=rtol, options={"max_num_steps": int(max_steps)}
            )
        except AssertionError as err:  # torchdiffeq signals the step bound with an assert
            if "max_num_steps" not in str(err):
                raise
            raise RuntimeError(
                f"dopri5 needed more than max_steps={max_steps} steps from t={t0} to t={t1} "
                f"(atol={atol}, rtol={rtol}); raise max_steps, loosen the tolerances or use a fixed-step method"
            ) from err
        assert isinstance(states, Tensor)  # odeint returns a tuple for a tuple state only
        if kept:
            return SampleResult(x=states[-1], nfe=nfe, times=times, trajectory=states[:, :kept])
        return SampleResult(x=states[-1], nfe=nfe)

    h = (t1 - t0) / steps
    trajectory = [x[:kept]] if kept else None
    for k in range(steps):
        x = step(counted, t0 + k * h, x, h, method)
        if trajectory is not None:
            trajectory.append(x[:kept])
    if trajectory is not None:
        return SampleResult(x=x, nfe=nfe, times=grid(), trajectory=torch.stack(trajectory))
    return SampleResult(x=x, nfe=nfe)
