"""Which toy recipe reaches the lowest W2 at an equal budget: an ablation on torchcfm's problem (8gaussians -> moons,
batch 256, 64-wide 3-hidden-layer SELU MLP, 3000 steps), each recipe one change at a time from the shipped OT-CFM
recipe, scored as :mod:`torchcfm_side_by_side` scores (2000 of torchcfm's fixed 8gaussians through 100 Euler steps,
exact W2 to torchcfm's ``sample_moons(2000)``; floor: an i.i.d. moons sample). Prints a table, writes JSON.

    python benchmarks/toy_recipe_ablation.py [--steps 3000] [--seeds 0 1 2] [--recipes base cosine3e-3 ...]

Knobs: learning rate and schedule (constant, or cosine decay to 0 over the budget: ``CosineAnnealingLR`` with
``T_max = steps``), EMA decay (``None``: no EMA), the path's sigma, the regression target (``single``: the pair's own
conditional velocity; ``multi``: the IFM superposition over the batch's pairs, lower target variance) and the
coupling (exact OT, independent).
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
from torchcfm_reference import SETTINGS, reference_samples

from lightning_fm.couplings import IndependentCoupling, OTCoupling
from lightning_fm.data import ToyDataModule
from lightning_fm.metrics import wasserstein2
from lightning_fm.models import MLP
from lightning_fm.modules import CFMModule
from lightning_fm.paths import LinearPath

OUT = Path(__file__).resolve().parent / "results" / "toy_recipe_ablation.json"

BASE = {"lr": 1e-3, "schedule": "constant", "ema": 0.999, "sigma": 0.1, "target": "single", "coupling": "exact"}

#: name -> the changes from BASE (the shipped configs/toy/otcfm.yaml before this ablation)
RECIPES = {
    "base": {},
    "no_ema": {"ema": None},
    "cosine1e-3": {"schedule": "cosine"},
    "cosine3e-3": {"lr": 3e-3, "schedule": "cosine"},
    "cosine1e-2": {"lr": 1e-2, "schedule": "cosine"},
    "cosine3e-3_ema0.99": {"lr": 3e-3, "schedule": "cosine", "ema": 0.99},
    "cosine3e-3_no_ema": {"lr": 3e-3, "schedule": "cosine", "ema": None},
    "cosine3e-3_multi": {"lr": 3e-3, "schedule": "cosine", "target": "multi"},
    "cosine3e-3_sigma0.05": {"lr": 3e-3, "schedule": "cosine", "sigma": 0.05},
    "cosine3e-3_sigma0": {"lr": 3e-3, "schedule": "cosine", "sigma": 0.0},
    "cosine3e-3_independent": {"lr": 3e-3, "schedule": "cosine", "coupling": "independent"},
    "cosine1e-2_no_ema": {"lr": 1e-2, "schedule": "cosine", "ema": None},
    "cosine1e-2_ema0.99": {"lr": 1e-2, "schedule": "cosine", "ema": 0.99},
    "cosine2e-2_no_ema": {"lr": 2e-2, "schedule": "cosine", "ema": None},
    "cosine1e-2_no_ema_multi": {"lr": 1e-2, "schedule": "cosine", "ema": None, "target": "multi"},
    "cosine2e-2_ema0.99": {"lr": 2e-2, "schedule": "cosine", "ema": 0.99},
    "cosine3e-2_no_ema": {"lr": 3e-2, "schedule": "cosine", "ema": None},
    "cosine5e-2_no_ema": {"lr": 5e-2, "schedule": "cosine", "ema": None},
    "constant2e-2_no_ema": {"lr": 2e-2, "ema": None},
}


def build_recipe(recipe: dict, steps: int) -> tuple[CFMModule, list]:
    schedule = (
        None if recipe["schedule"] == "constant" else partial(torch.optim.lr_scheduler.CosineAnnealingLR, T_max=steps)
    )
    coupling = OTCoupling("exact") if recipe["coupling"] == "exact" else IndependentCoupling()
    model = CFMModule(
        MLP(2, 64, 3),
        LinearPath(recipe["sigma"]),
        coupling,
        velocity_target=recipe["target"],
        optimizer=partial(torch.optim.Adam, lr=recipe["lr"]),
        lr_scheduler=schedule,
    )
    callbacks = [] if recipe["ema"] is None else [EMAWeightAveraging(decay=recipe["ema"])]
    return model, callbacks


def score(recipe: dict, steps: int, seed: int, target: torch.Tensor, source: torch.Tensor) -> float:
    torch.manual_seed(seed)
    model, callbacks = build_recipe(recipe, steps)
    data = ToyDataModule("8gaussians", "moons", batch_size=SETTINGS["batch"], steps_per_epoch=steps, seed=seed)
    trainer = Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
        gradient_clip_val=1.0,
        callbacks=callbacks,
    )
    trainer.fit(model, data)  # the EMA weights are copied into the model at the end of training
    samples = model.eval().sample(source, method="euler", steps=SETTINGS["euler_steps"]).x
    return wasserstein2(samples, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--append", action="store_true", help="keep the other recipes' rows of the JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    ref = reference_samples(SETTINGS["n"], SETTINGS["reference_seed"])
    floor = wasserstein2(ref["target_iid"], ref["target"])
    rows = []
    if args.append and OUT.exists():
        rows = [r for r in json.loads(OUT.read_text())["rows"] if r["recipe"] not in args.recipes]
    for name in args.recipes:
        recipe = {**BASE, **RECIPES[name]}
        start = time.perf_counter()
        w2 = [score(recipe, args.steps, seed, ref["target"], ref["source"].float()) for seed in args.seeds]
        rows.append(
            {"recipe": name, **recipe, "w2": w2, "w2_mean": sum(w2) / len(w2), "seconds": time.perf_counter() - start}
        )
        print(rows[-1], flush=True)
        OUT.parent.mkdir(parents=True, exist_ok=True)
        OUT.write_text(
            json.dumps(
                {
                    "steps": args.steps,
                    "seeds": args.seeds,
                    "floor_iid": floor,
                    "base": BASE,
                    "batch": SETTINGS["batch"],
                    "torch": torch.__version__,
                    "machine": platform.processor() or platform.machine(),
                    "time": time.strftime("%Y-%m-%d"),
                    "rows": rows,
                },
                indent=2,
            )
        )
    print(
        f"\n{args.steps} steps, batch {SETTINGS['batch']}, seeds {args.seeds}; W2 of 2000 samples (100 Euler "
        f"steps) to torchcfm's moons, i.i.d. floor {floor:.3f}"
    )
    print("| recipe | lr | schedule | EMA | sigma | target | coupling | W2 per seed | mean W2 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per_seed = " / ".join(f"{w:.3f}" for w in r["w2"])
        print(
            f"| {r['recipe']} | {r['lr']:g} | {r['schedule']} | {r['ema']} | {r['sigma']:g} | {r['target']} | "
            f"{r['coupling']} | {per_seed} | {r['w2_mean']:.3f} |"
        )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
