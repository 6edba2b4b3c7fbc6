"""Learning-rate schedules for the ``lr_scheduler`` factory of the modules (stepped once per optimiser step)."""
from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class LinearWarmup(LambdaLR):
    """``lr(step) = lr * min(1, (step + 1) / (warmup_steps + 1))``: a linear warm-up, then constant (the CFM image
    recipes: torchcfm warms up over 5000 steps, then keeps the learning rate)."""

    def __init__(self, optimizer: Optimizer, warmup_steps: int = 0) -> None:
        if int(warmup_steps) != warmup_steps or warmup_steps < 0:
            raise ValueError(f"LinearWarmup.warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        self.warmup_steps = int(warmup_steps)
        super().__init__(optimizer, self.factor)

    def factor(self, step: int) -> float:
        return min(1.0, (step + 1) / (self.warmup_steps + 1))
