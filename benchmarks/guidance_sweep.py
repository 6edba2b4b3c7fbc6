"""Classifier-free guidance on the digits: a class-conditional run (trained with label dropout) samples the 359
fixed noise points of the digits validation set, each asked for its held-out digit's class, at several guidance
scales ``w`` (``(1 + w) v(x|y) - w v(x|null)``; ``w = -1`` is the unconditional model).

    python -m lightning_fm fit -c configs/digits/cfm_conditional.yaml       # and ifm_conditional.yaml
    python benchmarks/guidance_sweep.py runs/digits_cfm_conditional/version_0 runs/digits_ifm_conditional/version_0

For each run and scale: label accuracy (the share of samples the digits classifier reads as the requested digit),
its mean confidence, and the Frechet distance of its features to the held-out digits (floor: 359 training digits
against the same held-out digits). JSON: ``benchmarks/results/guidance_sweep.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from trained_runs import digits_evaluation, load_run, run_name

OUT = Path(__file__).resolve().parent / "results" / "guidance_sweep.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--scales", type=float, nargs="+", default=[-1.0, 0.0, 0.5, 1.0, 2.0, 3.0])
    args = parser.parse_args()
    from lightning_fm.metrics import frechet_distance

    evaluation, classifier = digits_evaluation()
    x0, labels, held_out = evaluation["x0"], evaluation["y1"], evaluation["x1"]
    with torch.no_grad():
        target_features = classifier.features(held_out)
        floor = frechet_distance(classifier.features(evaluation["x1_ref"]), target_features)
    rows = []
    for run in args.runs:
        module, config = load_run(run)
        for w in args.scales:
            with torch.no_grad():
                samples = module.sample(x0, y=labels, guidance=w).x.clamp(-1, 1)
                probabilities = classifier(samples).softmax(1)
                fd = frechet_distance(classifier.features(samples), target_features)
            rows.append(
                {
                    "run": run_name(config),
                    "guidance": w,
                    "fd": fd,
                    "fd_floor": floor,
                    "label_accuracy": float((probabilities.argmax(1) == labels).float().mean()),
                    "confidence": float(probabilities.amax(1).mean()),
                }
            )
            print(rows[-1], flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"points": len(x0), "rows": rows}, indent=2))
    print(f"\n{len(x0)} noise points, each asked for its held-out digit's class; FD floor {floor:.2f}\n")
    print("| run | guidance w | label accuracy | confidence | classifier FD |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['guidance']:g} | {r['label_accuracy']:.1%} | {r['confidence']:.3f} | {r['fd']:.2f} |")


if __name__ == "__main__":
    main()
