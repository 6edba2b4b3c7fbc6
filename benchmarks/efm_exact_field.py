"""The EFM sampler on the EXACT Coulomb field of the 2-D toy 8gaussians -> moons: how well the method itself fits
the toy, before any network is trained, and what the learned-field sampler settings cost.

    python benchmarks/efm_exact_field.py [--charges 2000] [--lines 2000]

The field is ``CoulombField(L)`` with ``--charges`` source charges (8gaussians) at z = 0 and as many target charges
(torchcfm's moons construction) at z = L, float64. Lines start on source charges drawn independently of those (the
source density at the plate), run 100 Euler z-steps, and cross the target plate are continued by arclength (step
0.05) until they return (FieldLineSampler). W2 (exact EMD) against an independent i.i.d. moons sample of the same
size (its floor: an i.i.d. moons sample against another). Settings: the reference stopping (crossing decided on the
plate, return plane ``L + 0.05``) and the settings of ``configs/toy/efm.yaml`` for a learned field (decided at
``L + 0.2``, return plane ``L + 0.2``, slope bound 0.05).
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

SETTINGS = {"reference": {"return_tol": 0.05, "cross_probe": 0.0, "fz_min_rel": 0.0},
            "efm.yaml (learned-field settings)": {"return_tol": 0.2, "cross_probe": 0.2, "fz_min_rel": 0.05}}


def draw(name: str, n: int, seed: int, iid: bool = False) -> torch.Tensor:
    return sample_toy(name, n, torch.Generator().manual_seed(seed), iid)[0].double()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--charges", type=int, default=2000)
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--L", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "efm_exact_field.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
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
            rows.append({"L": L, "settings": name, **options, "w2": wasserstein2(lines.x, target), "floor": floor,
                         "nfe": lines.nfe, "not_returned": lines.info["not_returned"],
                         "seconds": time.perf_counter() - start})
            print(rows[-1], flush=True)
    print(f"\nexact CoulombField, {args.charges} + {args.charges} charges, {args.lines} lines, 100 Euler z-steps + "
          "arclength continuation (step 0.05)")
    print("| L | sampler settings | W2 | floor | NFE | not returned |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['L']} | {r['settings']} | {r['w2']:.3f} | {r['floor']:.3f} | {r['nfe']} | {r['not_returned']:.0f} |")
    Path(args.out).write_text(json.dumps({"charges": args.charges, "lines": args.lines, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
