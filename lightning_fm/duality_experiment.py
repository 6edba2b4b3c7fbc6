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
"""
from __future__ import annotations

import argparse
import copy
import json
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
from lightning_fm.fields import CoulombField
from lightning_fm.fields.base import describe
from lightning_fm.metrics import wasserstein2
from lightning_fm.spec import build

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
SECTIONS = ("path", "learned", "statistical", "consistency", "efm")
SECTION_TITLES = {
    "path": "1. Exact identities of the path's field Phi(path) (Gaussian toy, float64 and float32)",
    "learned": "2. The trained networks: conversions and their exact identities",
    "statistical": "3. Statistical checks on the Gaussian toy (closed-form marginal path)",
    "consistency": "4. Learned dual consistency (C13) and sample quality",
    "efm": "5. The counter-example: EFM (Coulomb capacitor) is an interaction field but not a CFM",
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
    parser.add_argument("-c", "--config", help="YAML file (keys of lightning_fm.duality_experiment.DEFAULTS)")
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

    from lightning_fm.models import MLP
    from lightning_fm.modules import CFMModule, ForwardOnlyIFMModule

    common = {"lr": cfg["train"]["lr"], "sample_steps": cfg["sample_steps"], "sample_method": "euler"}
    seed_everything(cfg["seed"], verbose=False)
    cfm = CFMModule(backbone=MLP(data_shape=[2], **cfg["backbone"]), path=build(cfg["path"]),
                    coupling=build(cfg["coupling"]), **common)
    seed_everything(cfg["seed"], verbose=False)
    ifm = ForwardOnlyIFMModule(backbone=MLP(data_shape=[2], field_head=True, **cfg["backbone"]),
                               path=build(cfg["path"]), L=cfg["L"], coupling=build(cfg["coupling"]), **common)
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
    batch = next(iter(datamodule.test_dataloader()))
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
    from lightning_fm.callbacks.duality import euler_step_identity, learned_cfm_checks, learned_ifm_checks

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
    from lightning_fm.field_lines import integrate_field_lines

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
    z_max = lines.arc_trajectory[..., 0].max(0).values if lines.arc_trajectory is not None else torch.full(
        (len(starts),), L, dtype=starts.dtype)
    behind_q = float((z_max > 1.1 * L).double().mean())
    results.append(CheckResult("EFM: sample lines running behind the target plate (z > 1.1 L)", behind_q, 0.0,
                               behind_q > 0, "diagnostic", {"n_lines": len(starts), "crossing": lines.n_crossing,
                                                            "not_returned": lines.n_not_returned,
                                                            "z_max": float(z_max.max())}))
    try:
        path_from_field(field)
        psi = "defined"
    except ValueError as err:
        psi = str(err)
    return results, {"P": P, "Q": Q, "field": field, "psi": psi}


def efm_field_lines(field: CoulombField, P, Q, L: float, n_charges: int = 5, n_dirs: int = 16,
                    max_steps: int = 1500) -> list:
    """Field lines of the exact Coulomb field from a few source charges, started in all directions of the
    (z, x_1) plane; arclength steps ``h = clamp(0.25 d, 1e-3, 0.05 L)`` (d: distance to the nearest charge) until
    the line reaches a target charge, leaves the box, or ``max_steps``. Returns a list of (K, 3) arrays."""
    order = torch.argsort(P[:, 0])
    chosen = P[order[torch.linspace(0, len(P) - 1, n_charges).long()]]
    theta = torch.linspace(0, 2 * math.pi, n_dirs + 1, dtype=torch.float64)[:-1] + 0.1
    r0 = 0.02
    y = torch.cat([torch.cat([r0 * torch.cos(theta)[:, None], c + r0 * torch.stack(
        [torch.sin(theta), torch.zeros_like(theta)], 1)], 1) for c in chosen])
    charges = torch.cat([torch.cat([torch.zeros(len(P), 1, dtype=P.dtype), P], 1),
                         torch.cat([torch.full((len(Q), 1), L, dtype=Q.dtype), Q], 1)])
    alive = torch.ones(len(y), dtype=torch.bool)
    traj = [y.clone()]

    def unit(v):
        nz, nx = field.direction(v[:, 0], v[:, 1:], P, Q)
        return torch.cat([nz[:, None], nx], 1)

    for _ in range(max_steps):
        if not bool(alive.any()):
            break
        d = torch.cdist(y, charges)
        h = (0.25 * d.min(1).values).clamp(1e-3, 0.05 * L)[:, None]
        mid = y + 0.5 * h * unit(y)
        y_new = y + h * unit(mid)
        y = torch.where(alive[:, None], y_new, y)
        near_q = torch.cdist(y, charges[len(P):]).min(1).values < 5e-3
        far = (y[:, 0] < -1.5 * L) | (y[:, 0] > 2.5 * L) | (y[:, 1:].abs().max(1).values > 30)
        alive = alive & ~near_q & ~far
        traj.append(y.clone())
    stacked = torch.stack(traj, 1)  # (lines, K, 3)
    return [line for line in stacked]


# -- figure ----------------------------------------------------------------------------------------------------
def make_figure(path: Path, target, samples: dict, efm: dict, L: float, n_lines: int = 24) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    cfm, ifm = samples["cfm"], samples["ifm"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 11))
    ax = axes[0, 0]
    ax.scatter(target[:, 0], target[:, 1], s=3, c="0.7", label="target (held out)")
    ax.scatter(cfm.x[:, 0], cfm.x[:, 1], s=3, c="tab:blue", alpha=0.6, label="CFM samples (Euler in t)")
    ax.scatter(ifm.x[:, 0], ifm.x[:, 1], s=3, c="tab:orange", alpha=0.6, label="forward-only IFM samples (Euler in z)")
    ax.set_title("samples of both models from the same source points")
    ax.legend(markerscale=4, fontsize=8, loc="upper right")
    ax.set_aspect("equal", adjustable="datalim")

    ax = axes[0, 1]
    tc, ti = cfm.trajectory[:, :n_lines], ifm.trajectory[:, :n_lines]
    ax.plot(cfm.times.numpy(), tc[:, :, 0].numpy(), c="tab:blue", lw=1.2, alpha=0.8)
    ax.plot((ifm.times / L).numpy(), ti[:, :, 0].numpy(), c="tab:orange", lw=1.0, ls="--", alpha=0.9)
    ax.plot([], [], c="tab:blue", label="CFM trajectory x_1(t)")
    ax.plot([], [], c="tab:orange", ls="--", label="IFM field line x_1(z), plotted at t = z/L")
    ax.set_xlabel("t  (= z / L)")
    ax.set_ylabel("$x_1$")
    top = ax.secondary_xaxis("top", functions=(lambda t: t * L, lambda z: z / L))
    top.set_xlabel("z")
    ax.set_title("CFM trajectories vs forward-only IFM field lines", pad=28)
    ax.legend(fontsize=8, loc="lower left")

    ax = axes[1, 0]
    for k in range(tc.shape[1]):
        ax.plot(tc[:, k, 0].numpy(), tc[:, k, 1].numpy(), c="tab:blue", lw=1.2, alpha=0.7)
        ax.plot(ti[:, k, 0].numpy(), ti[:, k, 1].numpy(), c="tab:orange", lw=1.0, ls="--", alpha=0.9)
    ax.scatter(tc[0, :, 0], tc[0, :, 1], s=10, c="k", zorder=3, label="start (source)")
    ax.scatter(target[:, 0], target[:, 1], s=2, c="0.8", zorder=0, label="target")
    ax.set_title("the same paths in data space (solid: CFM, dashed: IFM)")
    ax.legend(markerscale=3, fontsize=8, loc="upper right")
    ax.set_aspect("equal", adjustable="datalim")

    ax = axes[1, 1]
    lines = efm_field_lines(efm["field"], efm["P"], efm["Q"], L)
    for line in lines:
        pts = line[:, [0, 1]].numpy()
        dz = line[1:, 0] - line[:-1, 0]
        moving = (line[1:] - line[:-1]).norm(dim=1) > 0
        segs = [[pts[i], pts[i + 1]] for i in range(len(dz)) if moving[i]]
        colors = ["tab:red" if float(dz[i]) < 0 else "tab:green" for i in range(len(dz)) if moving[i]]
        ax.add_collection(LineCollection(segs, colors=colors, linewidths=0.9))
    ax.scatter(torch.zeros(len(efm["P"])), efm["P"][:, 0], s=6, c="tab:blue", label="source charges (+), z = 0")
    ax.scatter(torch.full((len(efm["Q"]),), L), efm["Q"][:, 0], s=6, c="tab:purple", label="target charges (-), z = L")
    ax.axvline(0, c="k", lw=0.8, ls=":")
    ax.axvline(L, c="k", lw=0.8, ls=":")
    ax.axvspan(-1.5 * L, 0, color="0.93", zorder=-1)
    ax.axvspan(L, 2.5 * L, color="0.93", zorder=-1)
    ax.plot([], [], c="tab:green", label="moving forward in z")
    ax.plot([], [], c="tab:red", label="moving backward in z (no CFM time)")
    ax.set_xlim(-1.0 * L, 2.0 * L)
    ax.set_ylim(-14, 14)
    ax.set_xlabel("z")
    ax.set_ylabel("$x_1$")
    ax.set_title("EFM (exact Coulomb field of the same data): lines leave the slab\n"
                 "(projection of 3-D lines onto the (z, $x_1$) plane; grey = behind the plates)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- report ----------------------------------------------------------------------------------------------------
EXPLANATIONS = [
    ("C1 divergence", "The field E = p_t(x|c) (1, u_t(x|c)/L) of one pair has zero divergence between the plates "
                      "(autograd): the continuity equation of the path, read in (z, x) space, is Gauss's law with "
                      "no charge. Value: the worst relative cancellation of the D + 1 derivative terms."),
    ("C2 unit flux", "The flux of one pair's field through every slice z is 1 (quadrature): the z-component of "
                     "the field is the probability density p_t, t = z/L."),
    ("C4 round trip v->f->v", "Velocity -> normalised field direction -> velocity (u = L f_x / f_z) returns the "
                              "velocity: the two parameterisations carry the same information."),
    ("C4 round trip, learned v", "The same round trip on the trained CFM network's outputs at held-out points."),
    ("C4 round trip, learned f", "The same round trip starting from the trained IFM network's outputs."),
    ("C5 trajectories", "Field lines of Phi(path) stepped in z (Euler, dz) coincide with the CFM trajectories "
                        "stepped in t (dt = dz/L): the two ODEs are one ODE."),
    ("each Euler step", "From every point of the sampler's path, one Euler step in t and one in z (dz = L dt) land "
                        "on the same point: the identity behind the conversion, for any network."),
    ("C5 CFM -> VelocityAsField", "The trained CFM network, wrapped as a field model (f = sqrt(3) (1, v/L)/norm) "
                                  "and sampled along its lines in z, gives the CFM's own Euler samples."),
    ("C5 IFM -> FieldAsVelocity", "The trained forward-only IFM network, wrapped as a velocity model "
                                  "(v = L f_x / f_z) and sampled in t, gives the IFM's own z-Euler samples."),
    ("C9 guard of VelocityAsField", "Fraction of points where the field of the trained CFM points backward "
                                    "(f_z <= 0): always 0, any velocity defines a forward-only field."),
    ("C9 learned guard", "Fraction of points where the trained IFM network's f_z <= 0, i.e. where it cannot be "
                         "read as a CFM velocity. Nothing forces a network to be forward-only; 0 means it is."),
    ("C9 forward-only guard of Phi", "Fraction of this experiment's points (on and off the path, between the "
                                     "plates) where the exact field of the path has E_z <= 0: must be 0."),
    ("C9 forward-only guard", "Fraction of points where Phi(path) has E_z <= 0 (must be 0: E_z = p_t > 0)."),
    ("C12 Poisson", "PFGM's single-charge field sends exactly half its flux through a plane above it (the Poisson "
                    "kernel integrates to 1): the normalisation the EFM field uses."),
    ("C3 superposition rate", "How fast the minibatch error falls with the batch size B (log-log slope; -1 "
                              "expected, self-normalised importance sampling)."),
    ("C3 superposition", "The field superposed over a minibatch of B pairs points like the closed-form marginal "
                         "velocity (mean 1 - cos): IFM's superposition is CFM's marginalisation."),
    ("C6 push-forward", "Lines started on p_0 end on p_1 (moments within Monte-Carlo error + an O(dz) allowance)."),
    ("C7 slice marginal", "Lines stopped at the slice z = L/2 are distributed as p_{1/2} (z-scores)."),
    ("C8 loss gap", "The conditional (CFM) and marginal (FM) losses differ by a constant that does not depend on "
                    "the network: the same minimiser."),
    ("C13 learned consistency (rel L2)", "Held-out relative L2 distance between the CFM network's velocity and "
                                         "L f_x/f_z of the separately trained IFM network: two trainings, one "
                                         "object. Compare with each model's own error (val/w2 rows)."),
    ("C13 learned consistency (W2)", "W2 distance between the samples of the two trained models from the same "
                                     "source points."),
    ("val/w2", "W2 distance of the model's samples to held-out target samples (tolerance column: the larger of "
               "0.3 and twice the W2 between two target samples, for scale only)."),
    ("C9 EFM: E_z <= 0 behind", "Fraction of points behind the plates (z < 0, z > L) where the exact Coulomb "
                                "field points backward in z: > 0 means Psi (u = L E_x/E_z) is undefined there."),
    ("C9 EFM: E_z <= 0 between", "Inside the slab every source charge pushes and every target charge pulls "
                                 "forward, so E_z > 0 there (0 expected): EFM breaks the duality outside the slab."),
    ("EFM: flux leaving", "Fraction of the directions around a source charge in which the field starts backward "
                          "(into z < 0): about half of each charge's flux leaves the slab, which no CFM can do."),
    ("EFM: sample lines running", "Fraction of EFM sample lines (Euler from the source plate, continued by "
                                  "arclength past z = L) that go more than 0.1 L behind the target plate before "
                                  "coming back to it: their z is not a time."),
]


def explain(r: CheckResult) -> str:
    text = next((text for key, text in EXPLANATIONS if r.name.startswith(key) or key in r.name), "")
    if r.details.get("excluded"):
        text += f" ({r.details['excluded']} points with f_z <= 1e-3 not held to the tolerance.)"
    if r.details.get("ill_posed_lines"):
        text += (f" ({r.details['ill_posed_lines']} of {r.details['lines']} lines are steep or not forward-only "
                 "(an under-trained network): rounding is amplified, so this row is only a diagnostic here.)")
    return text


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (int, str, bool)) or value is None:
        return value
    return str(value)


def _fmt(v: float) -> str:
    if isinstance(v, float) and (v == 0 or not math.isfinite(v)):
        return f"{v:g}"
    return f"{v:.3g}" if 1e-2 <= abs(v) < 1e3 else f"{v:.2e}"


def _verdict(r: CheckResult) -> str:
    if r.kind == "exact":
        return "**pass**" if r.passed else "**FAIL**"
    return ("pass" if r.passed else "FAIL") if r.kind == "statistical" else ("as expected" if r.passed else "note")


def write_report(out: Path, cfg: dict, rows: list[tuple[str, CheckResult]], fits: dict, extra: dict) -> None:
    exact = [r for _, r in rows if r.kind == "exact"]
    n_fail = sum(not r.passed for r in exact)
    by_name = {r.name: r for _, r in rows}
    c13 = [r for _, r in rows if r.name.startswith("C13")]
    lines = [
        "# Duality report: CFM and forward-only IFM are the same dynamics; EFM is not",
        "",
        f"Config: `{extra['config_file']}` | data: {cfg['data']['source']} -> {cfg['data']['target']} | path: "
        f"`{extra['path']}` | coupling: `{extra['coupling']}` | L = {cfg['L']:g} | seed {cfg['seed']} | "
        f"{fits['cfm']['steps']} + {fits['ifm']['steps']} training steps | wall time {extra['wall_seconds']:.0f} s",
        "",
        "## Verdict",
        "",
        f"* **Exact identities: {len(exact) - n_fail} of {len(exact)} hold** "
        + ("(all of them)." if n_fail == 0 else f"({n_fail} FAIL: see the tables)."),
        f"* Two separately trained networks, a CFM velocity and a forward-only IFM field, learned the same dynamics: "
        + ", ".join(f"{r.name.split('(')[-1].rstrip(')')} = {_fmt(r.value)}" for r in c13)
        + f" (their own val/w2: CFM {_fmt(fits['cfm']['val']['val/w2'])}, IFM {_fmt(fits['ifm']['val']['val/w2'])};"
        f" noise floor {_fmt(fits['cfm']['val'].get('val/w2_floor', float('nan')))}).",
        f"* EFM on the same data: {_fmt(by_name['C9 EFM: E_z <= 0 behind the plates'].value)} of the points behind "
        f"the plates have E_z <= 0, so the map back to a CFM is undefined there (`path_from_field` says: "
        f"\"{extra['psi'].split(':')[0]}\").",
        "",
        "## What is being checked (plain language)",
        "",
        "* **CFM** (conditional flow matching) moves samples from a source distribution (t = 0) to a target (t = 1) "
        "along a learned velocity v(t, x). **IFM** (interaction field matching) puts the source on a plate z = 0 and "
        "the target on a plate z = L in an augmented space (z, x) and moves samples along the lines of a learned "
        "field E(z, x).",
        "* **Phi** (CFM -> IFM) turns a CFM path into the field E = p_t(x) (1, u_t(x)/L) with t = z/L: the "
        "space-time probability current. Its z-component is the probability density, its direction is the "
        "velocity. **Psi** (IFM -> CFM) reads a velocity back from a field: u = L E_x / E_z, which needs E_z > 0.",
        "* **Forward-only** means E_z > 0 everywhere between the plates and no line leaves the slab: every field line "
        "moves forward in z, so z can serve as time. For exactly these fields Psi is defined and Phi, Psi are "
        "inverse to each other: forward-only IFM *is* CFM.",
        "* **EFM** (electrostatic field matching, a Coulomb capacitor) is an interaction field whose lines leave the "
        "slab and run backward in z behind the plates. There E_z < 0, Psi is undefined, and no CFM reproduces those "
        "dynamics: general IFM is strictly larger than CFM.",
        "* Kinds: **exact** = an identity that must hold to floating-point precision (a failure is a bug); "
        "**statistical** = holds in expectation, tested against Monte-Carlo error; **diagnostic** = a measured "
        "number with an indicative scale, not a pass/fail test (\"as expected\" means it is on the expected side).",
        "",
    ]
    for section in SECTIONS:
        lines += [f"## {SECTION_TITLES[section]}", "", "| check | value | tolerance | kind | result | what it shows |",
                  "|---|---|---|---|---|---|"]
        for sec, r in rows:
            if sec == section:
                lines.append(f"| {r.name} | {_fmt(r.value)} | {_fmt(r.tolerance)} | {r.kind} | {_verdict(r)} | "
                             f"{explain(r)} |")
        lines.append("")
    lines += [
        "## Training",
        "",
        "| model | steps | fit time (s) | steps/s | val/w2 (EMA) | val/w2 floor | DualityCheck overhead | "
        "exact failures during the fit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, label in (("cfm", "CFM"), ("ifm", "forward-only IFM")):
        f = fits[name]
        lines.append(f"| {label} | {f['steps']} | {f['fit_seconds']:.1f} | {f['steps_per_second']:.1f} | "
                     f"{_fmt(f['val']['val/w2'])} | {_fmt(f['val'].get('val/w2_floor', float('nan')))} | "
                     f"{100 * f['callback_overhead']:.2f}% | {f['callback_exact_failures']} |")
    lines += [
        "",
        "The DualityCheck callback ran its checks during both fits (after the first step, every "
        f"{cfg['checks']['every_n_steps']} steps and after each validation; logged as `duality/*` in "
        "`cfm/metrics.csv` and `ifm/metrics.csv`); the overhead column is the time it took divided by the fit time.",
        "",
        "## Figure",
        "",
        "![duality](duality.png)",
        "",
        "Top left: samples of both models from the same source points. Top right: CFM trajectories x_1(t) (solid) "
        "and IFM field lines x_1(z) drawn at t = z/L (dashed) from the same starts: they nearly coincide (two "
        "separately trained networks; their gap is what C13 measures, not a failure of the duality). Bottom left: "
        "the same paths in data space. Bottom right: lines of the exact EFM (Coulomb) field of the same data in the "
        "(z, x_1) plane; red parts move backward in z (behind the plates, grey), which a CFM cannot do.",
        "",
        f"Reproduce: `python -m lightning_fm duality -c {extra['config_file']}`. Timings (s): "
        + ", ".join(f"{k} {v:.1f}" for k, v in extra["timings"].items()) + ".",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    payload = {
        "config": cfg, "exact_all_passed": n_fail == 0, "n_exact": len(exact), "n_exact_failed": n_fail,
        "checks": [{"section": sec, "name": r.name, "value": r.value, "tolerance": r.tolerance, "kind": r.kind,
                    "passed": r.passed, "explanation": explain(r), "details": r.details} for sec, r in rows],
        "models": {k: {kk: vv for kk, vv in v.items() if kk != "datamodule"} for k, v in fits.items()},
        "efm_psi": extra["psi"], "timings": extra["timings"], "wall_seconds": extra["wall_seconds"],
        "figure": "duality.png",
    }
    (out / "report.json").write_text(json.dumps(_jsonable(payload), indent=2))


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
