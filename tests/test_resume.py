"""Exact resume: ``fit --ckpt_path last`` continues the run in its own directory (metrics file, W&B run) and
reaches the weights of an uninterrupted run; ``test --ckpt_path`` writes beside the checkpoint's run."""

import csv

import pytest
import torch
import yaml
from conftest import REPO

from lightning_fm.cli import main

STEPS = 30  # a checkpoint every STEPS steps; the runs go to 2 * STEPS, in the middle of an epoch of 100 steps


def _config(tmp_path, logger: str):
    """The default toy job with a checkpoint every STEPS steps (and, for W&B, the stacked logger config)."""
    path = tmp_path / "checkpoints.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "trainer": {
                    "callbacks": [
                        {"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.9}},
                        {
                            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                            "init_args": {"save_last": True, "every_n_train_steps": STEPS, "save_top_k": -1},
                        },
                    ]
                }
            }
        )
    )
    configs = ["-c", str(REPO / "configs" / "toy" / "otcfm.yaml"), "-c", str(path)]
    if logger == "wandb":
        configs += ["-c", str(REPO / "configs" / "logger" / "wandb.yaml")]
    # a constant learning rate: the recipe's cosine decays over max_steps, which the two parts of a resume change
    return configs + [
        "--model.init_args.lr_scheduler=null",
        "--data.init_args.steps_per_epoch=100",
        "--trainer.limit_val_batches=0",
        "--trainer.log_every_n_steps=5",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]


def _fit(config, name, steps, *extra):
    cli = main(["fit", *config, f"--trainer.max_steps={steps}", f"--trainer.logger.init_args.name={name}", *extra])
    if any(type(logger).__name__ == "WandbLogger" for logger in cli.trainer.loggers):  # beside the CSV logger
        import wandb

        wandb.finish()  # as a process exit would (a second logger would otherwise attach to this run)
    return cli


def _checkpoint(run):
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.parametrize("logger", ["csv", pytest.param("wandb", marks=pytest.mark.slow)])
def test_resuming_from_a_mid_epoch_checkpoint_reaches_the_uninterrupted_weights(tmp_path, monkeypatch, logger):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("WANDB_DIR")
    config = _config(tmp_path, logger)
    _fit(config, "straight", 2 * STEPS)
    _fit(config, "resumed", STEPS)
    _fit(config, "resumed", 2 * STEPS, "--ckpt_path=last")
    runs = sorted(p.relative_to(tmp_path / "runs").as_posix() for p in (tmp_path / "runs").glob("*/*"))
    assert runs == ["resumed/version_0", "straight/version_0"]  # the resume continued its own directory
    straight, resumed = (_checkpoint(tmp_path / "runs" / name / "version_0") for name in ("straight", "resumed"))
    assert straight["global_step"] == resumed["global_step"] == 2 * STEPS
    for key in ("state_dict", "current_model_state"):  # the EMA weights and the raw ones
        for name, value in straight[key].items():
            assert torch.allclose(resumed[key][name], value, atol=1e-6, rtol=0), (key, name)
    for (name, state), other in zip(
        straight["optimizer_states"][0]["state"].items(), resumed["optimizer_states"][0]["state"].values()
    ):
        assert torch.allclose(state["exp_avg_sq"], other["exp_avg_sq"], atol=1e-9, rtol=0), name
    run = tmp_path / "runs" / "resumed" / "version_0"
    if logger == "csv":  # one metrics file, the rows of the uninterrupted run

        def rows(name):
            with open(tmp_path / "runs" / name / "version_0" / "metrics.csv") as f:
                return [(r["step"], r["train/loss"]) for r in csv.DictReader(f)]

        assert rows("resumed") == rows("straight") and len(rows("straight")) == 2 * STEPS // 5
        cli = main(
            ["test", *config, f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}", "--trainer.limit_test_batches=1"]
        )
        assert cli.trainer.logger.log_dir == str(run)  # test writes beside the training run
        assert (run / "metrics_test.csv").is_file() and (run / "config_test.yaml").is_file()
        assert rows("resumed") == rows("straight")  # the training log untouched
    else:  # one W&B run, resumed under its id
        wandb_runs = sorted(p.name for p in (run / "wandb").glob("offline-run-*"))
        run_id = (run / "wandb_run_id").read_text().strip()
        assert len(wandb_runs) == 2 and all(name.endswith(run_id) for name in wandb_runs)


def test_fit_with_ckpt_path_last_and_nothing_to_resume_starts_a_fresh_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = _fit(_config(tmp_path, "csv"), "fresh", 2, "--ckpt_path=last")
    assert cli.trainer.global_step == 2 and cli.trainer.logger.log_dir.endswith("fresh/version_0")


def _weights_equal(straight, resumed):
    assert straight["global_step"] == resumed["global_step"]
    for key in ("state_dict", "current_model_state"):  # the EMA weights and the raw ones
        for name, value in straight[key].items():
            assert torch.allclose(resumed[key][name], value, atol=1e-6, rtol=0), (key, name)


@pytest.mark.parametrize(
    "source", ["periodic", pytest.param("periodic_validating", marks=pytest.mark.slow), "end_of_shorter_run"]
)
def test_resuming_at_an_epoch_boundary_reaches_the_uninterrupted_weights(tmp_path, monkeypatch, source):
    """Epochs of STEPS batches, so that every checkpoint falls on an epoch's last batch: the straight run's own
    periodic checkpoint at step STEPS (what a SIGKILL after that step leaves; with and without validation passes in
    between), or the end of a run of STEPS steps, continued to 2 * STEPS, give the straight run's weights (Lightning
    numbers the next epoch one too far after such a resume; the data counts its passes itself)."""
    monkeypatch.chdir(tmp_path)
    config = [*_config(tmp_path, "csv"), f"--data.init_args.steps_per_epoch={STEPS}"]
    if source == "periodic_validating":  # a validation pass every 10 steps, between the checkpoint and the resume too
        config += ["--trainer.limit_val_batches=1", "--trainer.val_check_interval=10"]
    _fit(config, "straight", 2 * STEPS)
    straight = tmp_path / "runs" / "straight" / "version_0" / "checkpoints"
    if source.startswith("periodic"):
        start = tmp_path / "copied.ckpt"  # a copy: the straight run's directory stays untouched
        start.write_bytes((straight / f"epoch=0-step={STEPS}.ckpt").read_bytes())
        _fit(config, "resumed", 2 * STEPS, f"--ckpt_path={start}")
    else:
        _fit(config, "resumed", STEPS)
        _fit(config, "resumed", 2 * STEPS, "--ckpt_path=last")
    _weights_equal(_checkpoint(straight.parent), _checkpoint(tmp_path / "runs" / "resumed" / "version_0"))
