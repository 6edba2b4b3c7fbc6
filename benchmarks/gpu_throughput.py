"""Training-step throughput of the image recipes on one accelerator, in float32 and bf16 autocast: each CIFAR-10
recipe's module (its U-Net, path or field, coupling, volume and optimiser as shipped) trains on synthetic 32x32
batches of the recipe's batch size; the step (loss, backward, clipping, Adam) is timed after a warm-up, with the
accelerator synchronised. Prints a markdown table and writes JSON (device, versions, settings).

    python benchmarks/gpu_throughput.py                      # on a GPU: every CIFAR-10 recipe, fp32 and bf16
    python benchmarks/gpu_throughput.py --device cpu --steps 2 --warmup 1 --batch-size 4   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import yaml

from lightning_fm.modules.hot_path import channels_last_batch
from lightning_fm.utils.spec import build, import_class

REPO = Path(__file__).resolve().parents[1]
RECIPES = ("otcfm", "icfm", "ifm", "efm")


def with_data_shape(spec: dict, shape: list[int]) -> dict:
    """The backbone spec with ``data_shape`` given to the innermost backbone (through a ``FieldHead``)."""
    inner = spec
    while "backbone" in inner.get("init_args", {}):
        inner = inner["init_args"]["backbone"]
    inner.setdefault("init_args", {})["data_shape"] = shape
    return spec


def build_module(recipe: str, shape: list[int]):
    config = yaml.safe_load((REPO / "configs" / "cifar10" / f"{recipe}.yaml").read_text())
    model = config["model"]
    with_data_shape(model["init_args"]["backbone"], shape)
    batch_size = config["data"]["init_args"]["batch_size"]
    factories = ("optimizer", "lr_scheduler")  # callables of the parameters: the module builds them from their specs
    kwargs = {k: v if k in factories else build(v) for k, v in model["init_args"].items()}
    return import_class(model["class_path"])(**kwargs), batch_size


def steps_per_second(
    module,
    batch_size: int,
    shape: list[int],
    device: torch.device,
    precision: str,
    steps: int,
    warmup: int,
    channels_last: bool = False,
    compile: bool = False,
) -> dict:
    module = module.to(device).train()
    module.hparams.channels_last = channels_last  # the module's own hot path (lightning_fm.modules.hot_path)
    module.compile_options = {} if compile else None
    module.setup("fit")
    module.on_fit_start()
    optimizer = module.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    generator = torch.Generator(device="cpu").manual_seed(0)
    batch = {
        "x0": torch.randn(batch_size, *shape, generator=generator).to(device),
        "x1": torch.rand(batch_size, *shape, generator=generator).to(device) * 2 - 1,
    }
    if channels_last:
        batch = channels_last_batch(batch)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
        with autocast:
            loss = module.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "steps_per_s": steps / elapsed,
        "samples_per_s": steps * batch_size / elapsed,
        "peak_gib": memory,
        "final_loss": float(loss.detach().float()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--channels-last", action="store_true", help="the module and the batches in channels_last")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=None, help="default: each recipe's own")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "gpu_throughput.json"))
    args = parser.parse_args()
    device, shape = torch.device(args.device), [3, 32, 32]
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # fp32 means fp32
    rows = []
    for recipe in args.recipes:
        for precision in args.precisions:
            torch.manual_seed(0)
            module, batch_size = build_module(recipe, shape)
            batch_size = args.batch_size or batch_size
            row = {
                "recipe": f"configs/cifar10/{recipe}.yaml",
                "module": type(module).__name__,
                "precision": precision,
                "batch_size": batch_size,
                "channels_last": args.channels_last,
                "compile": args.compile,
                **steps_per_second(
                    module,
                    batch_size,
                    shape,
                    device,
                    precision,
                    args.steps,
                    args.warmup,
                    args.channels_last,
                    args.compile,
                ),
            }
            rows.append(row)
            print(row, flush=True)
            del module
            if device.type == "cuda":
                torch.cuda.empty_cache()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(
        f"\n{name}, torch {torch.__version__}, {args.steps} timed steps after {args.warmup}, "
        f"channels_last={args.channels_last}, compile={args.compile}"
    )
    print("| recipe | precision | batch | steps/s | samples/s | peak GiB |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        peak = "" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        print(
            f"| {r['recipe']} | {r['precision']} | {r['batch_size']} | {r['steps_per_s']:.2f} | "
            f"{r['samples_per_s']:.0f} | {peak} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"device": name, "torch": torch.__version__, "steps": args.steps, "warmup": args.warmup, "rows": rows},
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
