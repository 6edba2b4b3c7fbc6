"""``python -m lightning_fm duality -c configs/toy/duality.yaml [--out DIR] [--max_steps N] [--seed S]``

The duality experiment (MATH.md §6, §9): train a CFM model and its dual, a forward-only IFM model, on the same data,
path, coupling and seed; check every identity that links them; convert each trained model into the other; show
with the exact EFM field why general IFM is larger than CFM; write a report a researcher can read without the code.

Output directory (``<root_dir>/version_<n>/``, or ``--out DIR``): ``report.md`` (tables of every check with value,
tolerance, kind, pass/fail and a plain-language explanation), ``report.json`` (the same, machine-readable),
``duality.png`` (trajectories, samples, EFM field lines), ``cfm.ckpt`` / ``ifm.ckpt`` (EMA weights; reload with
``CFMModule.load_from_checkpoint`` / ``ForwardOnlyIFMModule.load_from_checkpoint``), and the CSV logs of both fits.

Config keys (plain YAML; every key optional, defaults in :data:`DEFAULTS`): ``seed``, ``root_dir``,
``num_threads``, ``L``, ``path`` and ``coupling`` (``{class_path, init_args}`` specs), ``backbone`` (MLP arguments),
``data`` (ToyDataModule arguments), ``train`` (steps, optimiser, EMA, validation), ``sample_steps`` (Euler steps of
every sampler), ``checks`` and ``efm``.

The report (``report.md``, ``report.json``) is written by :mod:`lightning_fm.experiments.duality.report`, the figure by
:mod:`lightning_fm.experiments.duality.figure`.
"""
from __future__ import annotations

import argparse
import copy
import functools
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml

from lightning_fm.duality import (
    CheckResult,
    FieldAsVelocity,
    VelocityAsField,
    check_forward_only,
    check_learned_consistency,
    field_from_path,
    path_from_field,
    run_exact_checks,
    run_statistical_checks,
)
from lightning_fm.experiments.duality.figure import make_figure
from lightning_fm.experiments.duality.report import write_report
from lightning_fm.fields import CoulombField
from lightning_fm.metrics import wasserstein2
from lightning_fm.utils.spec import build, describe

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "root_dir": "runs/duality",
    "num_threads": None,
    "L": 5.0,
    "path": {"class_path": "lightning_fm.paths.SineBridgePath", "init_args": {"scale": 0.5}},
    "coupling": {"class_path": "lightning_fm.couplings.OTCoupling", "init_args": {"method": "exact"}},
    "backbone": {"width": 64, "depth": 3, "activation": "selu"},
    "data": {"source": "8gaussians", "target": "moons", "batch_size": 256, "n_val": 2000, "n_test": 2000, "seed": 0},
    "train": {"max_steps": 4000, "lr": 1e-3, "gradient_clip_val": 1.0, "ema_decay": 0.999,
              "val_every_n_steps": 1000, "log_every_n_steps": 50, "progress_bar": True},
    "sample_steps": 100,
    "checks": {"every_n_steps": 500, "n_points": 512, "c13_rel_tolerance": 0.1, "c13_w2_tolerance": None,
               "statistical_n": 2000},
    # EFM: charges per plate (data samples), points behind/between the plates, sample lines, their continuation cap
    "efm": {"n_charges": 256, "n_points": 2000, "n_lines": 256, "max_arc_steps": 1000},
}


