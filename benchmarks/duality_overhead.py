"""The cost of the ``DualityCheck`` callback that every training recipe ships with (configs/base/*.yaml): short runs
of one recipe per family through the CLI, as shipped (the base's cadence), and the callback's own measure of its
cost, ``duality/overhead`` (seconds in the callback / seconds since the fit started), read from ``metrics.csv`` at
the end of the run.

    python benchmarks/duality_overhead.py                      # toy CFM, toy forward-only IFM, toy EFM, digits CFM
    python benchmarks/duality_overhead.py --steps toy=300 digits=50

Each run is ``python -m lightning_fm fit -c CONFIG --trainer.max_steps N --trainer.limit_val_batches 0`` in a scratch
directory, one process, one thread (``OMP_NUM_THREADS`` sets another number; it is recorded). A run shorter than the
base's ``every_n_steps`` checks once, after the first step: the path/field identities (computed once per fit) and
the learned checks, so its overhead is the one-time cost over a short run, an upper bound for the recipe's full
length. The table: the steps, the checks run, the failed exact identities, the skipped checks (a field that is not
forward-only), the final ``duality/overhead`` and the wall time. JSON: ``benchmarks/results/duality_overhead.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _cli import fit_command  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "duality_overhead.json"
#: name -> (config, group of its step count)
RUNS = {
    "toy CFM (otcfm)": ("configs/toy/otcfm.yaml", "toy"),
    "toy forward-only IFM": ("configs/toy/forward_only_ifm.yaml", "toy"),
    "toy EFM": ("configs/toy/efm.yaml", "toy"),
    "digits CFM": ("configs/digits/cfm.yaml", "digits"),
}
STEPS = {"toy": 300, "digits": 100}
LIMIT = 0.05  # the overhead every base's cadence is chosen to stay under


def run(config: str, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = fit_command(config, "--trainer.max_steps", str(steps), "--trainer.limit_val_batches", "0")
        env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{config}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
        (metrics,) = Path(tmp).rglob("metrics.csv")
        with open(metrics) as fh:
            rows = list(csv.DictReader(fh))
    checks = [r for r in rows if r.get("duality/exact_failures")]
    overhead = [float(r["duality/overhead"]) for r in rows if r.get("duality/overhead")]
    skipped = [float(r["duality/skipped_checks"]) for r in rows if r.get("duality/skipped_checks")]
    return {
        "config": config,
        "steps": steps,
        "checks": len(checks),
        "check_steps": [int(r["step"]) for r in checks],
        "exact_failures": sum(float(r["duality/exact_failures"]) for r in checks),
        "skipped_checks": int(skipped[-1]) if skipped else 0,
        "duality_metrics": len([c for c in rows[0] if c.startswith("duality/")]),
        "overhead": overhead[-1] if overhead else None,
        "wall_s": round(wall, 1),
        "skip_message": "only the checks that apply run" in proc.stderr + proc.stdout,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", nargs="*", default=[], help="GROUP=N (groups: toy, digits)")
    parser.add_argument("--only", nargs="*", default=None, help="run names (default: all)")
    args = parser.parse_args()
    steps = dict(STEPS)
    for item in args.steps:
        group, n = item.split("=")
        steps[group] = int(n)
    results = {}
    for name, (config, group) in RUNS.items():
        if args.only and name not in args.only:
            continue
        results[name] = run(config, steps[group])
        print(f"{name}: {results[name]}", flush=True)
    header = f"| run | steps | checks | exact failures | skipped | duality/overhead | <= {LIMIT:.0%} | wall s |"
    print("\n" + header + "\n|" + "---|" * 8)
    for name, r in results.items():
        ok = r["overhead"] is not None and r["overhead"] <= LIMIT
        print(
            f"| {name} | {r['steps']} | {r['checks']} | {r['exact_failures']:.0f} | {r['skipped_checks']} | "
            f"{r['overhead']:.2%} | {'yes' if ok else 'NO'} | {r['wall_s']} |"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    import torch

    OUT.write_text(
        json.dumps(
            {
                "torch": torch.__version__,
                "threads": os.environ.get("OMP_NUM_THREADS", "1"),
                "limit": LIMIT,
                "runs": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
