"""Start-up cost of the CLI: seconds from launching ``python -m lightning_fm fit`` (the default toy job, one step, no
validation, logger or checkpoint) to the end of its first training step, stamped by the child itself (the callback
:class:`first_step_clock.FirstStepClock` prints the wall-clock time at the end of that step), and to the end of the
whole command (the interpreter's exit included); and the whole command of importing torch, Lightning and the CLI.
Each command is run ``--repeats`` times in fresh processes, interleaved; prints a markdown table and writes JSON.

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAMP = "first-step-ended-at "  # first_step_clock.STAMP (that module imports Lightning)
FIT = [
    sys.executable,
    "-m",
    "lightning_fm",
    "fit",
    "--trainer.max_steps=1",
    "--trainer.limit_val_batches=0",
    "--trainer.enable_checkpointing=false",
    "--trainer.logger=false",
    "--trainer.enable_progress_bar=false",
    "--trainer.callbacks=[{class_path: first_step_clock.FirstStepClock}]",
]
COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "import lightning": [sys.executable, "-c", "import lightning.pytorch"],
    "import lightning_fm.cli": [sys.executable, "-c", "import lightning_fm.cli"],
    "fit (default toy job)": FIT,
}


def measure(command: list[str], cwd: str) -> dict:
    """Wall seconds of the whole command and, where the child stamps it, to the end of its first step."""
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MPLBACKEND="Agg",
        PYTHONPATH=os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    )
    launched, start = time.time(), time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True, env=env)
    result = {"whole_s": time.perf_counter() - start}
    stamps = [line for line in proc.stdout.splitlines() if line.startswith(STAMP)]
    if stamps:
        result["first_step_s"] = float(stamps[0][len(STAMP) :]) - launched
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(HERE / "results" / "startup.json"))
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {name: [] for name in COMMANDS}
    with tempfile.TemporaryDirectory() as cwd:
        measure(COMMANDS["import torch"], cwd)  # warm the file cache
        for _ in range(args.repeats):  # interleaved, so that a noisy spell hits every command alike
            for name, command in COMMANDS.items():
                runs[name].append(measure(command, cwd))
    rows = []
    for name, results in runs.items():
        for key, what in (("first_step_s", "to the end of its first step"), ("whole_s", "whole command")):
            times = sorted(r[key] for r in results if key in r)
            if times:
                rows.append(
                    {
                        "command": name,
                        "measure": what,
                        "median_s": times[len(times) // 2],
                        "min_s": times[0],
                        "max_s": times[-1],
                    }
                )
    print(f"\n{platform.processor() or platform.machine()}, {args.repeats} runs each, OMP_NUM_THREADS=1")
    print("| command | measure | median s | min s | max s |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['command']} | {r['measure']} | {r['median_s']:.2f} | {r['min_s']:.2f} | {r['max_s']:.2f} |")
    Path(args.out).write_text(
        json.dumps({"repeats": args.repeats, "python": sys.version.split()[0], "rows": rows}, indent=2)
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
