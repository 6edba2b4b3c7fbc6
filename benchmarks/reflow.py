"""Reflow (rectified flow, docs/guides/reflow.md): sample quality against NFE of teachers and their reflowed
students, the cost of making the teacher pairs, and the straightness of the flows.

    python benchmarks/reflow.py                       # every teacher below, trained here, and its students
    python benchmarks/reflow.py --teacher configs/toy/otcfm.yaml=runs/toy_otcfm/version_0/checkpoints/last.ckpt
    python benchmarks/reflow.py --quick               # a few steps of everything: checks that the pipeline runs

For each teacher config (a CFM and a forward-only IFM recipe on the toy 8gaussians -> moons and on the 8x8 digits,
:data:`TEACHERS`) the teacher is trained by ``python -m lightning_fm fit -c CONFIG`` (or taken from ``--teacher
CONFIG=CKPT``), its pairs are made once here and timed (:class:`~lightning_fm.data.TeacherPairsDataModule` with the
student recipe's settings; its cache under ``<work>/cache`` is what the student's run then loads), and each student
recipe of the data (:data:`STUDENTS`: toys a CFM student, digits a CFM and a forward-only IFM student, both on the
same pairs) is trained by the CLI with ``--data.init_args.teacher=<ckpt>``. Every model (EMA weights, ``last.ckpt``)
then samples the teacher data's fixed validation sources with Euler at NFE 1, 2, 4, 8 and 100: toys, exact W2 to the
2000 held-out targets (floor: an i.i.d. target sample); digits, the digits classifier's Frechet distance to the 359
held-out digits (floor: as many training digits) (:func:`quality_vs_nfe.evaluation`). Straightness
(:func:`lightning_fm.metrics.straightness`): the mean over ``--straightness-lines`` validation sources of
``int |v|^2 dt - |x_1 - x_0|^2`` along the model's 100-step Euler lines (a forward-only IFM model read as the velocity
``L f_x / f_z``, ``FieldAsVelocity``). One-step distillation of a student is not built yet: no row measures it.

Writes ``benchmarks/results/reflow.{json,png}``; ``--quick`` writes ``reflow_quick.{json,png}`` under ``--work`` (a
scratch directory by default) instead, never into ``benchmarks/results/``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from _cli import fit_command  # noqa: E402
from quality_vs_nfe import evaluation, sample_in_batches  # noqa: E402

OUT = REPO / "benchmarks" / "results"
#: the teachers: a CFM and a forward-only IFM recipe of each data set
TEACHERS = (
    "configs/toy/otcfm.yaml",
    "configs/toy/forward_only_ifm.yaml",
    "configs/digits/cfm.yaml",
    "configs/digits/forward_only_ifm.yaml",
)
#: the student recipes of each data set (the folder of the teacher's config)
STUDENTS = {
    "toy": ("configs/toy/reflow.yaml",),
    "digits": ("configs/digits/reflow.yaml", "configs/digits/reflow_ifm.yaml"),
}
NFES = (1, 2, 4, 8, 100)
#: --quick: training steps of teachers and students, pairs made (with 10 teacher steps), no validation in the runs
QUICK_STEPS = {"toy": (60, 30), "digits": (20, 10)}
QUICK_PAIRS = {"toy": 1024, "digits": 256}
QUICK_PAIR_STEPS = 10  # the teacher's Euler steps for the quick pairs
QUICK_TRAINER = ["--trainer.limit_val_batches=0"]


def fit(config: str, work: Path, name: str, overrides: list[str]) -> dict:
    """``python -m lightning_fm fit -c CONFIG`` in ``work`` (its run: the newest ``work/runs/<name>/version_*``), one
    process, ``OMP_NUM_THREADS`` threads (default 1); the run directory and the command's wall time."""
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), MPLBACKEND="Agg")
    env["LIGHTNING_FM_CACHE"] = env.get("LIGHTNING_FM_CACHE") or str(Path.home() / ".cache" / "lightning_fm")
    command = fit_command(config, f"--trainer.logger.init_args.name={name}", *overrides)
    start = time.perf_counter()
    proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    run = max((work / "runs" / name).glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not (run / "checkpoints" / "last.ckpt").is_file():
        raise RuntimeError(f"{config}: no checkpoints/last.ckpt in {run}")
    return {"run": run, "seconds": seconds}


def load_checkpoint(ckpt: Path):
    """The model of a run's checkpoint (its stored weights: EMA), in eval mode, and the run's ``config.yaml``
    (``<run>/checkpoints/<file>.ckpt`` beside ``<run>/config.yaml``)."""
    from lightning_fm.modules import FlowMatchingModule

    config = ckpt.parent.parent / "config.yaml"
    if not config.is_file():
        raise ValueError(f"{ckpt}: no config.yaml of its run beside its checkpoints/ directory")
    module = FlowMatchingModule.load_from_checkpoint(ckpt, map_location="cpu")
    return module.eval(), yaml.safe_load(config.read_text())


def velocity_of(module):
    """``v(t, x)`` of a trained model: a CFM model's velocity, a forward-only IFM model's ``L f_x / f_z``."""
    from lightning_fm.duality import FieldAsVelocity

    if hasattr(module, "field"):
        field_velocity = FieldAsVelocity(module)
        return lambda t, x: field_velocity.velocity(x, t)
    return lambda t, x: module.velocity(x, t)


@torch.no_grad()
def measure(module, x0: torch.Tensor, score, lines: int) -> dict:
    """The metric at each NFE of :data:`NFES` (Euler) and the straightness of the 100-step Euler lines."""
    from lightning_fm.metrics import straightness

    row = {}
    for n in NFES:
        x, nfe = sample_in_batches(module, x0, "euler", n)
        row[f"nfe_{n}"] = float(score(x))
        assert nfe == n, (type(module).__name__, n, nfe)
    row["straightness"] = float(straightness(velocity_of(module), x0[:lines], steps=100))
    return row


def pair_cost(teacher_ckpt: Path, student_config: str, cache: Path, overrides: dict) -> dict:
    """Make (or find) the pairs the student recipe will train on, with its data settings, in ``cache``; what making
    them took (read from the cached file, so a rerun reports the run that made them)."""
    from lightning_fm.data import TeacherPairsDataModule

    settings = dict(yaml.safe_load((REPO / student_config).read_text())["data"]["init_args"])
    settings.update(teacher=str(teacher_ckpt), cache_dir=str(cache), progress=False, **overrides)
    data = TeacherPairsDataModule(**settings)
    found = data.pairs_path().is_file()
    data.pairs()
    record = torch.load(data.pairs_path(), map_location="cpu", weights_only=True)
    options = data.sampler_options()
    return {
        "n_pairs": int(settings["n_pairs"]),
        "sampler": f"{options['method']} {options['steps']}",
        "nfe": int(record["nfe"]),
        "seconds": float(record["seconds"]),
        "device": record["device"],
        "cached": found,
        "path": data.pairs_path().name,
    }


def plot(rows: list[dict], path: Path) -> None:
    teachers = list(dict.fromkeys(r["teacher"] for r in rows))
    fig, axes = plt.subplots(1, len(teachers), figsize=(4.2 * len(teachers), 3.8), squeeze=False)
    for ax, teacher in zip(axes[0], teachers):
        mine = [r for r in rows if r["teacher"] == teacher]
        for r in mine:
            label = "teacher" if r["model"] == "teacher" else Path(r["model"]).stem
            ax.plot(NFES, [r[f"nfe_{n}"] for n in NFES], marker="o", ms=3, label=f"{label} (S={r['straightness']:.3g})")
        ax.axhline(mine[0]["floor"], color="0.4", ls="--", lw=0.8, label="floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE (Euler)")
        ax.set_ylabel(mine[0]["metric"])
        ax.set_title(teacher, fontsize=8)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", nargs="+", default=list(TEACHERS), help="teacher configs to run")
    parser.add_argument("--teacher", action="append", default=[], help="CONFIG=CKPT: take this teacher, do not train")
    parser.add_argument("--quick", action="store_true", help="a few steps of everything (not written to results/)")
    parser.add_argument("--work", type=Path, default=None, help="where runs and pairs go (default: a temporary dir)")
    parser.add_argument("--straightness-lines", type=int, default=500)
    args = parser.parse_args()
    taken = dict(item.split("=", 1) for item in args.teacher)
    work = args.work or Path(tempfile.mkdtemp(prefix="reflow_"))
    work.mkdir(parents=True, exist_ok=True)
    out = work if args.quick else OUT
    stem = "reflow_quick" if args.quick else "reflow"
    torch.manual_seed(0)
    quality, pairs, runs = [], [], []
    for teacher_config in args.teachers:
        kind = Path(teacher_config).parent.name
        teacher_steps, student_steps = QUICK_STEPS[kind] if args.quick else (None, None)
        teacher_name = f"{kind}_{Path(teacher_config).stem}"
        if teacher_config in taken:
            teacher_ckpt = Path(taken[teacher_config]).resolve()
        else:
            extra = [f"--trainer.max_steps={teacher_steps}", *QUICK_TRAINER] if args.quick else []
            done = fit(teacher_config, work, teacher_name, extra)
            teacher_ckpt = done["run"] / "checkpoints" / "last.ckpt"
            runs.append({"config": teacher_config, "role": "teacher", "seconds": done["seconds"]})
        teacher, teacher_run_config = load_checkpoint(teacher_ckpt)
        metric, x0, score, floor = evaluation(teacher_run_config)
        metric = {"toy": "W2", "digits": "classifier FD"}.get(metric, metric)
        base = {"teacher": teacher_config, "metric": metric, "floor": float(floor)}
        row = measure(teacher, x0, score, args.straightness_lines)
        quality.append({**base, "model": "teacher", "family": type(teacher).__name__, **row})
        print(quality[-1], flush=True)
        for student_config in STUDENTS[kind]:
            data_overrides = {"n_pairs": QUICK_PAIRS[kind], "steps": QUICK_PAIR_STEPS} if args.quick else {}
            cost = pair_cost(teacher_ckpt, student_config, work / "cache", data_overrides)
            pairs.append({"teacher": teacher_config, "student": student_config, **cost})
            print(pairs[-1], flush=True)
            extra = [f"--data.init_args.teacher={teacher_ckpt}", f"--data.init_args.cache_dir={work / 'cache'}"]
            extra += [f"--data.init_args.{k}={v}" for k, v in data_overrides.items()]
            extra += [f"--trainer.max_steps={student_steps}", *QUICK_TRAINER] if args.quick else []
            name = f"{teacher_name}_{Path(student_config).stem}"
            done = fit(student_config, work, name, extra)
            runs.append({"config": student_config, "role": f"student of {teacher_config}", "seconds": done["seconds"]})
            student, _ = load_checkpoint(done["run"] / "checkpoints" / "last.ckpt")
            row = measure(student, x0, score, args.straightness_lines)
            quality.append({**base, "model": student_config, "family": type(student).__name__, **row})
            print(quality[-1], flush=True)
    result = {
        "command": "python benchmarks/reflow.py" + (" --quick" if args.quick else ""),
        "quick": args.quick,
        "nfe": list(NFES),
        "threads": int(os.environ.get("OMP_NUM_THREADS", "1")),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "quality": quality,
        "pairs": pairs,
        "runs": runs,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(result, indent=2))
    plot(quality, out / f"{stem}.png")
    print(f"\nwritten: {out / f'{stem}.json'}, {out / f'{stem}.png'} (runs and pairs in {work})")
    print("| teacher | model | " + " | ".join(f"NFE {n}" for n in NFES) + " | straightness | floor |")
    print("|---|---|" + "---|" * (len(NFES) + 2))
    for r in quality:
        cells = " | ".join(f"{r[f'nfe_{n}']:.3g}" for n in NFES)
        print(f"| {r['teacher']} | {r['model']} | {cells} | {r['straightness']:.3g} | {r['floor']:.3g} |")


if __name__ == "__main__":
    main()
