"""Likelihoods through the duality (docs/concepts/likelihoods.md#forward-only-fields): three experiments, written to
``benchmarks/results/likelihood_duality.json`` and ``.md`` (the table is also printed).

1. **Exact current.** The space-time current ``E = p_t(x) (1, u_t(x)/L)`` of a closed-form Gaussian path
   (:class:`~lightning_fm.duality.GaussianToy`: N(0, I) -> N(m, 0.5^2 I), independent coupling; the linear path with
   sigma = 0 and IFM's sine bridge, sigma_t = 0.5 sin(pi t)) read as a velocity through Psi
   (:class:`~lightning_fm.duality.FieldAsVelocity`, ``v = L E_x / E_z``): its log-likelihood against the closed-form
   ``log N(x; m, 0.25 I)`` of 256 target samples, D = 2 and 16, dopri5 with the exact divergence at two tolerances.
2. **Duality on the toy.** OT-CFM (LinearPath(0.1), exact minibatch OT, 64-wide SELU MLP, Adam 1e-3, batch 256,
   clip 1, 8gaussians -> moons) and its dual forward-only IFM (``configs/toy/forward_only_ifm.yaml``'s field, L = 5,
   the same MLP in a FieldHead) trained with the same seed and steps
   by the duality experiment's own ``train`` (EMA 0.999; :mod:`lightning_fm.experiments.duality.run`); the held-out
   test targets' log-likelihoods of both (source: the 8-Gaussian mixture, dopri5 1e-5, exact divergence), their
   difference, and the models' learned velocity discrepancy (C13) on held-out path points.
3. **Digits.** ``val/bpd`` (17 levels, Hutchinson) of short fits of ``configs/digits/cfm.yaml`` and
   ``configs/digits/forward_only_ifm.yaml`` through the CLI: the configs' own HeldOutLikelihood on all 359
   validation images (the configs use the first 100), the EMA weights after ``--digits_steps`` steps (one
   validation, after the fit).

    python benchmarks/likelihood_duality.py [--toy_steps 5000] [--digits_steps 1200] [--skip_digits] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import tempfile
import time
from pathlib import Path

import torch

from lightning_fm.duality import FieldAsVelocity, GaussianToy, check_learned_consistency
from lightning_fm.likelihood import log_likelihood
from lightning_fm.paths import LinearPath, SineBridgePath

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
DIGITS_VALIDATION = 359  # the digits' validation split (val_fraction 0.2, seed 0)


class ExactCurrent:
    """The current ``(p_t(x), p_t(x) u_t(x) / L)`` of a GaussianToy's marginal path, as a field model."""

    def __init__(self, toy: GaussianToy, L: float) -> None:
        self.toy, self.L = toy, L

    def field_output(self, z, x):
        t = z / self.L
        density = torch.exp(self.toy.log_prob(x, t))
        return density, density[:, None] * self.toy.velocity(x, t) / self.L


def exact_current_rows(n: int = 256) -> list[dict]:
    rows = []
    for path_name, path in (("LinearPath(0)", LinearPath(0.0)), ("SineBridgePath(0.5)", SineBridgePath(0.5))):
        for dim in (2, 16):
            toy = GaussianToy(path, m0=0.0, s0=1.0, m1=torch.linspace(-1.0, 2.0, dim), s1=0.5, dim=dim)
            x = toy.sample_target(n, torch.Generator().manual_seed(0))
            expected = toy.log_prob(x, 1.0)
            for tol in (1e-5, 1e-7):
                dual = FieldAsVelocity(ExactCurrent(toy, 5.0), min_fz=0.0)
                start = time.perf_counter()
                result = log_likelihood(dual.velocity, x, lambda y, toy=toy: toy.log_prob(y, 0.0), atol=tol, rtol=tol)
                error = (result.log_prob - expected).abs()
                rows.append(
                    {
                        "path": path_name,
                        "D": dim,
                        "tol": tol,
                        "max_abs_error": float(error.max()),
                        "mean_abs_error": float(error.mean()),
                        "nfe": result.nfe,
                        "guarded": dual.n_invalid,
                        "seconds": time.perf_counter() - start,
                        "mean_log_prob": float(expected.mean()),
                    }
                )
    return rows


def toy_duality_row(steps: int, out: Path) -> dict:
    from lightning_fm.callbacks.held_out_likelihood import source_density
    from lightning_fm.experiments.duality.run import DEFAULTS, build_models, heldout, train

    cfg = copy.deepcopy(DEFAULTS)
    cfg["path"] = {"class_path": "lightning_fm.paths.LinearPath", "init_args": {"sigma": 0.1}}  # otcfm.yaml's
    cfg["L"] = 5.0
    cfg["train"].update(max_steps=steps, progress_bar=False)
    cfg["checks"]["every_n_steps"] = steps  # the DualityCheck once at the start and at the end only
    cfm, ifm = build_models(cfg)
    fits = {name: train(module, name, cfg, out) for name, module in (("cfm", cfm), ("ifm", ifm))}
    datamodule = fits["cfm"]["datamodule"]
    source = source_density(datamodule)
    x = datamodule.eval_set("test")["x1"]
    values, details = {}, {}
    for name, module in (("cfm", cfm), ("ifm", ifm)):
        module.eval()
        start = time.perf_counter()
        result = module.log_likelihood(x, source)
        values[name] = result.log_prob
        val = fits[name]["val"]
        details[name] = {
            "mean_log_prob": float(result.log_prob.mean()),
            "nfe": result.nfe,
            "seconds": time.perf_counter() - start,
            "val_w2": val.get("val/w2"),
            "val_w2_floor": val.get("val/w2_floor"),
            "fit_seconds": fits[name]["fit_seconds"],
        }
        if result.guarded is not None:
            details[name]["guarded_lines"] = int(result.guarded.sum())
    diff = values["ifm"] - values["cfm"]
    g = torch.Generator().manual_seed(cfg["seed"])
    _, _, _, t, xt = heldout(cfg, datamodule, cfm, g)
    c13 = check_learned_consistency(cfm, ifm, t, xt)[0]
    return {
        "steps": steps,
        "n": len(x),
        "L": cfg["L"],
        "models": details,
        "mean_difference": float(diff.mean()),
        "mean_abs_difference": float(diff.abs().mean()),
        "std_difference": float(diff.std()),
        "max_abs_difference": float(diff.abs().max()),
        "standard_error_of_mean_difference": float(diff.std() / math.sqrt(len(diff))),
        "c13_velocity_rel_l2": float(c13.value),
    }


