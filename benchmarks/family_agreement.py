"""How much do the model families agree on images? The trained runs of several configs map the same fixed noise
points (the validation set's ``x0``); this prints, for each pair of runs, the share of points whose samples the
digits classifier reads as the same digit, and the mean pixel distance between the two samples of a point.

    python -m lightning_fm fit -c configs/digits/cfm.yaml     # and ifm.yaml, forward_only_ifm.yaml, ...
    python benchmarks/family_agreement.py runs/digits_cfm/version_0 runs/digits_ifm/version_0 ...

Each run is restored from ``checkpoints/last.ckpt`` (EMA weights) and sampled with its own configured sampler. The
yardstick of a pixel distance is the mean distance of a held-out digit to its nearest other held-out digit
(printed too). JSON: ``benchmarks/results/family_agreement.json``.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import torch
from trained_runs import digits_evaluation, load_run, run_name

OUT = Path(__file__).resolve().parent / "results" / "family_agreement.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    args = parser.parse_args()
    evaluation, classifier = digits_evaluation()
    x0 = evaluation["x0"]
    samples, names = {}, []
    for run in args.runs:
        module, config = load_run(run)
        name = run_name(config)
        with torch.no_grad():
            samples[name] = module.sample(x0).x.clamp(-1, 1)
        names.append(name)
    with torch.no_grad():
        digits = {name: classifier.logits(x).argmax(1) for name, x in samples.items()}
    rows = []
    for a, b in itertools.combinations(names, 2):
        rows.append(
            {
                "a": a,
                "b": b,
                "same_digit": float((digits[a] == digits[b]).float().mean()),
                "pixel_distance": float((samples[a] - samples[b]).flatten(1).norm(dim=1).mean()),
            }
        )
    held_out = evaluation["x1"].flatten(1)
    distances = torch.cdist(held_out, held_out).fill_diagonal_(float("inf"))
    yardstick = float(distances.min(dim=1).values.mean())
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"points": len(x0), "pairs": rows, "held_out_nearest_neighbour": yardstick}, indent=2))
    print(f"{len(x0)} fixed noise points of the digits validation set\n")
    print("| run A | run B | same digit | mean pixel distance |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['a']} | {r['b']} | {r['same_digit']:.1%} | {r['pixel_distance']:.2f} |")
    print(f"\nmean distance of a held-out digit to its nearest other held-out digit: {yardstick:.2f}")


if __name__ == "__main__":
    main()
