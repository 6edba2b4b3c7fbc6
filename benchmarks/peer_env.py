"""Isolated virtual environments for running a peer library's own code.

A comparison with another library is only fair if its code runs unmodified, with its own dependencies, and
nothing of it leaks into the project's venv. ``ensure_env`` builds one venv per peer under
``benchmarks/.envs/<name>`` (git-ignored), with the same torch as the project (2.14.1), and ``run_in_env``
runs a Python snippet there on one thread, the way the project's own measurements run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ENVS = Path(__file__).resolve().parent / ".envs"
TORCH = "torch==2.14.1"  # the project's torch; pinned so pip never resolves a newer one


def ensure_env(name: str, requirements: list[str]) -> Path:
    """Create (once) the venv ``benchmarks/.envs/<name>`` with ``TORCH`` plus ``requirements``; return its python.

    An existing venv is reused when its marker file records the same requirement list; otherwise it is
    rebuilt from scratch, so an env never holds a mix of two installs.
    """
    root = ENVS / name
    python = root / "bin" / "python"
    marker = root / ".requirements.json"
    wanted = [TORCH, *requirements]
    if python.exists() and marker.exists() and json.loads(marker.read_text()) == wanted:
        return python
    if root.exists():
        shutil.rmtree(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True)  # python3 -m venv (based on the base python)
    # torch in the same pip call as the peer, so its requirements are solved against this torch
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *wanted], check=True)
    marker.write_text(json.dumps(wanted))
    return python


def run_in_env(python: Path, code: str, timeout: int) -> str:
    """Run ``code`` with ``python`` (one thread, headless matplotlib); return its stdout, raise with its stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    env.pop("PYTHONPATH", None)  # nothing of the project's import path inside the peer's env
    env.pop("VIRTUAL_ENV", None)
    proc = subprocess.run(
        [str(python), "-c", code], check=False, capture_output=True, text=True, env=env, timeout=timeout
    )
    if proc.returncode != 0:
        raise RuntimeError(f"snippet failed in {python} (exit {proc.returncode}):\n{proc.stderr}")
    return proc.stdout
