"""Run shipped configs end to end through the CLI and tabulate their final validation metrics and wall time.

    python benchmarks/config_results.py configs/toy/otcfm.yaml configs/toy/icfm.yaml ...   (default: all toy configs)

Each config runs as ``python -m lightning_fm fit -c CONFIG`` in a scratch directory; the table reports the last
``val/w2`` (and its noise floor), ``val/nfe``, lines that never returned (IFM/EFM) and the wall time, and the JSON
goes to ``benchmarks/results/config_results.json`` (merged with earlier runs of other configs).
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "config_results.json"


def run(config: str) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg")
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "lightning_fm", "fit", "-c", str(REPO / config),
                               "--trainer.enable_progress_bar=false"], cwd=scratch, env=env, capture_output=True,
                              text=True)
        seconds = time.perf_counter() - start
        if proc.returncode:
            return {"config": config, "error": proc.stderr[-2000:], "seconds": seconds}
        metrics = next(Path(scratch).glob("runs/*/version_0/metrics.csv"))
        rows = [r for r in csv.DictReader(open(metrics)) if r.get("val/w2")]
        last = rows[-1]
        pick = lambda key: float(last[key]) if last.get(key) else None  # noqa: E731
        return {"config": config, "steps": int(last["step"]) + 1, "val/w2": pick("val/w2"),
                "val/w2_floor": pick("val/w2_floor"), "val/nfe": pick("val/nfe"),
                "val/not_returned": pick("val/not_returned"), "seconds": seconds}


def main() -> None:
    configs = sys.argv[1:] or sorted(str(p.relative_to(REPO)) for p in (REPO / "configs" / "toy").glob("*.yaml")
                                     if p.stem != "duality")
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for config in configs:
        results[config] = run(config)
        print(results[config], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print("| config | steps | val/w2 | W2 floor | NFE | not returned | wall time |")
    print("|---|---|---|---|---|---|---|")
    for r in results.values():
        if "error" in r:
            print(f"| {r['config']} | failed | | | | | {r['seconds']:.0f} s |")
            continue
        nr = "" if r["val/not_returned"] is None else f"{r['val/not_returned']:.0f}"
        print(f"| `{r['config']}` | {r['steps']} | {r['val/w2']:.3f} | {r['val/w2_floor']:.3f} | {r['val/nfe']:.0f} "
              f"| {nr} | {r['seconds'] / 60:.1f} min |")


if __name__ == "__main__":
    main()
