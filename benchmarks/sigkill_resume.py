"""The SIGKILL row of the fault table, measured on a shipped config: a real ``kill -9`` right after a periodic
checkpoint at an epoch boundary, then ``--ckpt_path last``, against the same run never interrupted.

    python benchmarks/sigkill_resume.py [--config configs/toy/icfm.yaml] [--stop 1500]

The config runs as shipped (``last.ckpt`` every 1000 steps, 1000-step epochs, validation every 1000 steps: every
periodic checkpoint is at an epoch's last batch, with a validation pass beside it), one thread:

* ``straight``: ``fit --trainer.max_steps STOP``;
* ``killed``: ``fit`` (the shipped ``max_steps``), watched until its ``last.ckpt`` holds step 1000, then SIGKILL;
  the step it had reached when killed is read from its ``metrics.csv``;
* ``resumed``: the killed run's command with ``--ckpt_path last --trainer.max_steps STOP``.

Reported: the largest absolute difference between the final weights (every tensor of the checkpoints'
``state_dict``: the network and its EMA copy) of ``straight`` and ``resumed``. JSON:
``benchmarks/results/sigkill_resume.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _cli import fit_command  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "sigkill_resume.json"


def checkpoint_step(path: Path) -> int:
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/toy/icfm.yaml")
    parser.add_argument("--stop", type=int, default=1500, help="max_steps of the straight and the resumed runs")
    parser.add_argument("--kill-at", type=int, default=1000, help="the periodic checkpoint's step")
    args = parser.parse_args()
    env = dict(os.environ, LIGHTNING_FM_THREADS="1", MPLBACKEND="Agg")
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        (root / "straight").mkdir()
        (root / "killed").mkdir()
        start = time.perf_counter()
        subprocess.run(
            [*fit_command(args.config), f"--trainer.max_steps={args.stop}"],
            cwd=root / "straight",
            env=env,
            check=True,
            capture_output=True,
        )
        straight_s = time.perf_counter() - start
        log = open(root / "killed.log", "w")
        process = subprocess.Popen(fit_command(args.config), cwd=root / "killed", env=env, stdout=log, stderr=log)
        last, deadline = None, time.monotonic() + 1800
        try:
            while time.monotonic() < deadline and process.poll() is None:
                found = sorted((root / "killed").glob("runs/*/version_0/checkpoints/last.ckpt"))
                if found and checkpoint_step(found[0]) >= args.kill_at:
                    last = found[0]
                    break
                time.sleep(0.05)
            process.send_signal(signal.SIGKILL)
        finally:
            process.kill()
            process.wait()
        if last is None:
            tail = (root / "killed.log").read_text()[-3000:]
            sys.exit(f"the run never wrote its step-{args.kill_at} checkpoint:\n{tail}")
        metrics = last.parents[1] / "metrics.csv"
        with open(metrics) as rows:
            reached = max((int(row["step"]) for row in csv.DictReader(rows) if row.get("step")), default=0)
        at_kill = checkpoint_step(last)
        subprocess.run(
            [*fit_command(args.config), "--ckpt_path=last", f"--trainer.max_steps={args.stop}"],
            cwd=root / "killed",
            env=env,
            check=True,
            capture_output=True,
        )
        straight = weights(next((root / "straight").glob("runs/*/version_0/checkpoints/last.ckpt")))
        resumed = weights(last)
        difference = max(float((straight[k].float() - resumed[k].float()).abs().max()) for k in straight)
        result = {
            "config": args.config,
            "steps": args.stop,
            "checkpoint_step_at_kill": at_kill,
            "last_logged_step_before_kill": reached,
            "resumed_to_step": checkpoint_step(last),
            "max_abs_weight_difference": difference,
            "tensors_compared": len(straight),
            "same_keys": sorted(straight) == sorted(resumed),
            "straight_seconds": straight_s,
        }
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
