"""Run by tests/test_ddp.py as ``python tests/ddp_probe.py OUT_DIR``: a 2-process DDP fit and validation on CPU
(gloo) of a class-conditional OT-CFM with within-class coupling, recording what each rank coupled and generated in
``OUT_DIR/rank<r>.pt``, and its predictions in ``OUT_DIR/predictions.pt``. Lightning's DDP launcher re-runs this
script for rank 1."""

import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_fm.callbacks import SampleWriter
from lightning_fm.couplings import OTCoupling
from lightning_fm.data import ToyDataModule
from lightning_fm.models import MLP
from lightning_fm.modules import CFMModule


class RecordingCFM(CFMModule):
    """Keeps every training batch with its coupled pairs, and every validation batch with its samples."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.coupled, self.validated = [], []

    def couple(self, batch, distributed=True):
        pairs = super().couple(batch, distributed)
        if self.training and distributed:
            self.coupled.append(
                {
                    "batch": {k: v.clone() for k, v in batch.items()},
                    "x0": pairs.x0,
                    "x1": pairs.x1,
                    "y1": pairs.y1,
                    "all_x1": pairs.all_x1,
                    "offset": pairs.offset,
                }
            )
        return pairs

    def validation_step(self, batch, batch_idx):
        super().validation_step(batch, batch_idx)
        samples = self.sample(batch["x0"], y=batch["y1"]).x
        self.validated.append({"x1": batch["x1"].clone(), "samples": samples})


def main(out_dir: Path) -> None:
    torch.set_num_threads(1)
    seed_everything(0)
    model = RecordingCFM(backbone=MLP([2], width=16, num_classes=2), coupling=OTCoupling("exact", within_class=True))
    # 300 validation samples in batches of at most 70: 2 x 3 batches of 50; 101 predictions: one batch per rank
    data = ToyDataModule(
        "gaussian", "moons", batch_size=32, steps_per_epoch=4, n_val=300, n_predict=101, eval_batch_size=70
    )
    settings = dict(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    Trainer(max_steps=4, num_sanity_val_steps=0, limit_val_batches=0, **settings).fit(model, datamodule=data)
    trainer = Trainer(default_root_dir=str(out_dir), callbacks=[SampleWriter()], **settings)
    metrics = trainer.validate(model, datamodule=data, verbose=False)[0]
    trainer.predict(model, datamodule=data)
    torch.save(
        {
            "coupled": model.coupled,
            "validated": model.validated,
            "val_w2": metrics["val/w2"],
            "world_size": trainer.world_size,
            "state_dict": model.state_dict(),
            "predict_set": data.predict_set(),
        },
        out_dir / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
