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
    monkeypatch.setenv("WANDB_DATA_DIR", str(tmp_path / "wandb_data"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def run_cli(args, cwd, timeout=300):
    """Run ``python -m lightning_fm ARGS`` in a subprocess; return the CompletedProcess."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), MPLBACKEND="Agg", WANDB_MODE="offline")
    env.pop("WANDB_SERVICE", None)  # a W&B run of this process left its service's address: the child needs its own
    return subprocess.run(
        [sys.executable, "-m", "lightning_fm", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def make_standin_inception_weights(path: Path) -> Path:
    """A stand-in for FID's Inception v3 weights file (the real one cannot be downloaded here): torch-fidelity's own
    architecture with He-initialised random weights, saved as the state dict its loader expects (the same keys and
    shapes as the real file)."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Layout(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # build the layers, load nothing
            return None

    empty = path.parent / "empty_state_dict.pth"
    torch.save({}, empty)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = Layout("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def standin_inception(tmp_path_factory) -> Path:
    return make_standin_inception_weights(tmp_path_factory.mktemp("inception") / "standin-inception.pth")
