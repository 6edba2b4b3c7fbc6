"""``FirstStepClock``: a callback printing the wall-clock time when the first training step ends (for
:mod:`startup`, which launches ``python -m lightning_fm fit`` with it and subtracts the launch time)."""

from __future__ import annotations

import time

from lightning.pytorch import Callback

STAMP = "first-step-ended-at "


class FirstStepClock(Callback):
    def __init__(self) -> None:
        self.done = False

    def on_train_batch_end(self, *args, **kwargs) -> None:
        if not self.done:
            self.done = True
            print(f"{STAMP}{time.time():.6f}", flush=True)
