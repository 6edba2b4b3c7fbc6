"""lightning_fm against torchcfm on torchcfm's own toy problem, side by side in one run: OT-CFM, I-CFM and SB-CFM,
the same batch (256), MLP (64-wide, 3 hidden SELU layers, ``[x, t]`` input) and step budget, one thread each.
torchcfm runs its own flow matchers and tutorial loop (Adam 1e-3, constant, no EMA) in its own venv
(``benchmarks/.envs/torchcfm``, :mod:`peer_env`); lightning_fm runs its Lightning training loop with the shipped
toy recipes (gradient clipping 1.0 included): OT-CFM ``configs/toy/otcfm.yaml`` (Adam 2e-2, cosine decay to 0 over
the run, EMA 0.99), I-CFM and SB-CFM their configs (Adam 1e-3, EMA 0.99), and once more OT-CFM with torchcfm's own
recipe, the same training as torchcfm's loop: that row compares the frameworks alone. Only the training loop is
timed. Both models then map torchcfm's fixed ``sample_8gaussians(2000)`` with 100 Euler steps, scored by exact W2
against torchcfm's ``sample_moons(2000)`` (:func:`torchcfm_reference.reference_samples`; floor: an i.i.d. moons
sample). Prints a table, writes JSON.

    python benchmarks/torchcfm_side_by_side.py [--steps 3000] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from functools import partial
from pathlib import Path

import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging
from torchcfm_reference import SETTINGS, reference_samples, torchcfm_train
from train_throughput import StepTimer

from lightning_fm.couplings import IndependentCoupling, OTCoupling
from lightning_fm.data import ToyDataModule
from lightning_fm.metrics import wasserstein2
from lightning_fm.models import MLP
from lightning_fm.modules import CFMModule
from lightning_fm.paths import BrownianBridgePath, LinearPath
from lightning_fm.utils.schedules import CosineDecay

OUT = Path(__file__).resolve().parent / "results" / "torchcfm_side_by_side.json"

SHIPPED = {"lr": 2e-2, "cosine": True, "ema": 0.99}  # configs/toy/otcfm.yaml
CONSTANT = {"lr": 1e-3, "cosine": False, "ema": 0.99}  # configs/toy/{icfm,sbcfm}.yaml
TORCHCFM_RECIPE = {"lr": 1e-3, "cosine": False, "ema": None}  # torchcfm's tutorial loop

#: name -> (torchcfm's matcher, our path and coupling, our recipe): the same path and coupling on both sides
VARIANTS = {
    "OT-CFM": (
        "ExactOptimalTransportConditionalFlowMatcher(sigma=0.1)",
        lambda: (LinearPath(0.1), OTCoupling("exact")),
        SHIPPED,
    ),
    "OT-CFM, torchcfm's recipe": (
        "ExactOptimalTransportConditionalFlowMatcher(sigma=0.1)",
        lambda: (LinearPath(0.1), OTCoupling("exact")),
        TORCHCFM_RECIPE,
    ),
    "I-CFM": ("ConditionalFlowMatcher(sigma=0.1)", lambda: (LinearPath(0.1), IndependentCoupling()), CONSTANT),
    "SB-CFM": (
        "SchrodingerBridgeConditionalFlowMatcher(sigma=1.0, ot_method='sinkhorn')",
        lambda: (BrownianBridgePath(1.0), OTCoupling("sinkhorn", reg=2.0)),
        CONSTANT,
    ),
}


def ours_run(components, recipe: dict, steps: int, warmup: int, seed: int) -> dict:
    torch.manual_seed(seed)
    path, coupling = components()
    schedule = partial(CosineDecay, total_steps=steps + warmup) if recipe["cosine"] else None
    model = CFMModule(
        MLP(2, 64, 3), path, coupling, optimizer=partial(torch.optim.Adam, lr=recipe["lr"]), lr_scheduler=schedule
    )
    data = ToyDataModule("8gaussians", "moons", batch_size=SETTINGS["batch"], steps_per_epoch=steps + warmup, seed=seed)
    timer = StepTimer(warmup)
    averaging = [] if recipe["ema"] is None else [EMAWeightAveraging(decay=recipe["ema"])]
    trainer = Trainer(
        max_steps=steps + warmup,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
        gradient_clip_val=1.0,
        callbacks=[timer, *averaging],
    )
    trainer.fit(model, data)  # the EMA weights are copied into the model at the end of training
    source = reference_samples(SETTINGS["n"], SETTINGS["reference_seed"])["source"]
    samples = model.eval().sample(source.float(), method="euler", steps=SETTINGS["euler_steps"]).x
    return {"steps_per_s": timer.steps / (timer.end - timer.start), "samples": samples}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    ref = reference_samples(SETTINGS["n"], SETTINGS["reference_seed"])
    floor = wasserstein2(ref["target_iid"], ref["target"])
    rows = []
    for name in args.variants:
        matcher, components, recipe = VARIANTS[name]
        for seed in args.seeds:
            theirs = torchcfm_train(matcher, args.steps, seed, args.warmup)
            ours = ours_run(components, recipe, args.steps, args.warmup, seed)
            row = {
                "variant": name,
                "seed": seed,
                "torchcfm_matcher": matcher,
                "torchcfm": theirs["torchcfm"],
                "ours_recipe": recipe,
                "torchcfm_steps_per_s": theirs["steps_per_s"],
                "ours_steps_per_s": ours["steps_per_s"],
                "speed_ratio": ours["steps_per_s"] / theirs["steps_per_s"],
                "torchcfm_w2": wasserstein2(theirs["samples"], ref["target"]),
                "ours_w2": wasserstein2(ours["samples"], ref["target"]),
            }
            rows.append(row)
            print(row, flush=True)
    print(
        f"\n{args.steps} steps (after {args.warmup}), batch {SETTINGS['batch']}, one thread, "
        f"{platform.processor() or platform.machine()}; W2 of 2000 samples (100 Euler steps) to torchcfm's "
        f"moons, i.i.d. floor {floor:.3f}"
    )
    print("| variant | seed | torchcfm steps/s | lightning_fm steps/s | ratio | torchcfm W2 | lightning_fm W2 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['seed']} | {r['torchcfm_steps_per_s']:.0f} | {r['ours_steps_per_s']:.0f} | "
            f"{r['speed_ratio']:.2f} | {r['torchcfm_w2']:.3f} | {r['ours_w2']:.3f} |"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "steps": args.steps,
                "warmup": args.warmup,
                "floor_iid": floor,
                "torch": torch.__version__,
                "time": time.strftime("%Y-%m-%d"),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
