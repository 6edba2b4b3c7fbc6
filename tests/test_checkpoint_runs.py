"""From a checkpoint on: ``test|fit --ckpt_path X`` with no ``-c`` rebuilds the model and the data from what the run
stored (the checkpoint's model and DataModule, the run's ``config.yaml`` beside ``checkpoints/``); the W&B run id
travels in the checkpoint; the W&B overlay logs beside the CSV log; a normal fit prints none of the known warnings."""

from __future__ import annotations

import csv
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from conftest import REPO

from lightning_fm.cli import main
from lightning_fm.runtime import quiet

CONFIGS = REPO / "configs"
QUIET = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]


def _finish_wandb(cli) -> None:
    if any(type(logger).__name__ == "WandbLogger" for logger in cli.trainer.loggers):
        import wandb

        wandb.finish()  # as a process exit would (a second logger would otherwise attach to this run)


def _test_metrics(*args: str) -> dict[str, float]:
    cli = main(["test", *args, *QUIET])
    _finish_wandb(cli)
    return {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}


def _same(a: dict[str, float], b: dict[str, float], skip: tuple[str, ...] = ("seconds",)) -> None:
    keys = {k for k in a if not any(s in k for s in skip)}
    assert keys and keys == {k for k in b if not any(s in k for s in skip)}
    for key in sorted(keys):
        assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9, nan_ok=True), key


def _fit(recipe: str, steps: int, *extra: str):
    cli = main(
        ["fit", "-c", str(CONFIGS / recipe), f"--trainer.max_steps={steps}", "--trainer.limit_val_batches=0"]
        + [*QUIET, *extra]
    )
    _finish_wandb(cli)
    return cli


@pytest.mark.slow
def test_a_toy_checkpoint_tests_without_its_config_as_with_it(tmp_path, monkeypatch):
    """``test --ckpt_path <run>/checkpoints/last.ckpt`` alone gives the ``test/*`` of ``test -c <recipe>``; the
    checkpoint records its DataModule's class beside Lightning's ``datamodule_hyper_parameters``."""
    monkeypatch.chdir(tmp_path)
    recipe = "toy/otcfm.yaml"
    extra = ["--data.init_args.n_test=300", "--data.init_args.target=circles"]  # not the default job's data
    cli = _fit(recipe, 6, *extra)
    ckpt = tmp_path / "runs" / "toy_otcfm" / "version_0" / "checkpoints" / "last.ckpt"
    record = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert record["lightning_fm"]["data"] == "lightning_fm.data.toy.ToyDataModule"
    assert record["datamodule_hyper_parameters"]["target"] == "circles"
    with_config = _test_metrics("-c", str(CONFIGS / recipe), *extra, f"--ckpt_path={ckpt}")
    alone = _test_metrics(f"--ckpt_path={ckpt}")
    _same(alone, with_config)
    assert {"test/w2", "test/nll"} <= set(alone) and cli.datamodule.hparams.target == "circles"


@pytest.mark.slow
def test_a_digits_checkpoint_tests_without_its_config_as_with_it(tmp_path, monkeypatch):
    """The digits: before, ``test --ckpt_path`` alone built the default job's 2-D data under the U-Net (``UNet was
    built for data_shape [1, 8, 8], got input (2, 2)``). In its run directory the run's trainer block is used too
    (its callbacks: the classifier's metrics); a copy kept elsewhere still rebuilds the model and the data."""
    monkeypatch.chdir(tmp_path)
    recipe = "digits/cfm.yaml"
    fast = ["--model.init_args.sampler.init_args.steps=4", "--trainer.limit_test_batches=1"]
    _fit(recipe, 3, *fast)
    ckpt = tmp_path / "runs" / "digits_cfm" / "version_0" / "checkpoints" / "last.ckpt"
    with_config = _test_metrics("-c", str(CONFIGS / recipe), *fast, f"--ckpt_path={ckpt}")
    alone = _test_metrics(f"--ckpt_path={ckpt}", "--trainer.limit_test_batches=1")
    _same(alone, with_config)
    assert {"test/w2", "test/fd", "test/bpd"} <= set(alone)
    copied = tmp_path / "elsewhere" / "digits.ckpt"  # no config.yaml beside it: the checkpoint's model and data
    copied.parent.mkdir()
    shutil.copyfile(ckpt, copied)
    cli = main(["test", f"--ckpt_path={copied}", "--trainer.limit_test_batches=1", *QUIET])
    assert type(cli.datamodule).__name__ == "DigitsDataModule" and tuple(cli.datamodule.data_shape) == (1, 8, 8)
    metrics = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}
    assert metrics["test/w2"] == pytest.approx(with_config["test/w2"], rel=1e-6)


