"""The EFM sampler on the EXACT Coulomb field of the 2-D toy 8gaussians -> moons: how well the method itself fits
the toy, before any network is trained, and what the learned-field sampler settings cost; and on the 8x8 digits.

    python benchmarks/efm_exact_field.py [--charges 2000] [--lines 2000]
    python benchmarks/efm_exact_field.py --digits [--L 1 5 20]

The field is ``CoulombField(L)`` with ``--charges`` source charges (8gaussians) at z = 0 and as many target charges
(torchcfm's moons construction) at z = L, float64. Lines start on source charges drawn independently of those (the
source density at the plate), run 100 Euler z-steps, and cross the target plate are continued by arclength (step
0.05) until they return (FieldLineSampler). W2 (exact EMD) against an independent i.i.d. moons sample of the same
size (its floor: an i.i.d. moons sample against another). Settings: the reference stopping (crossing decided on the
plate, return plane ``L + 0.05``) and the settings of ``configs/toy/efm.yaml`` for a learned field (decided at
``L + 0.2``, return plane ``L + 0.2``, slope bound 0.05).

``--digits``: N(0, I) noise -> scikit-learn's 8x8 digits (D = 64): as many noise charges as training digits (1438)
at z = 0, the training digits at z = L; lines from 359 independent noise points (the validation set's size), 100
Euler z-steps, arclength steps of 0.1 (at most 1000) for the lines that cross; reported: lines that cross and that
never return, the digits classifier's Frechet distance of the end points to the held-out digits
(:class:`~lightning_fm.callbacks.ClassifierMetrics`' measure; its floor is in the README) and the median distance of
an end point to its nearest training digit (0: the line ended on a charge, a copy of a training image).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from lightning_fm.data import sample_toy
from lightning_fm.fields import CoulombField
from lightning_fm.metrics import wasserstein2
from lightning_fm.sampling import FieldLineSampler

SETTINGS = {
    "reference": {"return_tol": 0.05, "cross_probe": 0.0, "fz_min_rel": 0.0},
    "efm.yaml (learned-field settings)": {"return_tol": 0.2, "cross_probe": 0.2, "fz_min_rel": 0.05},
}


def draw(name: str, n: int, seed: int, iid: bool = False) -> torch.Tensor:
    return sample_toy(name, n, torch.Generator().manual_seed(seed), iid)[0].double()


def digits(Ls: list[float], out: Path) -> None:
    from lightning_fm.data import DigitsDataModule
    from lightning_fm.metrics import frechet_distance, load_or_train_classifier

    (train, labels), (held_out, _) = DigitsDataModule().splits["train"], DigitsDataModule().splits["val"]
    classifier = load_or_train_classifier(train, labels)
    g = torch.Generator().manual_seed(0)
    P, Q = torch.randn(train.shape, generator=g, dtype=torch.float64), train.double()
    starts = torch.randn(held_out.shape, generator=g, dtype=torch.float64)
    rows = []
    for L in Ls:
        field = CoulombField(L)
        sampler = FieldLineSampler("euler", 100, eps=1e-3, arc_step=0.1, max_arc_steps=1000, return_tol=0.05)
        start = time.perf_counter()
        with torch.no_grad():
            lines = sampler(lambda z, x, f=field: f.direction(z, x, P, Q), starts, L, forward_only=False)
            fd = frechet_distance(classifier.features(lines.x.float().clamp(-1, 1)), classifier.features(held_out))
            nearest = torch.cdist(lines.x.flatten(1), Q.flatten(1)).min(dim=1).values.median()
        rows.append(
            {
                "L": L,
                "lines": len(starts),
                "crossing": lines.info["crossing"],
                "not_returned": lines.info["not_returned"],
                "nfe": lines.nfe,
                "classifier_fd": fd,
                "median_distance_to_nearest_training_digit": float(nearest),
                "seconds": time.perf_counter() - start,
            }
        )
        print(rows[-1], flush=True)
    print(f"\nexact CoulombField, {len(P)} noise + {len(Q)} digit charges, {len(starts)} lines")
    print(
        "| L | lines crossing the target plate | never returned | classifier FD | median distance to the nearest "
        "training digit |"
    )
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['L']} | {r['crossing']:.0f} | {r['not_returned']:.0f} | {r['classifier_fd']:.1f} "
            f"| {r['median_distance_to_nearest_training_digit']:.3g} |"
        )
    out.write_text(json.dumps({"rows": rows}, indent=2))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--L", type=float, nargs="+", default=None)
    parser.add_argument("--digits", action="store_true", help="noise -> the 8x8 digits instead of the 2-D toy")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = Path(__file__).parent / "results"
    if args.digits:
        return digits(args.L or [1.0, 5.0, 20.0], Path(args.out or results / "efm_exact_field_digits.json"))
    args.L = args.L or [0.1, 0.3]
    args.out = args.out or str(results / "efm_exact_field.json")
    P, Q = draw("8gaussians", args.charges, 1), draw("moons", args.charges, 2)
    starts = draw("8gaussians", args.lines, 3)
    target, other = draw("moons", args.lines, 4, iid=True), draw("moons", args.lines, 5, iid=True)
    floor = wasserstein2(target, other)
    rows = []
    for L in args.L:
        field = CoulombField(L)
        for name, options in SETTINGS.items():
            sampler = FieldLineSampler("euler", 100, eps=1e-3, arc_step=0.05, max_arc_steps=2000, **options)
            start = time.perf_counter()
            with torch.no_grad():
                lines = sampler(lambda z, x, f=field: f.direction(z, x, P, Q), starts, L, forward_only=False)
            rows.append(
                {
                    "L": L,
                    "settings": name,
                    **options,
                    "w2": wasserstein2(lines.x, target),
                    "floor": floor,
                    "nfe": lines.nfe,
                    "not_returned": lines.info["not_returned"],
                    "seconds": time.perf_counter() - start,
                }
            )
            print(rows[-1], flush=True)
    print(
        f"\nexact CoulombField, {args.charges} + {args.charges} charges, {args.lines} lines, 100 Euler z-steps + "
        "arclength continuation (step 0.05)"
    )
    print("| L | sampler settings | W2 | floor | NFE | not returned |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['L']} | {r['settings']} | {r['w2']:.3f} | {r['floor']:.3f} | {r['nfe']} | {r['not_returned']:.0f} |"
        )
    Path(args.out).write_text(json.dumps({"charges": args.charges, "lines": args.lines, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