def digits_row(config: str, steps: int, out: Path) -> dict:
    """Fit ``config`` for ``steps`` steps through the CLI (no validation during the fit), then validate the EMA
    weights once with the config's own HeldOutLikelihood, on all validation images."""
    from lightning.pytorch import Trainer

    from lightning_fm.callbacks import HeldOutLikelihood
    from lightning_fm.cli import main

    start = time.perf_counter()
    cli = main(
        [
            "fit",
            "-c",
            str(REPO / config),
            f"--trainer.max_steps={steps}",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            f"--trainer.logger.init_args.save_dir={out}",
        ]
    )
    fit_seconds = time.perf_counter() - start
    callback = next(c for c in cli.trainer.callbacks if isinstance(c, HeldOutLikelihood))
    callback.n_points = DIGITS_VALIDATION  # all validation images, not the config's subset
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    metrics = trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    metrics = {
        k: float(v) for k, v in metrics.items() if "bpd" in k or "likelihood" in k or k in ("val/w2", "val/w2_floor")
    }
    return {
        "config": config,
        "steps": steps,
        "metrics": metrics,
        "fit_seconds": fit_seconds,
        "wall_seconds": time.perf_counter() - start,
        "callback": {
            "n_points": callback.n_points,
            "levels": callback._image_levels,
            "divergence": callback.divergence_for(64),
            **callback.solver,
        },
    }


def table(report: dict) -> str:
    lines = [
        "## Exact current of a Gaussian path -> closed-form density (dopri5, exact divergence, 256 points)",
        "",
        "| path | D | tol | max abs error | mean abs error | NFE | guarded |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report["exact_current"]:
        lines.append(
            f"| {r['path']} | {r['D']} | {r['tol']:.0e} | {r['max_abs_error']:.2e} | "
            f"{r['mean_abs_error']:.2e} | {r['nfe']} | {r['guarded']} |"
        )
    if "toy_duality" in report:
        d = report["toy_duality"]
        lines += [
            "",
            f"## OT-CFM vs its dual forward-only IFM (L = {d['L']}), 8gaussians -> moons, {d['steps']} steps "
            f"each, {d['n']} held-out targets",
            "",
            "| model | mean log p (nats) | NFE | val/w2 (floor) | guarded lines |",
            "|---|---|---|---|---|",
        ]
        for name, label in (("cfm", "OT-CFM"), ("ifm", "forward-only IFM")):
            m = d["models"][name]
            lines.append(
                f"| {label} | {m['mean_log_prob']:.4f} | {m['nfe']} | {m['val_w2']:.4f} "
                f"({m['val_w2_floor']:.4f}) | {m.get('guarded_lines', '-')} |"
            )
        lines += [
            "",
            f"difference IFM - CFM: mean {d['mean_difference']:+.4f} (s.e. "
            f"{d['standard_error_of_mean_difference']:.4f}), mean |.| {d['mean_abs_difference']:.4f}, "
            f"max |.| {d['max_abs_difference']:.4f}; learned velocity discrepancy (C13, rel L2) "
            f"{d['c13_velocity_rel_l2']:.4f}",
        ]
    for r in report.get("digits", []):
        m = r["metrics"]
        lines += [
            "",
            f"## {r['config']}: {r['steps']} steps: val/bpd {m.get('val/bpd', float('nan')):.4f} "
            f"(NFE {m.get('val/likelihood_nfe', float('nan')):.0f}, "
            f"{m.get('val/likelihood_seconds', float('nan')):.1f} s, {r['callback']})",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy_steps", type=int, default=5000)
    parser.add_argument("--digits_steps", type=int, default=1200)
    parser.add_argument("--skip_toy", action="store_true")
    parser.add_argument("--skip_digits", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report: dict = {
        "settings": {**vars(args), "torch": torch.__version__, "machine": platform.processor() or platform.machine()}
    }
    start = time.perf_counter()
    report["exact_current"] = exact_current_rows()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_toy:
            report["toy_duality"] = toy_duality_row(args.toy_steps, Path(tmp) / "toy")
        if not args.skip_digits:
            report["digits"] = [
                digits_row(c, args.digits_steps, Path(tmp) / "digits")
                for c in ("configs/digits/cfm.yaml", "configs/digits/forward_only_ifm.yaml")
            ]
    report["wall_seconds"] = time.perf_counter() - start
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "likelihood_duality.json").write_text(json.dumps(report, indent=2, default=str))
    text = table(report)
    (RESULTS / "likelihood_duality.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
