"""Fault probes for tests/test_ddp.py and tests/test_crash_safety.py, importable by class path from a config: models
whose loss or samples turn non-finite, and callbacks that send a signal, raise, or pause at given steps."""

import os
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

from lightning_fm.modules import CFMModule


class NaNOnRank1(CFMModule):
    """The loss is NaN on DDP rank 1 at step 50 only (rank 0 stays finite until the averaged gradient reaches it)."""

    def loss(self, batch, distributed=True):
        loss = super().loss(batch, distributed)
        if self.global_rank == 1 and self.global_step == 50:
            return loss * torch.tensor(float("nan"))
        return loss


class NaNFromStep(CFMModule):
    """The training loss is NaN from step ``nan_from`` on."""

    def __init__(self, nan_from: int = 10**9, **kwargs):
        super().__init__(**kwargs)
        self.nan_from = nan_from

    def loss(self, batch, distributed=True):
        loss = super().loss(batch, distributed)
        if self.training and self.global_step >= self.nan_from:
            return loss * torch.tensor(float("nan"))
        return loss


class NaNSamples(CFMModule):
    """The first ``bad_rows`` samples of every sampling call are NaN."""

    def __init__(self, bad_rows: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.bad_rows = bad_rows

    def sample(self, x_source, y=None, record=False, **overrides):
        result = super().sample(x_source, y=y, record=record, **overrides)
        result.x[: self.bad_rows] = float("nan")
        return result


class SignalAtStep(Callback):
    """Sends ``signum`` to this process at the end of the step that reaches ``step``."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


class RaiseAtStep(Callback):
    """Raises RuntimeError in the hook ``hook`` (``on_train_batch_start``: between steps; ``on_before_optimizer_step``:
    inside a step, after the backward pass) of the step that starts at ``step``."""

    def __init__(self, step: int, hook: str = "on_train_batch_start"):
        self.step, self.hook = step, hook

    def _maybe_raise(self, trainer, hook):
        if hook == self.hook and trainer.global_step == self.step:
            raise RuntimeError(f"probe failure in {hook} at step {self.step}")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._maybe_raise(trainer, "on_train_batch_start")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self._maybe_raise(trainer, "on_before_optimizer_step")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._maybe_raise(trainer, "on_validation_batch_start")


class PauseAtStep(Callback):
    """Sleeps ``seconds`` at the end of the step that reaches ``step`` (a run that waits there to be killed); with
    ``marker``, first creates that file (so a test knows the run is waiting)."""

    def __init__(self, step: int, seconds: float, marker: str | None = None):
        self.step, self.seconds, self.marker = step, seconds, marker

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            if self.marker:
                Path(self.marker).write_text(str(os.getpid()))
            time.sleep(self.seconds)
