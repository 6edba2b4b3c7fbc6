"""Following the lines of a field by arclength in the augmented space ``(z, x)``
(docs/concepts/interaction-fields.md#stopping).

Where a field is not forward-only (EFM) its lines cannot be followed in z: behind the target plate they turn back.
They are followed by their arclength s instead, ``dy/ds = n(y)`` with ``n = E/||E||`` the unit direction and
``y = (z, x)``, one fixed-step Runge-Kutta step (:func:`lightning_fm.sampling.ode.step`) per iteration. Used by
phase 2 of :func:`lightning_fm.sampling.field_lines.integrate_field_lines` and by the figures of exact fields.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_fm.sampling.ode import FIXED_STEP_STAGES, step

Direction = Callable[[Tensor], Tensor]
StopRule = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


@dataclass
class ArclengthLines:
    """ends: ``(N, 1 + D)`` where each line stopped (or its position after ``max_steps``); moving: ``(N,)`` bool,
    True for the lines no stop rule ended; steps: iterations taken; trajectory: ``(K, R, 1 + D)`` positions of the
    first R lines after every iteration (``trajectory[0]`` the starts), or None."""

    ends: Tensor
    moving: Tensor
    steps: int
    trajectory: Tensor | None = None


def unit_vector(ez: Tensor, ex: Tensor) -> Tensor:
    """``E / ||E||`` as an augmented ``(n, 1 + D)`` tensor (0 where E = 0); overflow-safe."""
    e = torch.cat([ez[:, None], ex.flatten(1)], 1)
    scale = e.abs().amax(1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)
    e = e / scale
    return e / e.norm(dim=1, keepdim=True).clamp_min(torch.finfo(e.dtype).tiny)


def follow_arclength(
    direction: Direction,
    y: Tensor,
    step_size: float | Callable[[Tensor], Tensor],
    max_steps: int,
    method: str = "euler",
    stop: StopRule | None = None,
    record: int = 0,
) -> ArclengthLines:
    """Move the points ``y`` ``(N, 1 + D)`` along ``dy/ds = direction(y)`` until ``stop`` ends them or for
    ``max_steps`` iterations.

    Args:
        direction: ``(n, 1 + D) -> (n, 1 + D)`` unit directions; called on the lines still moving only.
        step_size: the arclength step h, or a function of the moving points giving ``(n,)`` steps.
        method: a fixed-step method of :data:`lightning_fm.sampling.ode.FIXED_STEP_STAGES`.
        stop: ``stop(index, y, y_new) -> (done (n,), end (n, 1 + D))`` for the moving lines (``index``: their rows in
            ``y``, for the caller's per-line state): a line that is done ends at ``end``; the others move to
            ``y_new``. None: lines only stop after ``max_steps``.
        record: keep the positions of the first ``record`` lines after every iteration.
    """
    if method not in FIXED_STEP_STAGES:
        raise ValueError(f"arclength stepping needs a fixed-step method {list(FIXED_STEP_STAGES)}, got {method!r}")
    if int(max_steps) != max_steps or max_steps < 0:
        raise ValueError(f"max_steps must be an integer >= 0, got {max_steps!r}")
    ends = y.clone()
    index = torch.arange(y.shape[0], device=y.device)
    trajectory = [ends[:record].clone()] if record else None
    taken = 0
    for _ in range(int(max_steps)):
        if index.numel() == 0:
            break
        if callable(step_size):
            h: float | Tensor = step_size(y)[:, None]
        else:
            h = float(step_size)
            if h <= 0:
                raise ValueError(f"the arclength step must be > 0, got {h}")
        y_new = step(lambda _s, v: direction(v), 0.0, y, h, method)
        if stop is None:
            done, end = torch.zeros_like(index, dtype=torch.bool), y_new
        else:
            done, end = stop(index, y, y_new)
        ends[index] = torch.where(done[:, None], end, y_new)
        taken += 1
        if trajectory is not None:
            trajectory.append(ends[:record].clone())
        keep = ~done
        index, y = index[keep], y_new[keep]
    moving = torch.zeros(ends.shape[0], dtype=torch.bool, device=ends.device)
    moving[index] = True
    return ArclengthLines(ends, moving, taken, None if trajectory is None else torch.stack(trajectory))
