"""Learning-rate schedules for the ``lr_scheduler`` factory of the modules (stepped once per optimiser step)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class LinearWarmup(LambdaLR):
    """``lr(step) = lr * min(1, (step + 1) / (warmup_steps + 1))``: a linear warm-up, then constant (the CFM image
    recipes: torchcfm warms up over 5000 steps, then keeps the learning rate)."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0) -> None:
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"{type(self).__name__}.warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        self.warmup_steps = int(warmup_steps)
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        return min(1.0, (step + 1) / (self.warmup_steps + 1))


class CosineDecay(LinearWarmup):
    """``lr(step) = lr * w(step) * (f + (1 - f) (1 + cos(pi min(step, T) / T)) / 2)`` with :class:`LinearWarmup`'s
    ``w(step) = min(1, (step + 1) / (warmup_steps + 1))``, ``f = final_fraction`` and ``T = total_steps``: from the
    full rate down to ``f`` times it at step T, then constant (the toy recipes: a cosine decay to 0 over the run).

    ``total_steps=None`` takes the run's ``trainer.max_steps`` (the module sets it when it builds the schedule:
    :meth:`set_total_steps`; so
    ``--trainer.max_steps`` stretches the decay with it; a run resumed with a larger ``max_steps`` follows the cosine
    of its own length from the step it resumes at: its rate rises to that curve, then decays to 0 at the new end).
    """

    #: the schedule asks the module for the run's length (``trainer.max_steps``) when ``total_steps`` is None
    wants_total_steps = True

    def __init__(
        self, optimizer: Optimizer, total_steps: int | None = None, warmup_steps: int = 0, final_fraction: float = 0.0
    ) -> None:
        if total_steps is not None and (int(total_steps) != total_steps or total_steps < 1):
            raise ValueError(
                f"CosineDecay.total_steps must be an integer >= 1 or null (trainer.max_steps), got {total_steps!r}"
            )
        if not 0.0 <= final_fraction <= 1.0:
            raise ValueError(f"CosineDecay.final_fraction must lie in [0, 1], got {final_fraction!r}")
        self.total_steps = None if total_steps is None else int(total_steps)
        self.total_from_run = total_steps is None
        self.final_fraction = float(final_fraction)
        super().__init__(optimizer, warmup_steps)  # checks warmup_steps, then LambdaLR with this class's factor

    def factor(self, step: int) -> float:
        progress = 0.0 if self.total_steps is None else min(step, self.total_steps) / self.total_steps
        decay = self.final_fraction + (1.0 - self.final_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return super().factor(step) * decay

    def state_dict(self) -> dict:
        """LambdaLR's state, less a ``total_steps`` taken from ``trainer.max_steps``: a resumed run decays over its
        own ``max_steps``."""
        state = super().state_dict()
        if self.total_from_run:
            state.pop("total_steps", None)
            state.pop("total_from_run", None)
        return state

    def set_total_steps(self, max_steps: int) -> None:
        """Decay over the run's ``max_steps`` where ``total_steps`` was left out."""
        if self.total_steps is not None:
            return
        if int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(
                f"CosineDecay with total_steps=null decays over trainer.max_steps, which is "
                f"{max_steps!r}: set trainer.max_steps > 0 or lr_scheduler.init_args.total_steps"
            )
        self.total_steps = int(max_steps)
        for group, lr in zip(self.optimizer.param_groups, self.base_lrs):  # the rate of the current step
            group["lr"] = lr * self.factor(self.last_epoch)
