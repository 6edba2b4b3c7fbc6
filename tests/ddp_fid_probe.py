"""Run by tests/test_fid_ddp.py as ``python tests/ddp_fid_probe.py OUT_DIR WEIGHTS``: a 2-process DDP validation on
CPU (gloo) of a small class-conditional U-Net CFM with ``InceptionMetrics`` (stand-in Inception weights ``WEIGHTS``),
recording each rank's FID record and the model's weights in ``OUT_DIR/rank<r>.pt``. Lightning's DDP launcher
re-runs this script for rank 1."""

import sys
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_fm.callbacks import InceptionMetrics
from lightning_fm.couplings import IndependentCoupling
from lightning_fm.data import ImageDataModule, SyntheticImages
from lightning_fm.models import UNet
from lightning_fm.modules import CFMModule
from lightning_fm.paths import LinearPath
from lightning_fm.sampling import ODESampler


def main(out_dir: Path, weights: str) -> None:
    torch.set_num_threads(1)
    seed_everything(0)
    unet = UNet(
        (3, 8, 8),
        model_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        norm_groups=4,
        num_classes=3,
    )
    with torch.no_grad():  # a non-trivial velocity: the zero-initialised output layer made random
        unet.out[2].weight.normal_(0, 0.1)
    model = CFMModule(unet, LinearPath(0.0), IndependentCoupling(), sampler=ODESampler("euler", 2))
    data = ImageDataModule(
        target=SyntheticImages(shape=(3, 8, 8), n_train=12, n_eval=4, num_classes=3), batch_size=6, eval_batch_size=2
    )
    fid = InceptionMetrics(n_samples=7, batch_size=2, kid=False, weights_path=weights, cache_dir=str(out_dir / "cache"))
    trainer = Trainer(
        accelerator="cpu",
        devices=2,
        strategy="ddp",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[fid],
        default_root_dir=str(out_dir),
    )
    metrics = trainer.validate(model, datamodule=data, verbose=False)[0]
    torch.save(
        {
            "record": fid.last,
            "val_fid": metrics["val/fid"],
            "world_size": trainer.world_size,
            "state_dict": model.state_dict(),
        },
        out_dir / f"rank{trainer.global_rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
