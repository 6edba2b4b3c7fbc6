"""Run directories, ``<save_dir>/<name>/<version>/``: which one a command continues. Pure Python.

* ``fit --ckpt_path last``: the newest checkpoint of a run of the logger's ``<save_dir>/<name>`` (by modification
  time): ``<version>/checkpoints/last*.ckpt``, or ``<version>/hpc_ckpt_<n>.ckpt`` (Lightning's SLURM checkpoint, saved
  into the run directory, which the CLI makes ``trainer.default_root_dir``); the run continues in that directory (its
  metrics file, its W&B run). With a ``version`` given (``docker/slurm.sbatch`` gives ``slurm_<job id>``): that
  version's newest checkpoint, else a fresh run there (a requeued job continues its own run, never another).
* any command with ``--ckpt_path <run>/checkpoints/<file>.ckpt``: that checkpoint's run directory ``<run>``
  (``test`` and ``predict`` write their results beside the training run that made the checkpoint).
* otherwise a new ``version_<n>``, one above the highest there.
"""

from __future__ import annotations

import glob
import re
from dataclasses import dataclass
from pathlib import Path

VERSION = re.compile(r"version_(\d+)$")


def next_version(root: Path) -> str:
    """``version_<n>``: one above the highest ``version_<k>`` directory under ``root`` (``version_0`` if none)."""
    taken = [int(m.group(1)) for p in Path(root).glob("version_*") if p.is_dir() and (m := VERSION.match(p.name))]
    return f"version_{max(taken) + 1 if taken else 0}"


#: a run's checkpoints that ``--ckpt_path last`` resumes, relative to the run directory
RESUMABLE = ("checkpoints/last*.ckpt", "hpc_ckpt_*.ckpt")


def latest_last_checkpoint(root: Path, version: str | None = None) -> Path | None:
    """The newest ``<root>/<version>/checkpoints/last*.ckpt`` or ``<root>/<version>/hpc_ckpt_*.ckpt`` (of any
    version, or of the one given), or None."""
    runs = glob.escape(version) if version is not None else "*"
    found = [p for pattern in RESUMABLE for p in Path(root).glob(f"{runs}/{pattern}") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run_of_checkpoint(path: Path) -> Path | None:
    """``<run>`` of ``<run>/checkpoints/<file>`` (or of SLURM's ``<run>/hpc_ckpt_<n>.ckpt``), or None for a
    checkpoint kept elsewhere."""
    path = Path(path)
    if path.parent.name == "checkpoints":
        return path.parent.parent
    return path.parent if path.name.startswith("hpc_ckpt_") else None


@dataclass(frozen=True)
class Continuation:
    """Where a command logs: ``save_dir/name/version``; ``ckpt_path`` resolved to a file (or as given)."""

    save_dir: str
    name: str
    version: str | None
    ckpt_path: str | None
    resumed: bool  # whether the directory exists already (its files are continued)


def continuation(
    save_dir: str, name: str, ckpt_path: str | None, subcommand: str, version: str | None = None
) -> Continuation:
    """The run directory a command continues (module docstring); ``version``: the one given, if any (then only a
    checkpoint of that run is continued)."""
    root = Path(save_dir) / name
    if ckpt_path == "last" and subcommand == "fit":
        last = latest_last_checkpoint(root, version)
        if last is None:  # nothing to resume: a fresh run (in the version given, if any)
            return Continuation(save_dir, name, version, None, False)
        return Continuation(save_dir, name, run_of_checkpoint(last).name, str(last), True)
    if ckpt_path and ckpt_path not in ("last", "best", "hpc") and Path(ckpt_path).is_file():
        run = run_of_checkpoint(Path(ckpt_path))
        if run is not None and (version is None or run.absolute() == (root / version).absolute()):
            return Continuation(str(run.parent.parent), run.parent.name, run.name, ckpt_path, True)
    return Continuation(save_dir, name, version, ckpt_path, False)
