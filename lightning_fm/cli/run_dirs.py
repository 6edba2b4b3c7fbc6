"""Run directories, ``<save_dir>/<name>/<version>/``: which one a command continues. Pure Python.

* ``fit --ckpt_path last``: the newest ``<version>/checkpoints/last.ckpt`` of the logger's ``<save_dir>/<name>``
  (by modification time); the run continues in that directory (its metrics file, its W&B run).
* any command with ``--ckpt_path <run>/checkpoints/<file>.ckpt``: that checkpoint's run directory ``<run>``
  (``test`` and ``predict`` write their results beside the training run that made the checkpoint).
* otherwise a new ``version_<n>``, one above the highest there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

VERSION = re.compile(r"version_(\d+)$")


def next_version(root: Path) -> str:
    """``version_<n>``: one above the highest ``version_<k>`` directory under ``root`` (``version_0`` if none)."""
    taken = [int(m.group(1)) for p in Path(root).glob("version_*") if p.is_dir() and (m := VERSION.match(p.name))]
    return f"version_{max(taken) + 1 if taken else 0}"


def latest_last_checkpoint(root: Path) -> Path | None:
    """The newest ``<root>/<version>/checkpoints/last*.ckpt``, or None."""
    found = [p for p in Path(root).glob("*/checkpoints/last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def run_of_checkpoint(path: Path) -> Path | None:
    """``<run>`` of ``<run>/checkpoints/<file>``, or None for a checkpoint kept elsewhere."""
    path = Path(path)
    return path.parent.parent if path.parent.name == "checkpoints" else None


@dataclass(frozen=True)
class Continuation:
    """Where a command logs: ``save_dir/name/version``; ``ckpt_path`` resolved to a file (or as given)."""

    save_dir: str
    name: str
    version: str | None
    ckpt_path: str | None
    resumed: bool  # whether the directory exists already (its files are continued)


def continuation(save_dir: str, name: str, ckpt_path: str | None, subcommand: str) -> Continuation:
    """The run directory a command continues (module docstring)."""
    root = Path(save_dir) / name
    if ckpt_path == "last" and subcommand == "fit":
        last = latest_last_checkpoint(root)
        if last is None:  # nothing to resume: a fresh run (Lightning warns and starts from scratch)
            return Continuation(save_dir, name, None, None, False)
        return Continuation(save_dir, name, last.parent.parent.name, str(last), True)
    if ckpt_path and ckpt_path not in ("last", "best", "hpc") and Path(ckpt_path).is_file():
        run = run_of_checkpoint(Path(ckpt_path))
        if run is not None:
            return Continuation(str(run.parent.parent), run.parent.name, run.name, ckpt_path, True)
    return Continuation(save_dir, name, None, ckpt_path, False)
