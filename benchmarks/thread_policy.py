"""torch's default intra-op threads against the CLI's thread policy (:func:`lightning_fm.runtime.decide_threads`): the
median time of a digits U-Net training step (``configs/digits/cfm.yaml``'s backbone and model, batch 128 of the
embedded 8x8 digits, Adam: the module's loss, backward and optimiser step), alone and beside a second busy process (a
subprocess spinning a 256x256 float32 matmul loop with torch's default threads, i.e. on every core). Thread counts:
torch's default (read before anything sets it), the policy for this process as launched, the policy where the busy
process is counted as a second local process (``LOCAL_WORLD_SIZE=2``: two training processes of one job), and 1.
Prints a markdown table and writes ``benchmarks/results/thread_policy.json``.

    env -u OMP_NUM_THREADS python benchmarks/thread_policy.py [--steps 7] [--warmup 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

DEFAULT_THREADS = torch.get_num_threads()  # before anything sets it

from lightning_fm.data import DigitsDataModule  # noqa: E402
from lightning_fm.modules import CFMModule  # noqa: E402
from lightning_fm.runtime import available_cpus, decide_threads  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "thread_policy.json"
BATCH = 128
BUSY = "import torch\na = torch.randn(256, 256)\nwhile True:\n    a = (a @ a).tanh()\n"


def digits_model() -> CFMModule:
    """``configs/digits/cfm.yaml``'s model (its U-Net, path, coupling and optimiser)."""
    config = yaml.safe_load((REPO / "configs" / "digits" / "cfm.yaml").read_text())["model"]["init_args"]
    config["backbone"]["init_args"]["data_shape"] = [1, 8, 8]  # what the CLI takes from the data
    torch.manual_seed(0)
    return CFMModule(**{k: config[k] for k in ("backbone", "path", "coupling", "sampler", "optimizer")})


def step_times(threads: int, steps: int, warmup: int, budget: float = 15.0) -> list[float]:
    """Seconds of each of ``steps`` training steps (after ``warmup``) with ``threads`` intra-op threads; at most
    ``budget`` seconds of timed steps (at least 3 steps): a loaded machine's slow settings stop early."""
    torch.set_num_threads(threads)
    model = digits_model()
    optimizer = model.configure_optimizers()
    data = DigitsDataModule(batch_size=BATCH)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    times = []
    for step in range(warmup + steps):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        model.loss(batch, distributed=False).backward()
        optimizer.step()
        if step >= warmup:
            times.append(time.perf_counter() - start)
            if len(times) >= 3 and sum(times) > budget:
                break
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    args = parser.parse_args()
    affinity = available_cpus()
    policy = decide_threads(affinity, os.environ)
    paired = decide_threads(affinity, {**os.environ, "LOCAL_WORLD_SIZE": "2"})
    settings = {
        f"torch default ({DEFAULT_THREADS})": DEFAULT_THREADS,
        f"policy ({policy.threads}: {policy.reason})": policy.threads or DEFAULT_THREADS,
        f"policy, 2 local processes ({paired.threads})": paired.threads or DEFAULT_THREADS,
        "1 thread": 1,
    }
    rows = []
    for load in ("alone", "beside a busy process"):
        busy = None
        if load != "alone":
            env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
            busy = subprocess.Popen([sys.executable, "-c", BUSY], env=env)
            time.sleep(2.0)  # let it start spinning
        try:
            for name, threads in settings.items():
                times = step_times(threads, args.steps, args.warmup)
                rows.append(
                    {
                        "load": load,
                        "threads": name,
                        "n_threads": threads,
                        "median_s": statistics.median(times),
                        "min_s": min(times),
                        "max_s": max(times),
                        "steps": len(times),
                    }
                )
                print(f"{load:22s} {name:60s} {rows[-1]['median_s']:.4f} s", file=sys.stderr, flush=True)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
    title = f"digits U-Net training step (configs/digits/cfm.yaml, batch {BATCH})"
    print(f"\n{title}, median of up to {args.steps} steps (15 s each setting)")
    print(f"CPUs in this process's affinity: {affinity}; os.cpu_count(): {os.cpu_count()}\n")
    print("| load | threads | median s/step | min | max |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['load']} | {row['threads']} | {row['median_s']:.4f} | {row['min_s']:.4f} | {row['max_s']:.4f} |")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "thread_policy",
        "batch": BATCH,
        "steps": args.steps,
        "warmup": args.warmup,
        "affinity_cpus": affinity,
        "cpu_count": os.cpu_count(),
        "torch_default_threads": DEFAULT_THREADS,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "rows": rows,
    }
    OUT.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nwrote {OUT.relative_to(REPO)}")


if __name__ == "__main__":
    main()
