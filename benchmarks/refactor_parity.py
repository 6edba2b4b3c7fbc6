"""Same seeds, same numbers: train shipped configs briefly with two versions of the code and compare them.

    python benchmarks/refactor_parity.py run --label before --code /path/to/old/checkout --out /tmp/parity
    python benchmarks/refactor_parity.py run --label after --out /tmp/parity
    python benchmarks/refactor_parity.py compare --out /tmp/parity  # table + benchmarks/results/refactor_parity.json

``run`` trains every toy config (``--toy_steps``, default 400) and the digits configs (``--digits_steps``, default 40)
as ``python -m lightning_fm fit -c CONFIG --trainer.max_steps N`` in a scratch directory, one thread, with the code
of ``--code`` first on ``PYTHONPATH`` (default: this checkout). It keeps each run's last validation metrics and its
final weights (``state_dict`` of ``last.ckpt``) under ``<out>/<label>/``. ``compare`` puts two labels side by side:
the last ``val/w2`` (and, where logged, ``val/fd``, ``val/nll``) of each, and the largest absolute difference of any
final weight.
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
RESULT = REPO / "benchmarks" / "results" / "refactor_parity.json"
DIGITS = (
    "configs/digits/cfm.yaml",
    "configs/digits/forward_only_ifm.yaml",
    "configs/digits/ifm.yaml",
    "configs/digits/efm.yaml",
    "configs/digits/cfm_conditional.yaml",
)
KEYS = ("val/w2", "val/fd", "val/nll", "val/bpd", "val/nfe", "val/not_returned")


def toy_configs() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "configs" / "toy").glob("*.yaml") if p.stem != "duality")


def run_one(config: str, steps: int, code: Path, out: Path) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as scratch:
        env = dict(
            os.environ,
            OMP_NUM_THREADS="1",
            MPLBACKEND="Agg",
            WANDB_MODE="offline",
            PYTHONPATH=os.pathsep.join([str(code), os.environ.get("PYTHONPATH", "")]),
        )
        start = time.perf_counter()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "lightning_fm",
                "fit",
                "-c",
                str(code / config),
                f"--trainer.max_steps={steps}",
                "--trainer.enable_progress_bar=false",
            ],
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        if proc.returncode:
            return {"config": config, "error": proc.stderr[-3000:], "seconds": seconds}
        log_dir = next(Path(scratch).glob("runs/*/version_0"))
        rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
        result = {"config": config, "steps": steps, "seconds": seconds}
        result.update({key: next((float(r[key]) for r in reversed(rows) if r.get(key)), None) for key in KEYS})
        state = torch.load(log_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        weights = out / (config.replace("/", "__") + ".pt")
        torch.save(state, weights)
        return result


def run(args: argparse.Namespace) -> None:
    out = Path(args.out) / args.label
    out.mkdir(parents=True, exist_ok=True)
    code = Path(args.code).resolve() if args.code else REPO
    results = {}
    jobs = [(c, args.toy_steps) for c in toy_configs()] + [(c, args.digits_steps) for c in DIGITS]
    if args.only:
        jobs = [(c, steps) for c, steps in jobs if c in args.only]
        results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    for config, steps in jobs:
        results[config] = run_one(config, steps, code, out)
        print(json.dumps(results[config])[:300], flush=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))


def max_weight_difference(a: Path, b: Path) -> float | None:
    import torch

    if not (a.is_file() and b.is_file()):
        return None
    sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    if sa.keys() != sb.keys():
        return float("nan")
    return max(float((sa[k].double() - sb[k].double()).abs().max()) if sa[k].numel() else 0.0 for k in sa)


def compare(args: argparse.Namespace) -> None:
    root = Path(args.out)
    before = json.loads((root / args.before / "results.json").read_text())
    after = json.loads((root / args.after / "results.json").read_text())
    table = {}
    print(
        f"| config | steps | val/w2 {args.before} | val/w2 {args.after} | other metrics equal | max weight difference |"
    )
    print("|---|---|---|---|---|---|")
    for config, b in before.items():
        a = after.get(config, {})
        name = config.replace("/", "__") + ".pt"
        diff = max_weight_difference(root / args.before / name, root / args.after / name)
        others = all(
            a.get(k) == b.get(k)
            or (a.get(k) is not None and b.get(k) is not None and abs(a[k] - b[k]) <= 1e-6 * max(1.0, abs(b[k])))
            for k in KEYS
            if k != "val/w2"
        )
        table[config] = {
            "steps": b.get("steps"),
            "before": {k: b.get(k) for k in KEYS},
            "after": {k: a.get(k) for k in KEYS},
            "other_metrics_equal": others,
            "max_weight_difference": diff,
            "errors": [x.get("error") for x in (b, a) if "error" in x],
        }
        fmt = lambda v: "failed" if v is None else f"{v:.6f}"  # noqa: E731
        print(
            f"| `{config}` | {b.get('steps')} | {fmt(b.get('val/w2'))} | {fmt(a.get('val/w2'))} | {others} | {diff} |"
        )
    RESULT.write_text(
        json.dumps(
            {"command": "python benchmarks/refactor_parity.py", "labels": [args.before, args.after], "configs": table},
            indent=2,
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("--label", required=True)
    r.add_argument("--code", help="a checkout whose lightning_fm is imported (default: this one)")
    r.add_argument("--out", required=True)
    r.add_argument("--toy_steps", type=int, default=400)
    r.add_argument("--digits_steps", type=int, default=40)
    r.add_argument("--only", nargs="*", help="rerun these configs only, keeping the label's other results")
    c = sub.add_parser("compare")
    c.add_argument("--out", required=True)
    c.add_argument("--before", default="before")
    c.add_argument("--after", default="after")
    args = parser.parse_args()
    run(args) if args.command == "run" else compare(args)


if __name__ == "__main__":
    main()