# -- configuration ---------------------------------------------------------------------------------------------
def _merge(base: dict, override: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if key not in base:
            raise ValueError(f"duality config: unknown key {prefix + key!r}; known: {sorted(base)}")
        spec_like = isinstance(value, dict) and "class_path" in value
        if isinstance(base[key], dict) and isinstance(value, dict) and not spec_like and "class_path" not in base[key]:
            out[key] = _merge(base[key], value, f"{prefix}{key}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_args(args: list[str]) -> tuple[dict, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m lightning_fm duality", description=__doc__.split("\n\n")[1])
    parser.add_argument("-c", "--config", help="YAML file (keys of lightning_fm.experiments.duality.run.DEFAULTS)")
    parser.add_argument("--out", help="write the report exactly here (default: <root_dir>/version_<n>)")
    parser.add_argument("--max_steps", type=int, help="training steps of each model (overrides train.max_steps)")
    parser.add_argument("--seed", type=int, help="overrides seed")
    ns = parser.parse_args(args)
    cfg = DEFAULTS
    if ns.config:
        with open(ns.config) as fh:
            cfg = _merge(DEFAULTS, yaml.safe_load(fh) or {})
    cfg = copy.deepcopy(cfg)
    if ns.max_steps is not None:
        if ns.max_steps < 1:
            parser.error("--max_steps must be >= 1")
        cfg["train"]["max_steps"] = ns.max_steps
    if ns.seed is not None:
        cfg["seed"] = ns.seed
    if not float(cfg["L"]) > 0:
        raise ValueError(f"duality config: L must be > 0, got {cfg['L']}")
    return cfg, ns


def output_dir(cfg: dict, out: str | None) -> Path:
    if out:
        path = Path(out)
    else:
        root = Path(cfg["root_dir"])
        n = 0
        while (root / f"version_{n}").exists():
            n += 1
        path = root / f"version_{n}"
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- training --------------------------------------------------------------------------------------------------
def build_models(cfg: dict):
    """The CFM model and its dual forward-only IFM model: same path, coupling, backbone shape, optimiser, sampler."""
    from lightning.pytorch import seed_everything

    from lightning_fm.models import MLP, FieldHead
    from lightning_fm.modules import CFMModule, ForwardOnlyIFMModule
    from lightning_fm.sampling import FieldLineSampler, ODESampler

    optimizer = functools.partial(torch.optim.Adam, lr=cfg["train"]["lr"])
    seed_everything(cfg["seed"], verbose=False)
    cfm = CFMModule(backbone=MLP(data_shape=[2], **cfg["backbone"]), path=build(cfg["path"]),
                    coupling=build(cfg["coupling"]), sampler=ODESampler("euler", cfg["sample_steps"]),
                    optimizer=optimizer)
    seed_everything(cfg["seed"], verbose=False)
    ifm = ForwardOnlyIFMModule(backbone=FieldHead(MLP(data_shape=[2], **cfg["backbone"])), path=build(cfg["path"]),
                               L=cfg["L"], coupling=build(cfg["coupling"]),
                               sampler=FieldLineSampler("euler", cfg["sample_steps"]), optimizer=optimizer)
    return cfm, ifm


def train(module, name: str, cfg: dict, out: Path) -> dict:
    """Fit ``module`` in-process on CPU with EMA and a :class:`DualityCheck`; validate the EMA weights."""
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import EMAWeightAveraging
    from lightning.pytorch.loggers import CSVLogger

    from lightning_fm.callbacks import DualityCheck
    from lightning_fm.data import ToyDataModule

    tc = cfg["train"]
    seed_everything(cfg["seed"], verbose=False)
    datamodule = ToyDataModule(steps_per_epoch=min(tc["val_every_n_steps"], tc["max_steps"]), **cfg["data"])
    check = DualityCheck(every_n_steps=cfg["checks"]["every_n_steps"], L=cfg["L"], seed=cfg["seed"])
    trainer = Trainer(
        accelerator="cpu", devices=1, max_steps=tc["max_steps"], gradient_clip_val=tc["gradient_clip_val"],
        log_every_n_steps=tc["log_every_n_steps"], num_sanity_val_steps=0, enable_checkpointing=False,
        enable_model_summary=False, enable_progress_bar=tc["progress_bar"],
        logger=CSVLogger(str(out), name=name, version=""),
        callbacks=[EMAWeightAveraging(decay=tc["ema_decay"]), check],
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    fit_seconds = time.perf_counter() - start
    validated = [step for step, stage, _ in check.history if stage == "validation"]
    if validated and validated[-1] == trainer.global_step and "val/w2" in trainer.callback_metrics:
        metrics = dict(trainer.callback_metrics)  # the fit ended on a validation of the EMA weights: reuse it
    else:
        metrics = trainer.validate(module, datamodule=datamodule, verbose=False)[0]
    metrics = {k: v for k, v in metrics.items() if k.startswith("val/")}
    trainer.save_checkpoint(str(out / f"{name}.ckpt"))
    module.eval()
    return {
        "steps": trainer.global_step, "fit_seconds": fit_seconds, "steps_per_second": trainer.global_step / fit_seconds,
        "val": {k: float(v) for k, v in metrics.items()}, "callback_overhead": check.overhead,
        "callback_seconds": check.seconds, "callback_exact_failures": len(check.failures),
        "callback_last": [r.name for r in check.results], "datamodule": datamodule,
    }


# -- checks after training -------------------------------------------------------------------------------------
MAX_SLOPE = 10.0  # |dx/dz| = |v|/L above which a learned field is called steep (an untrained network)


def well_posed_lines(field_fn, times, trajectory, flag_fz: float = 1e-3, max_slope: float = MAX_SLOPE):
    """``(B,)`` bool: the recorded lines along which the field kept ``f_z > flag_fz`` and ``|f_x|/f_z <= max_slope``
    at every evaluated point (``times``: z values)."""
    traj, z = trajectory[:-1], times[:-1]
    k, b = traj.shape[:2]
    with torch.no_grad():
        fz, fx = field_fn(z[:, None].expand(k, b).reshape(-1), traj.reshape(k * b, *traj.shape[2:]))
    fz = torch.nan_to_num(fz, nan=-1.0)
    slope = fx.flatten(1).norm(dim=1) / fz.clamp_min(torch.finfo(fz.dtype).tiny)
    good = (fz > flag_fz) & (slope <= max_slope)
    return good.reshape(k, b).all(0)


def sample_agreement(a, b, name: str, well_posed, tolerance: float = 1e-5, **details) -> CheckResult:
    """C5 on whole samples: ``max |a - b| / (1 + max |a|)`` (float32 tolerance 1e-5).

    Exact when the field is well posed on every line (``well_posed``: ``f_z > 1e-3`` and ``|dx/dz| <= 10`` all
    along): then only rounding separates the two samplers. Otherwise (an untrained or not forward-only network: a
    steep flow amplifies the rounding, and ``v = L f_x/f_z`` is huge or undefined where ``f_z`` is small) the row
    is a diagnostic; the per-step identity stays exact (the "each Euler step" rows).
    """
    finite = torch.isfinite(a).flatten(1).all(1) & torch.isfinite(b).flatten(1).all(1)
    ok = well_posed & finite
    details = {"ill_posed_lines": int((~ok).sum()), "lines": int(a.shape[0]), **details}
    if not bool(finite.any()):
        return CheckResult(name, float("nan"), tolerance, False, "diagnostic", details)
    diff = (a[finite] - b[finite]).abs().max()
    value = float(diff / (1 + a[finite].abs().max()))
    kind = "exact" if bool(ok.all()) else "diagnostic"
    return CheckResult(name, value, tolerance, bool(value <= tolerance), kind, {"max_abs": float(diff), **details})


def heldout(cfg: dict, datamodule, module, g: torch.Generator):
    """Held-out (test-stream) pairs, coupled in training-size batches, and points ``(t, x_t)`` of the path."""
    batch = datamodule.eval_set("test")
    x0, x1 = batch["x0"], batch["x1"]
    size = cfg["data"]["batch_size"]
    pairs = [tuple(module.coupling(x0[s:s + size], x1[s:s + size]))[:2] for s in range(0, len(x0), size)]
    c0, c1 = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    t = torch.rand(len(c0), generator=g)
    noise = torch.randn(c0.shape, generator=g)
    xt = module.path.sample(c0, c1, t, noise=noise).xt
    return batch, c0, c1, t, xt


def learned_checks(cfm, ifm, cfg: dict, x_source, c0, c1, g) -> tuple[list[CheckResult], dict]:
    """Conversions (CFM -> VelocityAsField, IFM -> FieldAsVelocity) and the networks' own exact identities."""
    from lightning_fm.duality.checks.learned import euler_step_identity, learned_cfm_checks, learned_ifm_checks

    L, steps = float(cfg["L"]), cfg["sample_steps"]
    with torch.no_grad():
        cfm_samples = cfm.sample(x_source, steps=steps, method="euler", record=True)
        as_field = VelocityAsField(cfm, L).sample(x_source, steps=steps, method="euler")
        ifm_samples = ifm.sample(x_source, steps=steps, method="euler", record=True)
        as_velocity = FieldAsVelocity(ifm).sample(x_source, steps=steps, method="euler")
    cfm_field = VelocityAsField(cfm, L).field_output
    cfm_z = cfm_samples.times * L  # the CFM trajectory at t is the field line at z = t L
    n = cfg["checks"]["n_points"]  # lines of the per-step identity (all lines for the samples)
    results = [
        euler_step_identity(cfm.velocity, cfm_field, cfm_z, cfm_samples.trajectory[:, :n], L,
                            "C5 CFM -> VelocityAsField: each Euler step in z = in t"),
        sample_agreement(cfm_samples.x, as_field.x, "C5 CFM -> VelocityAsField: z-Euler samples = CFM samples",
                         well_posed_lines(cfm_field, cfm_z, cfm_samples.trajectory),
                         backward_lines=as_field.info["backward"]),
        euler_step_identity(FieldAsVelocity(ifm).velocity, ifm.field_output, ifm_samples.times,
                            ifm_samples.trajectory[:, :n], L, "C5 IFM -> FieldAsVelocity: each Euler step in t = in z"),
        sample_agreement(ifm_samples.x, as_velocity.x, "C5 IFM -> FieldAsVelocity: t-Euler samples = IFM samples",
                         well_posed_lines(ifm.field_output, ifm_samples.times, ifm_samples.trajectory),
                         guarded=as_velocity.info["invalid"]),
    ]
    results += learned_cfm_checks(cfm, c0[:n], c1[:n], L, steps, g, step_identity=False)  # C5: the rows above
    results += learned_ifm_checks(ifm, c0[:n], c1[:n], L, steps, g, step_identity=False)
    # Phi(path) on this experiment's data: every point between the plates has E_z > 0
    field = field_from_path(ifm.path, L)
    pts_t = 0.01 + 0.98 * torch.rand(len(c0), generator=g)
    x_on = ifm.path.sample(c0, c1, pts_t, noise=torch.randn(c0.shape, generator=g)).xt
    x_off = x_on + 3 * torch.randn(c0.shape, generator=g)
    guard = check_forward_only(field, torch.cat([pts_t, pts_t]) * L, torch.cat([x_on, x_off]), c0, c1)
    results.append(replace(guard, name="C9 forward-only guard of Phi(path) on the data"))
    samples = {"cfm": cfm_samples, "ifm": ifm_samples, "as_field": as_field.x, "as_velocity": as_velocity.x}
    return results, samples


def model_rows(fits: dict) -> list[CheckResult]:
    rows = []
    for name, label in (("cfm", "CFM"), ("ifm", "forward-only IFM")):
        val = fits[name]["val"]
        floor = val.get("val/w2_floor", float("nan"))
        w2, scale = val["val/w2"], max(0.3, 2 * floor)
        rows.append(CheckResult(f"val/w2 of the {label} model (EMA)", w2, scale, bool(w2 <= scale), "diagnostic",
                                {"w2_floor": floor, "nfe": val.get("val/nfe")}))
    return rows


# -- EFM -------------------------------------------------------------------------------------------------------
def efm_checks(cfg: dict, batch: dict, g: torch.Generator) -> tuple[list[CheckResult], dict]:
    """The exact Coulomb field of the same data: lines leave the slab, E_z < 0 behind the plates, Psi undefined."""
    from lightning_fm.sampling import integrate_field_lines

    L, ec = float(cfg["L"]), cfg["efm"]
    k = ec["n_charges"]
    P, Q = batch["x0"][:k].double(), batch["x1"][:k].double()
    field = CoulombField(L)
    n = ec["n_points"]
    src, tgt = batch["x0"][k:k + n].double(), batch["x1"][k:k + n].double()
    if len(src) < 2:
        src, tgt = P, Q
    half = len(src) // 2
    depth = 0.5 * L * torch.rand(len(src), generator=g, dtype=torch.float64)
    z_behind = torch.cat([-depth[:half], L + depth[half:]])
    x_behind = torch.cat([src[:half], tgt[half:]])
    behind = check_forward_only(field, z_behind, x_behind, P, Q, expect_forward_only=False)
    results = [replace(behind, name="C9 EFM: E_z <= 0 behind the plates")]
    s = 0.01 + 0.98 * torch.rand(len(src), generator=g, dtype=torch.float64)
    x_in = (1 - s)[:, None] * src + s[:, None] * tgt + torch.randn(src.shape, generator=g, dtype=torch.float64)
    inside = check_forward_only(field, s * L, x_in, P, Q, expect_forward_only=True)
    results.append(replace(inside, name="C9 EFM: E_z <= 0 between the plates", kind="diagnostic"))
    # flux leaving every source charge backward: directions on a small sphere around the charges
    m = min(64, k)
    omega = torch.randn(m * 32, 3, generator=g, dtype=torch.float64)
    omega = omega / omega.norm(dim=1, keepdim=True)
    r0 = 1e-3
    nz, _ = field.direction(r0 * omega[:, 0], P[:m].repeat_interleave(32, 0) + r0 * omega[:, 1:], P, Q)
    frac = float((nz <= 0).double().mean())
    results.append(CheckResult("EFM: flux leaving the source charges backward (z < 0)", frac, 0.0, frac > 0,
                               "diagnostic", {"n_directions": len(nz), "radius": r0}))
    # sample lines from the source plate (the EFM sampler): how many run far behind the target plate
    starts = src[: ec["n_lines"]]
    with torch.no_grad():
        lines = integrate_field_lines(lambda zz, xx: field.direction(zz, xx, P, Q), starts, L, method="euler",
                                      steps=cfg["sample_steps"], eps=1e-3, continue_outside=True, record=True,
                                      max_arc_steps=ec["max_arc_steps"], arc_step=L / cfg["sample_steps"])
    z_max = lines.arcs[..., 0].max(0).values if lines.arcs is not None else torch.full(
        (len(starts),), L, dtype=starts.dtype)
    behind_q = float((z_max > 1.1 * L).double().mean())
    results.append(CheckResult("EFM: sample lines running behind the target plate (z > 1.1 L)", behind_q, 0.0,
                               behind_q > 0, "diagnostic", {"n_lines": len(starts), "crossing": lines.info["crossing"],
                                                            "not_returned": lines.info["not_returned"],
                                                            "z_max": float(z_max.max())}))
    try:
        path_from_field(field)
        psi = "defined"
    except ValueError as err:
        psi = str(err)
    return results, {"P": P, "Q": Q, "field": field, "psi": psi}


# -- main ------------------------------------------------------------------------------------------------------
def main(args: list[str] | None = None) -> Path:
    """Run the experiment; return (and print) the path of ``report.md``."""
    start = time.perf_counter()
    cfg, ns = parse_args(list(args or []))
    if cfg["num_threads"]:
        torch.set_num_threads(int(cfg["num_threads"]))
    out = output_dir(cfg, ns.out)
    timings: dict[str, float] = {}
    cfm, ifm = build_models(cfg)
    fits = {}
    for name, module in (("cfm", cfm), ("ifm", ifm)):
        t0 = time.perf_counter()
        fits[name] = train(module, name, cfg, out)
        timings[f"train {name}"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    L = float(cfg["L"])
    g = torch.Generator().manual_seed(cfg["seed"])
    batch, c0, c1, t, xt = heldout(cfg, fits["cfm"]["datamodule"], cfm, g)
    rows: list[tuple[str, CheckResult]] = [("path", r) for r in run_exact_checks(cfm.path, L)]
    learned, samples = learned_checks(cfm, ifm, cfg, batch["x0"], c0, c1, g)
    rows += [("learned", r) for r in learned]
    timings["exact checks"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows += [("statistical", r) for r in run_statistical_checks(cfm.path, L, n=cfg["checks"]["statistical_n"])]
    timings["statistical checks"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    c13 = check_learned_consistency(cfm, ifm, t, xt, rel_tolerance=cfg["checks"]["c13_rel_tolerance"])
    w2 = wasserstein2(samples["cfm"].x, samples["ifm"].x)  # the two models' samples from the same source points
    w2_tol = cfg["checks"]["c13_w2_tolerance"]
    if w2_tol is None:  # the scale of the models' own errors: the larger of their val/w2
        own = [fits[k]["val"]["val/w2"] for k in ("cfm", "ifm") if math.isfinite(fits[k]["val"]["val/w2"])]
        w2_tol = max(own) if own else 0.1
    c13.append(CheckResult("C13 learned consistency (W2)", w2, w2_tol, bool(w2 <= w2_tol), "diagnostic",
                           {"n": len(batch["x0"]), "steps": cfg["sample_steps"]}))
    rows += [("consistency", r) for r in c13] + [("consistency", r) for r in model_rows(fits)]
    timings["C13"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    efm_rows, efm = efm_checks(cfg, batch, g)
    rows += [("efm", r) for r in efm_rows]
    timings["EFM"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    make_figure(out / "duality.png", batch["x1"], samples, efm, L)
    timings["figure"] = time.perf_counter() - t0
    extra = {"config_file": ns.config or "(defaults)", "path": describe(cfm.path), "coupling": repr(cfm.coupling),
             "psi": efm["psi"], "timings": timings, "wall_seconds": time.perf_counter() - start}
    write_report(out, cfg, rows, fits, extra)
    report = out / "report.md"
    n_fail = sum(r.kind == "exact" and not r.passed for _, r in rows)
    print(f"duality: {sum(r.kind == 'exact' for _, r in rows) - n_fail} of "
          f"{sum(r.kind == 'exact' for _, r in rows)} exact identities hold; report: {report}")
    return report
