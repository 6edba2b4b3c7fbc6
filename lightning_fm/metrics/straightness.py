"""How straight a flow's lines are (Liu et al. 2022, docs/guides/reflow.md#straightness). Pure torch.

For a line ``x_t`` of ``dx/dt = v(t, x)`` from ``x_0`` to ``x_1``,

    S(x_0) = int_0^1 |v(t, x_t)|^2 dt - |x_1 - x_0|^2 = int_0^1 |v(t, x_t) - (x_1 - x_0)|^2 dt >= 0

(the two forms agree because ``int_0^1 v dt = x_1 - x_0``): the kinetic energy of the line beyond that of the
straight constant-speed line between its ends. ``S = 0`` exactly when the line is straight and run at constant speed,
and a flow whose lines all have ``S = 0`` is carried exactly by one Euler step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]


def straightness(velocity_fn: VelocityFn, x0: Tensor, steps: int = 100, per_line: bool = False) -> Tensor:
    """The mean over lines of ``S = int_0^1 |v(t, x_t)|^2 dt - |x_1 - x_0|^2`` (module docstring) along the Euler
    lines from ``x0``: with ``h = 1/steps``, ``t_k = k h``, ``v_k = v(t_k, x_k)`` and ``x_{k+1} = x_k + h v_k``,

        S = h sum_k |v_k|^2 - |x_N - x_0|^2 = h sum_k |v_k - (x_N - x_0)|^2,

    the integral by the left Riemann sum at the Euler evaluations (one per step, the sampler's own). Since
    ``x_N - x_0 = h sum_k v_k`` is the mean velocity of the line, ``S`` is the variance of its velocities over the
    steps (summed over the dimensions); it is computed in that form, by Welford's running mean and sum of squared
    deviations, so that it is ``>= 0`` for any ``steps``, exactly 0 where every ``v_k`` of a line is the same
    (no cancellation of two large terms), and tends to the continuous value as ``steps`` grows.

    Args:
        velocity_fn: ``v(t (B,), x (B, *dims)) -> (B, *dims)``, the ODE's ``f(t, x)`` as
            :func:`lightning_fm.sampling.integrate` calls it.
        x0: the lines' starts ``(B, *dims)``; squared norms sum over all per-sample dimensions.
        steps: Euler steps from ``t = 0`` to ``t = 1`` (>= 1).
        per_line: return ``S`` of each line ``(B,)`` instead of the mean (a 0-dim tensor).

    No gradient mode is forced (call it under ``torch.no_grad()`` for a trained model); computed in at least
    float32.
    """
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"straightness needs steps >= 1 (an integer), got {steps!r}")
    if x0.dim() < 1 or x0.shape[0] == 0:
        raise ValueError(f"straightness needs a batch of starts (B, *dims) with B >= 1, got {tuple(x0.shape)}")
    steps = int(steps)
    h = 1.0 / steps
    dtype = torch.promote_types(x0.dtype, torch.float32)
    x = x0.to(dtype)
    mean = torch.zeros_like(x)  # the running mean velocity of each line, and the sum of squared deviations from it
    deviations = torch.zeros_like(x)
    for k in range(steps):
        t = torch.full((x.shape[0],), k * h, dtype=dtype, device=x.device)
        v = velocity_fn(t, x).to(dtype)
        delta = v - mean
        mean = mean + delta / (k + 1)
        deviations = deviations + delta * (v - mean)
        x = x + h * v
    values = (h * deviations).reshape(x.shape[0], -1).sum(1)
    return values if per_line else values.mean()
