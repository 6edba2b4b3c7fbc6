"""Framework overhead at image scale: OT-CFM's training step through lightning_fm (``CFMModule`` in a Lightning
``Trainer``) against a hand-written PyTorch loop doing the same work on the same batches (the data module's own
loader, the same U-Net, path, exact OT coupling, Adam, gradient clipping at 1.0; no EMA, no logging, no validation
on either side), alternating rounds so that both see the same machine load. Prints a table, writes JSON.

* digits: ``configs/digits/otcfm.yaml``'s U-Net (16 channels, mult (1, 2, 2)) on the embedded 8x8 digits, batch 128;
* cifar: the CIFAR-10 recipe's U-Net (128 channels, mult (1, 2, 2, 2), 35.7M parameters) on synthetic 3x32x32
  images (:class:`~lightning_fm.data.SyntheticImages`), a small batch: a few steps on the CPU.

    python benchmarks/image_overhead.py [--scales digits cifar] [--rounds 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from train_throughput import StepTimer, plain_step

from lightning_fm.couplings import OTCoupling
from lightning_fm.data import DigitsDataModule, ImageDataModule, SyntheticImages
from lightning_fm.models import UNet
from lightning_fm.modules import CFMModule
from lightning_fm.paths import LinearPath

OUT = Path(__file__).resolve().parent / "results" / "image_overhead.json"

SCALES = {
    "digits": {
        "steps": 200,
        "warmup": 20,
        "batch": 128,
        "unet": dict(
            data_shape=[1, 8, 8],
            model_channels=16,
            channel_mult=(1, 2, 2),
            num_res_blocks=1,
            attention_resolutions=(4,),
            num_heads=1,
            norm_groups=8,
        ),
        "data": lambda batch: DigitsDataModule(batch_size=batch),
    },
    "cifar": {
        "steps": 6,
        "warmup": 2,
        "batch": 4,
        "unet": dict(
            data_shape=[3, 32, 32],
            model_channels=128,
            channel_mult=(1, 2, 2, 2),
            num_res_blocks=2,
            attention_resolutions=(16,),
            num_heads=4,
            num_head_channels=64,
            dropout=0.1,
            time_scale=1.0,
        ),
        "data": lambda batch: ImageDataModule(
            SyntheticImages((3, 32, 32), n_train=64, num_classes=0), batch_size=batch
        ),
    },
}


def module(scale: dict) -> CFMModule:
    torch.manual_seed(0)
    return CFMModule(UNet(**scale["unet"]), LinearPath(0.0), OTCoupling("exact"), val_trajectories=0, plot_samples=0)


def lightning_steps_per_second(scale: dict) -> float:
    total = scale["steps"] + scale["warmup"]
    timer = StepTimer(scale["warmup"])
    trainer = Trainer(
        max_steps=total,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
        accelerator="cpu",
        gradient_clip_val=1.0,
    )
    trainer.fit(module(scale), scale["data"](scale["batch"]))
    return timer.steps / (timer.end - timer.start)


def plain_steps_per_second(scale: dict) -> float:
    total = scale["steps"] + scale["warmup"]
    model = module(scale)
    net, path, pair = model.backbone, model.path, model.coupling
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)  # the module's default optimiser
    data = scale["data"](scale["batch"])
    data.setup("fit")
    loader = data.train_dataloader()
    batches = (batch for _ in range(total) for batch in loader)  # epoch after epoch, as the Trainer iterates
    start = None
    for step, batch in enumerate(batches):
        if step == scale["warmup"]:
            start = time.perf_counter()
        plain_step(net, path, pair, opt, batch["x0"], batch["x1"])
        if step + 1 == total:
            break
    return scale["steps"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", nargs="+", default=list(SCALES), choices=list(SCALES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.scales:
        scale = SCALES[name]
        lit, plain = [], []
        for _ in range(args.rounds):
            lit.append(lightning_steps_per_second(scale))
            plain.append(plain_steps_per_second(scale))
        rows.append(
            {
                "scale": name,
                "batch": scale["batch"],
                "timed_steps": scale["steps"],
                "rounds": args.rounds,
                "lightning_fm_steps_per_s": max(lit),
                "plain_torch_steps_per_s": max(plain),
                "ratio": max(lit) / max(plain),
                "all_lightning_fm": lit,
                "all_plain": plain,
            }
        )
        print(rows[-1], flush=True)
    print(
        f"\nOT-CFM training step, {args.threads} thread(s), best of {args.rounds} rounds, "
        f"{platform.processor() or platform.machine()}"
    )
    print("| scale | batch | lightning_fm steps/s | plain PyTorch steps/s | lightning_fm / plain |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scale']} | {r['batch']} | {r['lightning_fm_steps_per_s']:.2f} | "
            f"{r['plain_torch_steps_per_s']:.2f} | {r['ratio']:.3f} |"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "threads": args.threads,
                "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(),
                "time": time.strftime("%Y-%m-%d"),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
