"""Shared test settings: quiet, offline, one thread, temporary W&B/Lightning directories."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _offline_env(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb_cache"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb_config"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def run_cli(args, cwd, timeout=300):
    """Run ``python -m lightning_fm ARGS`` in a subprocess; return the CompletedProcess."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), MPLBACKEND="Agg", WANDB_MODE="offline")
    return subprocess.run([sys.executable, "-m", "lightning_fm", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
