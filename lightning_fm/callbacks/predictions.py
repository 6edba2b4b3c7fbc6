"""``SampleWriter``: what ``predict`` generates, saved next to the run."""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from lightning_fm.callbacks.sample_plots import run_dir


def in_global_order(trainer: Trainer, batches: list[Tensor]) -> list[Tensor] | None:
    """This process's prediction batches merged with every other process's, in the order of the predict set
    (rank r of W predicted batches r, r + W, ...: :class:`lightning_fm.data.base.ShardedBatches`); None on every
    process but the first."""
    world = trainer.world_size
    if world == 1:
        return batches
    gathered: list[list[Tensor] | None] = [None] * world
    torch.distributed.all_gather_object(gathered, batches)
    if not trainer.is_global_zero:
        return None
    per_rank = len(gathered[0])
    return [gathered[g % world][g // world] for g in range(world * per_rank)]


class SampleWriter(Callback):
    """On ``predict``, save all predicted samples (of every process, in the predict set's order) to
    ``<log_dir>/predictions.pt`` as ``{"samples": (N, *dims)}``, with ``"labels"`` (N,) for a class-conditional
    model (the predict set's ``y1``)."""

    def __init__(self, filename: str = "predictions.pt") -> None:
        self.filename = filename

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        outputs = trainer.predict_loop.predictions or []
        batches = outputs[0] if outputs and isinstance(outputs[0], list) else outputs
        batches = in_global_order(trainer, [b.cpu() for b in batches])
        if not batches:
            return
        samples = torch.cat(batches)
        saved = {"samples": samples}
        labels = getattr(trainer.datamodule, "predict_set", dict)().get("y1")
        if labels is not None and getattr(pl_module, "num_classes", 0):  # the classes a conditional model drew
            saved["labels"] = labels
        path = run_dir(trainer) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(saved, path)
        print(f"wrote {len(samples)} samples to {path}")
