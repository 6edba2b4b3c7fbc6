"""Start-up cost of the CLI: seconds from launching ``python -m lightning_fm fit`` to the end of its first training
step (the default toy job, one step, no validation, no checkpoint), and the part of it that is importing. Each
command is run ``--repeats`` times in fresh processes; prints a markdown table and writes JSON.

    python benchmarks/startup.py [--repeats 3]
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

COMMANDS = {
    "import torch": [sys.executable, "-c", "import torch"],
    "import lightning": [sys.executable, "-c", "import lightning.pytorch"],
    "import lightning_fm.cli": [sys.executable, "-c", "import lightning_fm.cli"],
    "fit, first step (default toy job)": [sys.executable, "-m", "lightning_fm", "fit", "--trainer.max_steps=1",
                                          "--trainer.limit_val_batches=0", "--trainer.enable_checkpointing=false",
                                          "--trainer.callbacks=[]", "--trainer.logger=false",
                                          "--trainer.enable_progress_bar=false"],
}


def seconds(command: list[str], cwd: str) -> float:
    start = time.perf_counter()
    subprocess.run(command, cwd=cwd, check=True, capture_output=True,
                   env=dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "startup.json"))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as cwd:
        seconds(COMMANDS["import torch"], cwd)  # warm the file cache
        for name, command in COMMANDS.items():
            times = sorted(seconds(command, cwd) for _ in range(args.repeats))
            rows.append({"command": name, "median_s": times[len(times) // 2], "min_s": times[0]})
            print(rows[-1], flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {args.repeats} runs each, OMP_NUM_THREADS=1")
    print("| command | median s | min s |\n|---|---|---|")
    for r in rows:
        print(f"| {r['command']} | {r['median_s']:.2f} | {r['min_s']:.2f} |")
    Path(args.out).write_text(json.dumps({"repeats": args.repeats, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
