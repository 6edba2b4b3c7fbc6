"""Cost of an IFM/EFM training target: the direction of the field superposed over B pairs at b points, at D = 2
(toys), 784 (MNIST) and 3072 (CIFAR-10; the IFM CIFAR-10 setting: B = 256 pairs, b = 64 points, L = 20).

lightning_fm's vectorised ``field.direction`` (log-domain matrix products,
docs/concepts/interaction-fields.md#computing-superpositions) against a per-pair Python loop that computes the same
numbers pair by pair (the structure of the reference code's ``GroundTruth``; kept in the log domain with a running
log-sum-exp, since raw ``exp`` underflows at this D). Asserts both agree, prints a markdown table, writes JSON.

    OMP_NUM_THREADS=1 python benchmarks/field_target_cost.py [--shapes 2 1,28,28 3,32,32] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from functools import partial
from pathlib import Path

import torch

from lightning_fm.fields import CoulombField, ForwardOnlyField, StrongInteractionField
from lightning_fm.fields.volume import UniformVolume
from lightning_fm.paths import BrownianBridgePath, LinearPath


class Running:
    """Online log-sum-exp accumulation of ``sum_j exp(logw_j) v_j`` over the pairs of the loop."""

    def __init__(self) -> None:
        self.shift, self.acc, self.weight = None, None, None

    def add(self, logw: torch.Tensor, v: torch.Tensor) -> None:
        if self.shift is None:
            self.shift, self.acc, self.weight = logw, v, torch.ones_like(logw)
            return
        shift = torch.maximum(self.shift, logw)
        old, new = torch.exp(self.shift - shift), torch.exp(logw - shift)
        self.acc = self.acc * old[:, None] + v * new[:, None]
        self.weight = self.weight * old + new
        self.shift = shift


def unit(e: torch.Tensor) -> torch.Tensor:
    return e / e.norm(dim=1, keepdim=True)


def loop_coulomb(field, z, x, x0, x1):
    D = x.shape[1]
    acc = Running()
    for j in range(x0.shape[0]):
        for sign, zc, xc in ((1.0, 0.0, x0[j]), (-1.0, field.L, x1[j])):
            u = torch.cat([(z - zc)[:, None], x - xc], 1)
            acc.add(-0.5 * (D + 1) * torch.log(u.square().sum(1)), sign * u)
    return unit(acc.acc)


def loop_coulomb_separate(field, z, x, x0, x1):
    D = x.shape[1]
    parts = []
    for sign, zc, charges in ((1.0, 0.0, x0), (-1.0, field.L, x1)):
        acc = Running()
        for j in range(charges.shape[0]):
            u = torch.cat([(z - zc)[:, None], x - charges[j]], 1)
            acc.add(-0.5 * (D + 1) * torch.log(u.square().sum(1)), sign * u)
        e = acc.acc / acc.weight[:, None]
        parts.append(e / (e.norm(dim=1, keepdim=True) + field.gamma))
    return unit(parts[0] + parts[1])


def loop_path(path, L, z, x, x0, x1):
    t = z / L
    acc = Running()
    for j in range(x0.shape[0]):
        c0, c1 = x0[j].expand_as(x), x1[j].expand_as(x)
        acc.add(path.log_prob(x, t, c0, c1), path.velocity(x, t, c0, c1))
    v = acc.acc / acc.weight[:, None]
    return unit(torch.cat([torch.ones_like(z)[:, None], v / L], 1))


def loop_strong_code(field, z, x, x0, x1):
    D, L, S = x.shape[1], field.L, field.scale
    t = z / L
    sigma, rate = field.path.sigma(t), field.path.log_sigma_rate(t) / L
    acc = Running()
    for j in range(x0.shape[0]):
        delta = x1[j] - x0[j]
        n_pair = torch.cat([torch.full((1,), L), delta]) / math.sqrt(L**2 + float(delta.square().sum()))
        rho = x - x0[j] - t[:, None] * delta
        r = rho.norm(dim=1)
        alpha = torch.arctan(r * rate)
        e = torch.cos(alpha)[:, None] * n_pair + torch.sin(alpha)[:, None] * torch.cat(
            [torch.zeros_like(z)[:, None], rho / (r[:, None] + 1e-30)], 1
        )
        den = torch.logaddexp(
            torch.log(torch.cos(alpha) + 1e-8) + D * torch.log(sigma / S), torch.tensor(math.log(1e-2))
        )
        acc.add(-r.square() / (2 * sigma.square()) - den, e)
    return unit(acc.acc)


def cases():
    L = 20.0
    strong_code = StrongInteractionField(L, 1.0, exact=False)
    return [
        ("CoulombField (EFM, shared shift)", CoulombField(L), lambda *a: loop_coulomb(CoulombField(L), *a)),
        (
            "CoulombField (separate norm., gamma=5)",
            CoulombField(L, True, 5.0),
            lambda *a: loop_coulomb_separate(CoulombField(L, True, 5.0), *a),
        ),
        (
            "StrongInteractionField exact",
            StrongInteractionField(L, 1.0),
            lambda *a: loop_path(StrongInteractionField(L, 1.0).path, L, *a),
        ),
        ("StrongInteractionField code (exact=False)", strong_code, lambda *a: loop_strong_code(strong_code, *a)),
        (
            "ForwardOnlyField(LinearPath(0.1))",
            ForwardOnlyField(LinearPath(0.1), L),
            lambda *a: loop_path(LinearPath(0.1), L, *a),
        ),
        (
            "ForwardOnlyField(BrownianBridgePath(1))",
            ForwardOnlyField(BrownianBridgePath(1.0), L),
            lambda *a: loop_path(BrownianBridgePath(1.0), L, *a),
        ),
    ]


def best_time(fn, repeats: int) -> tuple[float, object]:
    out, best = None, math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--points", type=int, default=64)
    parser.add_argument(
        "--shapes", nargs="+", default=["2", "1,28,28", "3,32,32"], help="data shapes, comma-separated dimensions"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--loop-repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tol", type=float, default=1e-5, help="max abs difference allowed between the two")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "field_target_cost.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for shape in [tuple(int(d) for d in text.split(",")) for text in args.shapes]:
        g = torch.Generator().manual_seed(0)
        x0 = torch.rand(args.pairs, *shape, generator=g)  # "images" in [0, 1] on the source plate
        x1 = torch.randn(args.pairs, *shape, generator=g)  # noise on the target plate
        z, x = UniformVolume(tube_noise=2.0)(x0[: args.points], x1[: args.points], 20.0, generator=g)
        flat = (z, x.flatten(1), x0.flatten(1), x1.flatten(1))
        for name, field, loop in cases():
            field.direction(z, x, x0, x1)  # warm-up
            vec_s, (nz, nx) = best_time(partial(field.direction, z, x, x0, x1), args.repeats)
            loop_s, ref = best_time(partial(loop, *flat), args.loop_repeats)
            diff = float((torch.cat([nz[:, None], nx.flatten(1)], 1) - ref).abs().max())
            assert diff < args.tol, f"{name}, D={x[0].numel()}: vectorised and loop directions differ by {diff:.2e}"
            rows.append(
                {
                    "field": name,
                    "D": x[0].numel(),
                    "vectorised_ms": 1e3 * vec_s,
                    "loop_ms": 1e3 * loop_s,
                    "speedup": loop_s / vec_s,
                    "max_abs_diff": diff,
                }
            )
            print(rows[-1], flush=True)
    print(
        f"\nB = {args.pairs} pairs, b = {args.points} points, float32, {args.threads} thread(s), "
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    )
    print("| field | D | vectorised ms | loop ms | speed-up | max abs diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['field']} | {r['D']} | {r['vectorised_ms']:.2f} | {r['loop_ms']:.1f} | {r['speedup']:.1f}x | "
            f"{r['max_abs_diff']:.1e} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "pairs": args.pairs,
                "points": args.points,
                "threads": args.threads,
                "torch": torch.__version__,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
