"""``SampleWriter``: what ``predict`` generates, saved next to the run."""
from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_fm.callbacks.plots import run_dir


class SampleWriter(Callback):
    """On ``predict``, save all predicted samples to ``<log_dir>/predictions.pt`` as ``{"samples": (N, *dims)}``."""

    def __init__(self, filename: str = "predictions.pt") -> None:
        self.filename = filename

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        outputs = trainer.predict_loop.predictions
        if not outputs:
            return
        batches = outputs[0] if isinstance(outputs[0], list) else outputs
        samples = torch.cat([b.cpu() for b in batches])
        path = run_dir(trainer) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"samples": samples}, path)
        print(f"wrote {len(samples)} samples to {path}")