@pytest.mark.slow
def test_wandb_logs_beside_the_csv_log_and_its_run_travels_in_the_checkpoint(tmp_path, monkeypatch, capfd):
    """``-c configs/logger/wandb.yaml`` adds W&B to the CSV logger, both in ``runs/<name>/version_<n>/``, with none of
    W&B's warnings of a normal run; ``fit --ckpt_path <copy>`` (outside its run directory) continues the W&B run the
    checkpoint records, ``--trainer.logger.init_args.id=new`` starts another."""
    monkeypatch.chdir(tmp_path)
    wandb_dir = tmp_path / "wandb" / "wandb"  # $WANDB_DIR (conftest)
    config = ["-c", str(CONFIGS / "toy" / "otcfm.yaml"), "-c", str(CONFIGS / "logger" / "wandb.yaml")]
    steps = ["--trainer.log_every_n_steps=2", "--data.init_args.steps_per_epoch=20"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cli = main(["fit", *config, "--trainer.max_steps=4", "--trainer.limit_val_batches=0", *steps, *QUIET])
    _finish_wandb(cli)
    run = tmp_path / "runs" / "toy_otcfm" / "version_0"
    assert [type(logger).__name__ for logger in cli.trainer.loggers] == ["CSVLogger", "WandbLogger"]
    assert all(Path(logger.log_dir).resolve() == run for logger in cli.trainer.loggers)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert [r["step"] for r in rows if r.get("train/loss")] == ["1", "3"]
    run_id = (run / "wandb_run_id").read_text().strip()
    assert [p.name[-len(run_id) :] for p in wandb_dir.glob("offline-run-*")] == [run_id]
    printed = capfd.readouterr()
    for text in ("anonymous setting", "Symlinked", "weights_only", "smaller than the logging interval"):
        assert text not in printed.out + printed.err, text
        assert not [w for w in caught if text in str(w.message)], text
    copied = tmp_path / "fetched.ckpt"  # e.g. from artifact storage: no run directory around it
    shutil.copyfile(run / "checkpoints" / "last.ckpt", copied)
    cli = main(["fit", *config, f"--ckpt_path={copied}", "--trainer.max_steps=6", *steps, *QUIET])
    _finish_wandb(cli)
    assert cli.trainer.global_step == 6 and cli.trainer.logger.log_dir.endswith("version_1")
    assert (tmp_path / "runs" / "toy_otcfm" / "version_1" / "wandb_run_id").read_text().strip() == run_id
    resumed = sorted(p.name for p in wandb_dir.glob("offline-run-*"))
    assert len(resumed) == 2 and all(name.endswith(run_id) for name in resumed)
    cli = main(["fit", *config, f"--ckpt_path={copied}", "--trainer.max_steps=6", "--trainer.logger.init_args.id=new"])
    _finish_wandb(cli)
    [new] = {p.name[-len(run_id) :] for p in wandb_dir.glob("offline-run-*")} - {run_id}
    assert (tmp_path / "runs" / "toy_otcfm" / "version_2" / "wandb_run_id").read_text().strip() == new


@pytest.mark.slow
def test_a_digits_fit_prints_no_logging_interval_warning_and_logs_every_50_steps(tmp_path, monkeypatch, capfd):
    """An epoch of the digits is 12 batches, fewer than ``log_every_n_steps: 50``: Lightning's warning on it is not
    shown (the command line's warnings filters, :func:`lightning_fm.runtime.quiet`), and the training loss is still
    logged every 50 optimiser steps (counted over epochs)."""
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet()
        _fit("digits/cfm.yaml", 100, "--model.init_args.sampler.init_args.steps=2")
    printed = capfd.readouterr()
    assert "smaller than the logging interval" not in printed.out + printed.err
    assert not [w for w in caught if "smaller than the logging interval" in str(w.message)]
    rows = list(csv.DictReader(open(tmp_path / "runs" / "digits_cfm" / "version_0" / "metrics.csv")))
    assert [r["step"] for r in rows if r.get("train/loss")] == ["49", "99"]


# -- the decisions, without a run ----------------------------------------------------------------------------------
def test_the_checkpoints_data_and_the_runs_settings_are_read_as_specs(tmp_path):
    from lightning_fm.cli.app import run_config, run_settings
    from lightning_fm.modules.loading import stored_data

    checkpoint = {
        "lightning_fm": {"module": "lightning_fm.modules.CFMModule", "data": "lightning_fm.data.DigitsDataModule"},
        "datamodule_hyper_parameters": {"batch_size": 128},
    }
    assert stored_data(checkpoint, "x.ckpt") == {
        "class_path": "lightning_fm.data.DigitsDataModule",
        "init_args": {"batch_size": 128},
    }
    assert stored_data({"lightning_fm": {"module": "m"}}, "x.ckpt") is None  # an older checkpoint: no record
    with pytest.raises(ValueError, match="outside the classes"):
        stored_data({**checkpoint, "lightning_fm": {"data": "os.system"}}, "x.ckpt")
    run = tmp_path / "runs" / "toy" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    logger = {"class_path": "lightning_fm.loggers.CSVLogger", "init_args": {"name": "toy", "version": "version_0"}}
    (run / "config.yaml").write_text(f"seed_everything: 3\ntrainer: {{logger: [{logger}]}}\nmodel: m\n")
    assert run_config(str(tmp_path / "copied.ckpt")) is None  # outside a run directory
    settings = run_settings(run_config(str(run / "checkpoints" / "last.ckpt")))
    assert settings == {"seed_everything": 3, "trainer": {"logger": [{**logger, "init_args": {"name": "toy"}}]}}


def test_loggers_of_one_run_share_its_directory_and_a_wandb_logger_takes_the_checkpoints_run():
    from jsonargparse import Namespace

    from lightning_fm.cli.run_config import resume_wandb_run, share_run_directory

    def logger(kind, **args):
        return Namespace(class_path=f"lightning_fm.loggers.{kind}Logger", init_args=Namespace(**args))

    csv_logger, wandb_logger = logger("CSV", name="toy", save_dir=None), logger("Wandb", name=None, id=None)
    config = Namespace(trainer=Namespace(logger=[csv_logger, wandb_logger]))
    with share_run_directory(config):
        assert config.trainer.logger is csv_logger
        csv_logger.init_args.version = "version_3"  # what continue_run decides
    assert config.trainer.logger == [csv_logger, wandb_logger]
    assert (wandb_logger.init_args.name, wandb_logger.init_args.version) == ("toy", "version_3")
    resume_wandb_run(config, {"id": "abc123", "project": "p", "group": "toy"})
    assert (wandb_logger.init_args.id, wandb_logger.init_args.project) == ("abc123", "p")
    wandb_logger.init_args.id = "new"  # asked for a new run: kept
    resume_wandb_run(config, {"id": "abc123"})
    assert wandb_logger.init_args.id == "new"
