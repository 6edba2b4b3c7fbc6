"""The report of the duality experiment (:mod:`lightning_fm.experiments.duality.run`): ``report.md`` (one table per
section of every check with value, tolerance, kind, pass/fail and a plain-language explanation, the training table,
the figure and how to reproduce) and ``report.json`` (the same, machine-readable, with the config it ran: the plain
dict of :attr:`~lightning_fm.experiments.duality.run.DualityExperiment.config`, components as ``{class_path,
init_args}`` specs, as in the YAML).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

from lightning_fm.duality import CheckResult

SECTIONS = ("path", "learned", "statistical", "consistency", "efm")
SECTION_TITLES = {
    "path": "1. Exact identities of the path's field Phi(path) (Gaussian toy, float64 and float32)",
    "learned": "2. The trained networks: conversions and their exact identities",
    "statistical": "3. Statistical checks on the Gaussian toy (closed-form marginal path)",
    "consistency": "4. Learned dual consistency (C13) and sample quality",
    "efm": "5. The counter-example: EFM (Coulomb capacitor) is an interaction field but not a CFM",
}

EXPLANATIONS = [
    (
        "C1 divergence",
        "The field E = p_t(x|c) (1, u_t(x|c)/L) of one pair has zero divergence between the plates "
        "(autograd): the continuity equation of the path, read in (z, x) space, is Gauss's law with "
        "no charge. Value: the worst relative cancellation of the D + 1 derivative terms.",
    ),
    (
        "C2 unit flux",
        "The flux of one pair's field through every slice z is 1 (quadrature): the z-component of "
        "the field is the probability density p_t, t = z/L.",
    ),
    (
        "C4 round trip v->f->v",
        "Velocity -> normalised field direction -> velocity (u = L f_x / f_z) returns the "
        "velocity: the two parameterisations carry the same information.",
    ),
    ("C4 round trip, learned v", "The same round trip on the trained CFM network's outputs at held-out points."),
    ("C4 round trip, learned f", "The same round trip starting from the trained IFM network's outputs."),
    (
        "C5 trajectories",
        "Field lines of Phi(path) stepped in z (Euler, dz) coincide with the CFM trajectories "
        "stepped in t (dt = dz/L): the two ODEs are one ODE.",
    ),
    (
        "each Euler step",
        "From every point of the sampler's path, one Euler step in t and one in z (dz = L dt) land "
        "on the same point: the identity behind the conversion, for any network.",
    ),
    (
        "C5 CFM -> VelocityAsField",
        "The trained CFM network, wrapped as a field model (f = sqrt(3) (1, v/L)/norm) "
        "and sampled along its lines in z, gives the CFM's own Euler samples.",
    ),
    (
        "C5 IFM -> FieldAsVelocity",
        "The trained forward-only IFM network, wrapped as a velocity model "
        "(v = L f_x / f_z) and sampled in t, gives the IFM's own z-Euler samples.",
    ),
    (
        "C9 guard of VelocityAsField",
        "Fraction of points where the field of the trained CFM points backward "
        "(f_z <= 0): always 0, any velocity defines a forward-only field.",
    ),
    (
        "C9 learned guard",
        "Fraction of points where the trained IFM network's f_z <= 0, i.e. where it cannot be "
        "read as a CFM velocity. Nothing forces a network to be forward-only; 0 means it is.",
    ),
    (
        "C9 forward-only guard of Phi",
        "Fraction of this experiment's points (on and off the path, between the "
        "plates) where the exact field of the path has E_z <= 0: must be 0.",
    ),
    ("C9 forward-only guard", "Fraction of points where Phi(path) has E_z <= 0 (must be 0: E_z = p_t > 0)."),
    (
        "C12 Poisson",
        "PFGM's single-charge field sends exactly half its flux through a plane above it (the Poisson "
        "kernel integrates to 1): the normalisation the EFM field uses.",
    ),
    (
        "C3 superposition rate",
        "How fast the minibatch error falls with the batch size B (log-log slope; -1 "
        "expected, self-normalised importance sampling).",
    ),
    (
        "C3 superposition",
        "The field superposed over a minibatch of B pairs points like the closed-form marginal "
        "velocity (mean 1 - cos): IFM's superposition is CFM's marginalisation.",
    ),
    ("C6 push-forward", "Lines started on p_0 end on p_1 (moments within Monte-Carlo error + an O(dz) allowance)."),
    ("C7 slice marginal", "Lines stopped at the slice z = L/2 are distributed as p_{1/2} (z-scores)."),
    (
        "C8 loss gap",
        "The conditional (CFM) and marginal (FM) losses differ by a constant that does not depend on "
        "the network: the same minimiser.",
    ),
    (
        "C13 learned consistency (rel L2)",
        "Held-out relative L2 distance between the CFM network's velocity and "
        "L f_x/f_z of the separately trained IFM network: two trainings, one "
        "object. Compare with each model's own error (val/w2 rows).",
    ),
    (
        "C13 learned consistency (W2)",
        "W2 distance between the samples of the two trained models from the same source points.",
    ),
    (
        "noise floor: CFM vs CFM",
        "The same C13 metric between two CFM networks trained with different seeds (same data, path, coupling "
        "and recipe): how closely two trainings of one model agree. The CFM vs forward-only IFM row of C13 "
        "means something only relative to this floor.",
    ),
    (
        "val/w2",
        "W2 distance of the model's samples to held-out target samples (tolerance column: the larger of "
        "0.3 and twice the W2 between two target samples, for scale only).",
    ),
    (
        "C9 EFM: E_z <= 0 behind",
        "Fraction of points behind the plates (z < 0, z > L) where the exact Coulomb "
        "field points backward in z: > 0 means Psi (u = L E_x/E_z) is undefined there.",
    ),
    (
        "C9 EFM: E_z <= 0 between",
        "Inside the slab every source charge pushes and every target charge pulls "
        "forward, so E_z > 0 there (0 expected): EFM breaks the duality outside the slab.",
    ),
    (
        "EFM: flux leaving",
        "Fraction of the directions around a source charge in which the field starts backward "
        "(into z < 0): about half of each charge's flux leaves the slab, which no CFM can do.",
    ),
    (
        "EFM: sample lines running",
        "Fraction of EFM sample lines (Euler from the source plate, continued by "
        "arclength past z = L) that go more than 0.1 L behind the target plate before "
        "coming back to it: their z is not a time.",
    ),
]


def explain(r: CheckResult) -> str:
    text = next((text for key, text in EXPLANATIONS if r.name.startswith(key) or key in r.name), "")
    if r.details.get("excluded"):
        text += f" ({r.details['excluded']} points with f_z <= 1e-3 not held to the tolerance.)"
    if r.details.get("ill_posed_lines"):
        text += (
            f" ({r.details['ill_posed_lines']} of {r.details['lines']} lines are steep or not forward-only "
            "(an under-trained network): rounding is amplified, so this row is only a diagnostic here.)"
        )
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


LEARNED_PREFIX = "val/w2 of the"  # the rows of run.model_rows: tolerance max(0.3, 2 x the W2 noise floor)


def dynamics_verdict(rows: list[CheckResult]) -> str:
    """The verdict on the two trained networks, with its thresholds: a model has *learned* the target when its
    val/w2 is at most its row's tolerance (the larger of 0.3 and twice the W2 noise floor); the two learned *the
    same dynamics* when, in addition, every C13 row is within its tolerance. Models that have not learned say
    nothing about the duality (two untrained networks agree trivially within tolerances set by their own errors)."""
    learned = [r for r in rows if r.name.startswith(LEARNED_PREFIX)]
    c13 = [r for r in rows if r.name.startswith("C13")]
    agreement = (
        ", ".join(f"{r.name.split('(')[-1].rstrip(')')} = {_fmt(r.value)} (tolerance {_fmt(r.tolerance)})" for r in c13)
        or "no C13 row"
    )
    own = ", ".join(
        f"{r.name[len(LEARNED_PREFIX) :].replace(' model (EMA)', '').strip()} {_fmt(r.value)}" for r in learned
    )
    threshold = "learned means val/w2 <= max(0.3, 2 x the W2 noise floor) = " + ", ".join(
        _fmt(r.tolerance) for r in learned
    )
    if not learned or not all(r.passed for r in learned):
        return (
            f"* **The two networks have not both learned the target** (val/w2: {own or 'not measured'}; "
            f"{threshold}), so their agreement ({agreement}) says nothing about the duality yet: train longer "
            "(max_steps)."
        )
    if c13 and all(r.passed for r in c13):
        return (
            "* Two separately trained networks, a CFM velocity and a forward-only IFM field, learned the same "
            f"dynamics: {agreement}; both learned the target (val/w2: {own}; {threshold})."
        )
    return (
        f"* Both networks learned the target (val/w2: {own}; {threshold}) but **do not agree within C13's "
        f"tolerances** ({agreement}): the duality says they learn one velocity; train longer or check the setup."
    )


NOISE_FLOOR_PREFIX = "noise floor: CFM vs CFM"  # the rows of run.noise_floor_rows
#: CFM vs IFM agreement at most this many times the CFM vs CFM floor counts as "at the noise floor"
NOISE_FLOOR_FACTOR = 2.0


def metric_of(r: CheckResult) -> str:
    """``"rel L2"`` / ``"W2"``: the metric in a C13 or noise-floor row's name."""
    return r.name.rsplit("(", 1)[-1].rstrip(")")


