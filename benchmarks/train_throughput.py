"""Training throughput of CFM variants on the 2-D toy: lightning_fm (Lightning Trainer) vs a plain PyTorch loop
doing the same work (same MLP, path, coupling, optimiser, batch). Prints a markdown table and writes JSON.

    python benchmarks/train_throughput.py [--steps 600] [--batch-size 256] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback, Trainer

from lightning_fm.couplings import IndependentCoupling, OTCoupling
from lightning_fm.data import ToyDataModule, sample_toy
from lightning_fm.models import MLP
from lightning_fm.modules import CFMModule
from lightning_fm.paths import LinearPath

VARIANTS = {"OT-CFM": lambda: OTCoupling("exact"), "I-CFM": IndependentCoupling}


class StepTimer(Callback):
    """Wall time of the training steps after ``warmup`` steps."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.steps = warmup, None, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.warmup:
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.start is not None:
            self.steps += 1
            self.end = time.perf_counter()


def lightning_steps_per_second(coupling, steps: int, batch_size: int, warmup: int) -> float:
    torch.manual_seed(0)
    model = CFMModule(MLP(2, 64, 3), LinearPath(0.1), coupling())
    data = ToyDataModule("8gaussians", "moons", batch_size=batch_size, steps_per_epoch=steps + warmup)
    timer = StepTimer(warmup)
    trainer = Trainer(
        max_steps=steps + warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
        accelerator="cpu",
        gradient_clip_val=1.0,
    )
    trainer.fit(model, data)
    return timer.steps / (timer.end - timer.start)


def plain_steps_per_second(coupling, steps: int, batch_size: int, warmup: int) -> float:
    torch.manual_seed(0)
    net, path, pair = MLP(2, 64, 3), LinearPath(0.1), coupling()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)  # the module's default optimiser
    gen = torch.Generator().manual_seed(0)
    for step in range(steps + warmup):
        if step == warmup:
            start = time.perf_counter()
        x0, _ = sample_toy("8gaussians", batch_size, gen)
        x1, _ = sample_toy("moons", batch_size, gen)
        plain_step(net, path, pair, opt, x0, x1)
    return steps / (time.perf_counter() - start)


def plain_step(net, path, pair, opt, x0, x1) -> None:
    """One CFM step by hand: pair, draw t and x_t, regress u_t, clip at 1.0, Adam."""
    x0, x1, _, _ = pair(x0, x1)
    t = torch.rand(x0.shape[0])
    s = path.sample(x0, x1, t)
    loss = (net(s.xt, t) - s.ut).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "train_throughput.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name, coupling in VARIANTS.items():
        lit = lightning_steps_per_second(coupling, args.steps, args.batch_size, args.warmup)
        plain = plain_steps_per_second(coupling, args.steps, args.batch_size, args.warmup)
        rows.append(
            {
                "variant": name,
                "lightning_fm_steps_per_s": lit,
                "plain_torch_steps_per_s": plain,
                "overhead": plain / lit,
            }
        )
    machine = platform.processor() or platform.machine()
    print(f"\nbatch {args.batch_size}, {args.steps} timed steps, {args.threads} thread(s), {machine}")
    print("| variant | lightning_fm steps/s | plain PyTorch steps/s | plain / lightning_fm |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['lightning_fm_steps_per_s']:.0f} | {r['plain_torch_steps_per_s']:.0f} "
            f"| {r['overhead']:.2f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "batch_size": args.batch_size,
                "steps": args.steps,
                "threads": args.threads,
                "torch": torch.__version__,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
