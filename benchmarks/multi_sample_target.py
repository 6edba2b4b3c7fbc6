"""Single- vs multi-sample CFM targets (docs/concepts/duality.md#multi-sample-target) at equal training steps on several
2-D toy problems.

For each problem both targets train the same MLP with the same path, coupling, seed and number of steps; the table
reports the final ``val/w2`` (2000 samples, 100 Euler steps; the noise floor beside it), the target variance and the
wall time. The target variance is ``E_{t,x} E || target - u_t(x) ||^2`` around the marginal velocity ``u_t(x)``,
estimated at 512 points ``(t, x_t)`` per problem: ``u_t(x)`` is the posterior average over 16384 independent pairs,
the multi-sample target is recomputed with the point's own pair and B - 1 fresh pairs (16 redraws), and the
single-sample target is the own pair's ``u_t(x|c)``.

    python benchmarks/multi_sample_target.py [--steps 3000] [--sigma 0.3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import EMAWeightAveraging

from lightning_fm.couplings import IndependentCoupling
from lightning_fm.data import ToyDataModule, sample_toy
from lightning_fm.models import MLP
from lightning_fm.modules import CFMModule
from lightning_fm.paths import LinearPath

PROBLEMS = [("8gaussians", "moons"), ("gaussian", "moons"), ("gaussian", "8gaussians"), ("moons", "8gaussians")]


def target_variance(path, source: str, target: str, batch: int, points: int = 512, redraws: int = 16) -> dict:
    g = torch.Generator().manual_seed(123)
    draw = lambda name, n: sample_toy(name, n, g)[0].double()  # noqa: E731
    x0, x1 = draw(source, points), draw(target, points)
    t = torch.rand(points, generator=g, dtype=torch.float64)
    xt = path.sample(x0, x1, t, noise=torch.randn(points, 2, generator=g, dtype=torch.float64)).xt
    marginal = path.posterior(xt, t, draw(source, 16384), draw(target, 16384)).velocity
    single = path.velocity(xt, t, x0, x1)
    multi_err = torch.zeros(points, dtype=torch.float64)
    for _ in range(redraws):
        for i in range(points):  # own pair + B-1 fresh pairs
            c0 = torch.cat([x0[i : i + 1], draw(source, batch - 1)])
            c1 = torch.cat([x1[i : i + 1], draw(target, batch - 1)])
            v = path.posterior(xt[i : i + 1], t[i : i + 1], c0, c1).velocity
            multi_err[i] += (v - marginal[i]).pow(2).sum() / redraws
    return {"single": float((single - marginal).pow(2).sum(1).mean()), "multi": float(multi_err.mean())}


def train(source: str, target: str, kind: str, steps: int, sigma: float, batch: int) -> dict:
    seed_everything(0, verbose=False)
    model = CFMModule(MLP(2, 64, 3), LinearPath(sigma), IndependentCoupling(), velocity_target=kind)
    data = ToyDataModule(source, target, batch_size=batch, steps_per_epoch=steps)
    trainer = Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EMAWeightAveraging(decay=0.999)],
        gradient_clip_val=1.0,
        num_sanity_val_steps=0,
        accelerator="cpu",
    )
    start = time.perf_counter()
    trainer.fit(model, data)
    elapsed = time.perf_counter() - start
    m = trainer.callback_metrics
    return {"w2": float(m["val/w2"]), "w2_floor": float(m["val/w2_floor"]), "seconds": elapsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--sigma", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "multi_sample_target.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = LinearPath(args.sigma)
    rows = []
    for source, target in PROBLEMS:
        variance = target_variance(path, source, target, args.batch_size)
        for kind in ("single", "multi"):
            result = train(source, target, kind, args.steps, args.sigma, args.batch_size)
            rows.append(
                {"problem": f"{source} -> {target}", "target": kind, "target_variance": variance[kind], **result}
            )
            print(rows[-1], flush=True)
    print(
        f"\nI-CFM, LinearPath(sigma={args.sigma}), batch {args.batch_size} (charges = whole batch), "
        f"{args.steps} steps, EMA 0.999, val: 2000 samples, 100 Euler steps"
    )
    print("| problem | target | val/w2 | W2 floor | target variance | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['problem']} | {r['target']} | {r['w2']:.3f} | {r['w2_floor']:.3f} | {r['target_variance']:.3f} "
            f"| {r['seconds']:.0f} |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"steps": args.steps, "sigma": args.sigma, "batch_size": args.batch_size, "rows": rows}, indent=2)
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
