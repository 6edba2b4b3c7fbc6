"""Run shipped configs end to end through the CLI and tabulate their final validation metrics and wall time; score
the 8gaussians -> moons models on torchcfm's own samples too.

    python benchmarks/config_results.py configs/toy/otcfm.yaml configs/toy/icfm.yaml ...   (default: all toy configs)
    python benchmarks/config_results.py configs/toy/otcfm.yaml --seeds 0 1 2               (seed_everything = data.seed)
    OMP_NUM_THREADS=2 python benchmarks/config_results.py configs/digits/*.yaml configs/transfer/digits_2_to_3.yaml

Each config runs as ``python -m lightning_fm fit -c CONFIG`` in a scratch directory, one process, one thread
(``OMP_NUM_THREADS`` sets another number; it is recorded). The table reports the last ``val/w2`` against the
held-out targets (one draw of the construction, 2000 points) and its floor (W2 between those targets and an
independent i.i.d. target sample of the same size), ``val/nfe``, ``val/nll`` (nats, held-out targets, where the
config logs a likelihood), lines that never returned (IFM/EFM) and the wall time of the whole command. Image configs
with the digits classifier add its Frechet distance against its floor (a training subset of the held-out set's
size), class coverage, confidence, ``val/bpd`` and, for a transfer, the share of outputs read as the target class
(a second table). For configs on 8gaussians -> moons the final checkpoint (EMA weights)
also maps torchcfm's own ``sample_8gaussians(2000)`` (drawn by torchcfm 1.0.7 in its own venv,
:mod:`torchcfm_reference`) with the config's sampler, scored by exact W2 against torchcfm's own
``sample_moons(2000)``. JSON: ``benchmarks/results/config_results.json`` (merged with earlier runs of other configs).
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

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "config_results.json"
#: the final validation values recorded (None where a config does not log one); image configs with the digits
#: classifier add its Frechet distance and its floor, class coverage, confidence and the transfer's target share;
#: forward-only configs their likelihood (val/nll for points, val/bpd for images) and its NFE
VAL_KEYS = (
    "val/w2",
    "val/w2_floor",
    "val/nfe",
    "val/crossing",
    "val/not_returned",
    "val/backward",
    "val/fd",
    "val/fd_floor",
    "val/nll",
    "val/bpd",
    "val/likelihood_nfe",
    "val/class_coverage",
    "val/confidence",
    "val/label_accuracy",
    "val/target_class_fraction",
)
sys.path.insert(0, str(REPO / "benchmarks"))

from _cli import fit_command  # noqa: E402


def torchcfm_scores(log_dir: Path) -> dict:
    """W2 of the run's final model on torchcfm's own 8gaussians -> moons samples (see the module docstring)."""
    import torch
    from torchcfm_reference import reference_samples
    from trained_runs import load_run

    from lightning_fm.metrics import wasserstein2

    module, _ = load_run(log_dir)
    ref = reference_samples()
    with torch.no_grad():
        samples = module.sample(ref["source"]).x
    return {
        "w2_torchcfm_moons": wasserstein2(samples, ref["target"]),
        "floor_torchcfm_moons": wasserstein2(ref["target_iid"], ref["target"]),
    }


def run(config: str, seed: int = 0, overrides: tuple[str, ...] = ()) -> dict:
    """``fit -c config`` (with command-line ``overrides``) in a scratch directory; the final metrics and wall time."""
    with tempfile.TemporaryDirectory() as scratch:
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg")
        start = time.perf_counter()
        seeds = [f"--seed_everything={seed}", f"--data.init_args.seed={seed}"] if seed else []
        proc = subprocess.run(
            fit_command(config, *seeds, *overrides),
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        if proc.returncode:
            return {"config": config, "error": proc.stderr[-2000:], "seconds": seconds}
        log_dir = next(Path(scratch).glob("runs/*/version_0"))
        rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
        last = [r for r in rows if r.get("val/w2")][-1]
        result = {
            "config": config,
            "seed": seed,
            "steps": int(last["step"]) + 1,
            "seconds": seconds,
            "threads": int(env["OMP_NUM_THREADS"]),
        }
        # each key's last logged value (the likelihood callback may log on a row of its own)
        result.update({key: next((float(r[key]) for r in reversed(rows) if r.get(key)), None) for key in VAL_KEYS})
        data = yaml.safe_load((log_dir / "config.yaml").read_text())["data"]["init_args"]
        if (data.get("source"), data.get("target")) == ("8gaussians", "moons"):
            result.update(torchcfm_scores(log_dir))
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="*")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    configs = args.configs or sorted(
        str(p.relative_to(REPO)) for p in (REPO / "configs" / "toy").glob("*.yaml") if p.stem != "duality"
    )
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    for config in configs:
        for seed in args.seeds:
            key = config if seed == 0 else f"{config} (seed {seed})"
            results[key] = run(config, seed)
            print(results[key], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))
    print_points([r for r in results.values() if "/toy/" in r["config"]])
    print_images([r for r in results.values() if "/toy/" not in r["config"]])


def fmt(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def likelihood(r: dict, key: str) -> str:
    """``val/nll`` or ``val/bpd`` with the likelihood solver's NFE, or empty where the config logs none."""
    return "" if r.get(key) is None else f"{r[key]:.3f} ({fmt(r.get('val/likelihood_nfe'), 0)})"


def print_points(rows: list[dict]) -> None:
    print(
        "| config | steps | val/w2 | W2 floor | W2 on torchcfm's samples (floor) | NFE | val/nll (NFE) "
        "| not returned | wall time |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['config']} | failed | | | | | | | {r['seconds']:.0f} s |")
            continue
        peer = f"{r['w2_torchcfm_moons']:.3f} ({r['floor_torchcfm_moons']:.3f})" if "w2_torchcfm_moons" in r else ""
        name = f"`{r['config']}`" + (f" (seed {r['seed']})" if r.get("seed") else "")
        print(
            f"| {name} | {r['steps']} | {fmt(r['val/w2'])} | {fmt(r['val/w2_floor'])} | {peer} "
            f"| {fmt(r['val/nfe'], 0)} | {likelihood(r, 'val/nll')} | {fmt(r['val/not_returned'], 0)} "
            f"| {r['seconds'] / 60:.1f} min |"
        )


def print_images(rows: list[dict]) -> None:
    print(
        "\n| config | steps | classifier FD (floor) | coverage | confidence | target class | val/w2 (floor) | NFE "
        "| val/bpd (NFE) | crossing / not returned | threads | wall time |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['config']} | failed | | | | | | | | | | {r['seconds']:.0f} s |")
            continue
        lines = "" if r.get("val/crossing") is None else f"{r['val/crossing']:.0f} / {r['val/not_returned']:.0f}"
        print(
            f"| `{r['config']}` | {r['steps']} | {fmt(r.get('val/fd'), 2)} ({fmt(r.get('val/fd_floor'), 2)}) "
            f"| {fmt(r.get('val/class_coverage'), 2)} | {fmt(r.get('val/confidence'))} "
            f"| {fmt(r.get('val/target_class_fraction'))} | {fmt(r['val/w2'])} ({fmt(r['val/w2_floor'])}) "
            f"| {fmt(r['val/nfe'], 0)} | {likelihood(r, 'val/bpd')} | {lines} | {r.get('threads', 1)} "
            f"| {r['seconds'] / 60:.1f} min |"
        )


if __name__ == "__main__":
    main()
