"""Finiteness checks that cost the host nothing per step: an on-device record of non-finite values
(:class:`NonFiniteTracker`), read at the few steps where it is checked, and a one-sync test of every tensor of a
nested state (:func:`first_nonfinite`, for checkpoints). Pure torch."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor


def floating_tensors(state: Any, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
    """``(key path, tensor)`` of every floating-point (or complex) tensor in nested dicts, lists and tuples, in
    order; the path names the keys from the root, e.g. ``state_dict/backbone.net.0.weight``."""
    if isinstance(state, Tensor):
        if state.is_floating_point() or state.is_complex():
            yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            yield from floating_tensors(value, f"{prefix}/{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for index, value in enumerate(state):
            yield from floating_tensors(value, f"{prefix}/{index}" if prefix else str(index))


def first_nonfinite(state: Any) -> str | None:
    """The key path of the first tensor of ``state`` with a NaN or infinite entry, or None when all are finite.
    One host synchronisation for the whole state (one boolean per tensor, stacked)."""
    named = list(floating_tensors(state))
    if not named:
        return None
    by_device: dict[torch.device, list[int]] = {}
    for index, (_, tensor) in enumerate(named):
        by_device.setdefault(tensor.device, []).append(index)
    bad = torch.zeros(len(named), dtype=torch.bool)
    for indices in by_device.values():
        flags = torch.stack([~torch.isfinite(named[i][1]).all() for i in indices]).cpu()
        bad[indices] = flags
    hits = bad.nonzero()
    return named[int(hits[0])][0] if len(hits) else None


class NonFiniteTracker:
    """An on-device count of the non-finite entries of a watched value (a loss) since the last :meth:`reset`:
    :meth:`update` is one in-place tensor addition (no ``.item()``, no host synchronisation); the host reads
    :meth:`pending` when it checks. The window's first and last steps are kept on the host (``window``)."""

    def __init__(self) -> None:
        self.count: Tensor | None = None
        self.window: tuple[int, int] | None = None  # (first, last) step updated since the last reset

    def update(self, value: Tensor, step: int) -> None:
        """Count the non-finite entries of ``value`` (any shape) at ``step``."""
        if self.count is None or self.count.device != value.device:
            self.count = torch.zeros((), dtype=torch.long, device=value.device)
        self.count.add_(torch.isfinite(value.detach()).logical_not_().sum())
        self.window = (step if self.window is None else self.window[0], step)

    def pending(self, device: torch.device | None = None) -> Tensor:
        """The window's count, a device tensor (0 before any update), e.g. for a collective; reading its value on
        the host is the one synchronisation."""
        if self.count is None:
            return torch.zeros((), dtype=torch.long, device=device)
        return self.count.clone()

    def reset(self) -> None:
        self.count, self.window = None, None