def noise_floor_summary(rows: list[CheckResult]) -> dict[str, Any] | None:
    """C13 (CFM vs forward-only IFM) against its noise floor (CFM vs CFM, another seed), per metric: both values,
    their ratio and whether the pair is within :data:`NOISE_FLOOR_FACTOR` times the floor; ``None`` without
    noise-floor rows."""
    c13 = {metric_of(r): r for r in rows if r.name.startswith("C13")}
    floor = {metric_of(r): r for r in rows if r.name.startswith(NOISE_FLOOR_PREFIX)}
    if not floor:
        return None
    metrics = {}
    for metric, f in floor.items():
        if metric not in c13:
            continue
        pair = c13[metric].value
        ratio = pair / f.value if f.value > 0 else float("inf")
        metrics[metric] = {
            "cfm_vs_ifm": pair,
            "cfm_vs_cfm": f.value,
            "ratio": ratio,
            "at_noise_floor": bool(ratio <= NOISE_FLOOR_FACTOR),
        }
    seeds = next(iter(floor.values())).details.get("seeds")
    return {"seeds": seeds, "factor": NOISE_FLOOR_FACTOR, "metrics": metrics}


def noise_floor_verdict(summary: dict[str, Any] | None) -> str | None:
    """The verdict line comparing C13 with its noise floor (``None`` without one)."""
    if summary is None:
        return None
    parts = ", ".join(
        f"{metric}: CFM vs IFM {_fmt(m['cfm_vs_ifm'])}, CFM vs CFM {_fmt(m['cfm_vs_cfm'])} (ratio {_fmt(m['ratio'])})"
        for metric, m in summary["metrics"].items()
    )
    seeds = summary["seeds"]
    head = f"* **C13 against its noise floor** (two CFM networks, seeds {seeds[0]} and {seeds[1]}): {parts}. "
    rule = f"At the noise floor means CFM vs IFM <= {_fmt(summary['factor'])} x CFM vs CFM."
    if summary["metrics"] and all(m["at_noise_floor"] for m in summary["metrics"].values()):
        return (
            head + "The CFM network and the forward-only IFM network agree about as closely as two trainings of "
            "the same CFM model: by this measure they learned the same dynamics. " + rule
        )
    above = [metric for metric, m in summary["metrics"].items() if not m["at_noise_floor"]]
    return (
        head + f"**Above the noise floor in {', '.join(above) or 'every metric'}**: the two parameterisations "
        "disagree more than two seeds of one model do. " + rule
    )


