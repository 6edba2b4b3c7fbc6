"""``train/samples_per_s``: global training samples a second."""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class Throughput(Callback):
    """Log ``train/samples_per_s`` (training samples of all processes a second since the last written step) at the
    steps the loggers write only: a ``log`` call costs about as much as a toy step's maths. Every
    :class:`~lightning_fm.modules.base.FlowMatchingModule` adds it (``configure_callbacks``)."""

    def __init__(self) -> None:
        self.window: tuple[float, int] | None = None  # (time, step) of the last written step
        self.step = 0  # the optimiser step of the current batch

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        self.step = trainer.global_step
        if self.window is None:
            self.window = (time.perf_counter(), self.step)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = self.step
        if self.window is None or (step + 1) % max(1, int(trainer.log_every_n_steps)):
            return
        now = time.perf_counter()
        elapsed, steps = now - self.window[0], step - self.window[1]
        batch_size = batch["x0"].shape[0]
        if elapsed > 0 and steps > 0:
            pl_module.log(
                "train/samples_per_s", steps * batch_size * trainer.world_size / elapsed, batch_size=batch_size
            )
        self.window = (now, step)
