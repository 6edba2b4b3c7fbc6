"""One training step's regression problem, shared by every family's objective."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

#: label dropout of a training step: ``labels -> labels`` (some replaced by the null class), drawn when called
DropLabels = Callable[["Tensor | None"], "Tensor | None"]


@dataclass
class Regression:
    """The network's inputs, ``x`` at ``time`` (``t`` for a velocity, ``z`` for a field) with class ``labels``
    (or None), and the ``target`` it regresses onto (a tensor, or the field's ``(target_z, target_x)``)."""

    time: Tensor
    x: Tensor
    labels: Tensor | None
    target: Any