def write_report(out: Path, cfg: dict, rows: list[tuple[str, CheckResult]], fits: dict, extra: dict) -> None:
    exact = [r for _, r in rows if r.kind == "exact"]
    n_fail = sum(not r.passed for r in exact)
    by_name = {r.name: r for _, r in rows}
    floor = noise_floor_summary([r for _, r in rows])
    floor_line = noise_floor_verdict(floor)
    steps = " + ".join(str(f["steps"]) for f in fits.values())
    data = cfg["data"].get("init_args") or {}  # the data's {class_path, init_args} spec
    lines = [
        "# Duality report: CFM and forward-only IFM are the same dynamics; EFM is not",
        "",
        f"Config: `{extra['config_file']}` | data: {data.get('source')} -> {data.get('target')} | path: "
        f"`{extra['path']}` | coupling: `{extra['coupling']}` | L = {cfg['L']:g} | seed {cfg['seed']} | "
        f"{steps} training steps | wall time {extra['wall_seconds']:.0f} s",
        "",
        "## Verdict",
        "",
        f"* **Exact identities: {len(exact) - n_fail} of {len(exact)} hold** "
        + ("(all of them)." if n_fail == 0 else f"({n_fail} FAIL: see the tables)."),
        dynamics_verdict([r for _, r in rows]),
        *([floor_line] if floor_line else []),
        f"* EFM on the same data: {_fmt(by_name['C9 EFM: E_z <= 0 behind the plates'].value)} of the points behind "
        f"the plates have E_z <= 0, so the map back to a CFM is undefined there (`path_from_field` says: "
        f'"{extra["psi"].split(":")[0]}").',
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
        'number with an indicative scale, not a pass/fail test ("as expected" means it is on the expected side).',
        "",
    ]
    for section in SECTIONS:
        lines += [
            f"## {SECTION_TITLES[section]}",
            "",
            "| check | value | tolerance | kind | result | what it shows |",
            "|---|---|---|---|---|---|",
        ]
        for sec, r in rows:
            if sec == section:
                lines.append(
                    f"| {r.name} | {_fmt(r.value)} | {_fmt(r.tolerance)} | {r.kind} | {_verdict(r)} | {explain(r)} |"
                )
        lines.append("")
    lines += [
        "## Training",
        "",
        "| model | steps | fit time (s) | steps/s | val/w2 (EMA) | val/w2 floor | DualityCheck overhead | "
        "exact failures during the fit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    labels = {"cfm": "CFM", "ifm": "forward-only IFM", "cfm_floor": "noise-floor CFM"}
    for name, f in fits.items():
        label = labels.get(name, name) + (f" (seed {f['seed']})" if "seed" in f and name == "cfm_floor" else "")
        lines.append(
            f"| {label} | {f['steps']} | {f['fit_seconds']:.1f} | {f['steps_per_second']:.1f} | "
            f"{_fmt(f['val']['val/w2'])} | {_fmt(f['val'].get('val/w2_floor', float('nan')))} | "
            f"{100 * f['callback_overhead']:.2f}% | {f['callback_exact_failures']} |"
        )
    lines += [
        "",
        "The DualityCheck callback ran its checks during every fit (after the first step, every "
        f"{cfg['checks']['every_n_steps']} steps and after each validation; logged as `duality/*` in "
        + " and ".join(f"`{name}/metrics.csv`" for name in fits)
        + "); the overhead column is the time it took divided by the fit time.",
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
        + ", ".join(f"{k} {v:.1f}" for k, v in extra["timings"].items())
        + ".",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    files = extra["config_file"]
    payload = {
        "command": "python -m lightning_fm duality" + ("" if files == "(defaults)" else f" -c {files}"),
        "config": cfg,
        "exact_all_passed": n_fail == 0,
        "n_exact": len(exact),
        "n_exact_failed": n_fail,
        "checks": [
            {
                "section": sec,
                "name": r.name,
                "value": r.value,
                "tolerance": r.tolerance,
                "kind": r.kind,
                "passed": r.passed,
                "explanation": explain(r),
                "details": r.details,
            }
            for sec, r in rows
        ],
        "models": {k: {kk: vv for kk, vv in v.items() if kk != "datamodule"} for k, v in fits.items()},
        "noise_floor": floor,
        "efm_psi": extra["psi"],
        "timings": extra["timings"],
        "wall_seconds": extra["wall_seconds"],
        "figure": "duality.png",
    }
    (out / "report.json").write_text(json.dumps(_jsonable(payload), indent=2))
