"""Per-step seeding of the training randomness, so that a resumed run draws what the uninterrupted run drew."""

from __future__ import annotations

import os
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_fm.utils.seeding import derive_seed

#: the seed stream of the training steps' randomness (apart from the data's streams)
STEP_STREAM = 101


class StepSeeding(Callback):
    """Before each training step, seed the generators the step draws from (times, path noise, label dropout,
    dropout) with ``derive_seed(PL_GLOBAL_SEED, STEP_STREAM, global_step, rank)``: Lightning does not restore the
    global generators on resume, and the processes of a DDP run must draw independently. Every
    :class:`~lightning_fm.modules.base.FlowMatchingModule` adds it (``configure_callbacks``).

    It seeds ``torch.default_generator`` (and the module's CUDA generator), not ``torch.manual_seed``: that also
    queues a lazy seeding of every CUDA device, recording a stack trace each time (about a millisecond a step, more
    than a toy step's maths; ``benchmarks/train_throughput.py``)."""

    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        seed = derive_seed(
            int(os.environ.get("PL_GLOBAL_SEED", 0)), STEP_STREAM, trainer.global_step, trainer.global_rank
        )
        torch.default_generator.manual_seed(seed)
        if pl_module.device.type == "cuda":
            torch.cuda.default_generators[pl_module.device.index or 0].manual_seed(seed)
