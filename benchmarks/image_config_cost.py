"""The compute of the image configs: parameters, network FLOPs per training step and per sample, and the wall time
that implies, calibrated on a published run (no GPU was available to this project).

    python benchmarks/image_config_cost.py [configs/cifar10/*.yaml configs/celeba64/*.yaml configs/mnist/*.yaml]

For each config the module is built as configured and one training step's work is counted with
``torch.utils.flop_counter.FlopCounterMode`` through a call of its loss and its backward on two points, scaled to
the points a step trains on (CFM: the batch; IFM/EFM: ``n_points``; the superposition's products over the charges,
O(b B D), are a fraction of a percent of the network's work here), and one forward per sample per NFE for
generation. The wall-time column scales the
one published timing of such a recipe: torchcfm issue #105, OT-CFM CIFAR-10 (400k steps at batch 128, this
U-Net) in about 19 h on one RTX 4090, i.e. it assumes this framework's step costs what the same FLOPs cost there.
That is an estimate (FLOPs are not time: attention and memory-bound layers differ), not a measurement.
JSON: ``benchmarks/results/image_config_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "image_config_cost.json"
SHAPES = {"cifar10": (3, 32, 32), "celeba64": (3, 64, 64), "mnist": (1, 28, 28), "digits": (1, 8, 8)}
#: torchcfm issue #105: 400k OT-CFM steps at batch 128 on CIFAR-10 in about 19 hours on one RTX 4090
REFERENCE = {"config": "configs/cifar10/otcfm.yaml", "hours": 19.0, "steps": 400_000}


def build_module(config: Path):
    from lightning_fm.utils.spec import build

    cfg = yaml.safe_load(config.read_text())
    model = cfg["model"]
    for key in ("optimizer", "lr_scheduler"):  # factories, not needed to count the network's work
        model["init_args"].pop(key, None)
    backbone = model["init_args"]["backbone"]
    inner = backbone["init_args"].get("backbone", backbone)
    inner["init_args"]["data_shape"] = list(SHAPES[config.parent.name])
    return build(model), cfg


def flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def cost(config: Path) -> dict:
    """Network FLOPs of one training step and of one evaluation per sample (see the module docstring)."""
    module, cfg = build_module(config)
    batch, shape = int(cfg["data"]["init_args"]["batch_size"]), SHAPES[config.parent.name]
    n_points = cfg["model"]["init_args"].get("n_points") or batch  # IFM/EFM: the points the network sees
    points = min(int(n_points), batch) if "n_points" in cfg["model"]["init_args"] else batch
    probe = 2  # counted on 2 points, scaled linearly (a 64x64 step of 128 points does not fit this machine's memory)
    batch_of_two = {"x0": torch.randn(probe, *shape), "x1": torch.rand(probe, *shape) * 2 - 1}
    if module.num_classes:
        batch_of_two["y1"] = torch.arange(probe) % module.num_classes

    def step():
        module.loss(batch_of_two, distributed=False).backward()

    per_point = flops(step) / probe
    one = torch.randn(1, *shape)
    sampler = module.hparams["sampler"]["init_args"]
    nfe = sampler.get("steps", 100) if sampler.get("method") != "dopri5" else None
    per_eval = flops(lambda: module.sample(one, steps=1, method="euler"))
    return {
        "config": str(config.relative_to(REPO)),
        "parameters": sum(p.numel() for p in module.backbone.parameters()),
        "batch": batch,
        "points_per_step": points,
        "steps": int(cfg["trainer"]["max_steps"]),
        "gflop_per_step": per_point * points / 1e9,
        "gflop_per_sample_eval": per_eval / 1e9,
        "sampler": sampler.get("method"),
        "sampler_nfe": nfe,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*")
    args = parser.parse_args()
    configs = [Path(c).resolve() for c in args.configs] or sorted(
        p for group in ("cifar10", "celeba64", "mnist") for p in (REPO / "configs" / group).glob("*.yaml")
    )
    torch.manual_seed(0)
    rows = [cost(c) for c in configs]
    reference = next((r for r in rows if r["config"] == REFERENCE["config"]), None) or cost(REPO / REFERENCE["config"])
    seconds_per_gflop = REFERENCE["hours"] * 3600 / (REFERENCE["steps"] * reference["gflop_per_step"])
    for r in rows:
        r["estimated_hours_rtx4090"] = r["steps"] * r["gflop_per_step"] * seconds_per_gflop / 3600
        r["estimated_steps_per_gpu_day"] = 86400 / (r["gflop_per_step"] * seconds_per_gflop)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"reference": REFERENCE, "rows": rows}, indent=2))
    print(
        "| config | parameters | batch (points) | GFLOP / step | steps | est. steps / GPU-day "
        "| est. total (RTX 4090) | GFLOP / sample / NFE | sampler |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        nfe = f"{r['sampler']} ({r['sampler_nfe']} NFE)" if r["sampler_nfe"] else f"{r['sampler']} (adaptive)"
        print(
            f"| `{r['config']}` | {r['parameters'] / 1e6:.2f} M | {r['batch']} ({r['points_per_step']}) "
            f"| {r['gflop_per_step']:.0f} "
            f"| {r['steps']:,} | {r['estimated_steps_per_gpu_day']:,.0f} | {r['estimated_hours_rtx4090']:.0f} h "
            f"| {r['gflop_per_sample_eval']:.2f} | {nfe} |"
        )
    print(f"\ncalibration: {REFERENCE}")


if __name__ == "__main__":
    sys.exit(main())
