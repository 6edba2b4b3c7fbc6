"""End-to-end: `python -m lightning_fm` in a subprocess (each run costs seconds: keep these few)."""

import csv
import shutil

import pytest
import torch
import yaml
from conftest import REPO, run_cli

pytestmark = [pytest.mark.cli, pytest.mark.slow]


def _metrics(log_dir):
    with open(log_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_fit_on_a_toy_config_lowers_the_loss_and_leaves_checkpoint_config_metrics_and_plot(tmp_path):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    result = run_cli(
        [
            "fit",
            "-c",
            "configs/toy/otcfm.yaml",
            "--trainer.max_steps=400",
            "--data.init_args.steps_per_epoch=200",
            "--trainer.log_every_n_steps=10",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    log_dir = tmp_path / "runs" / "toy_otcfm" / "version_0"
    assert (log_dir / "config.yaml").is_file()
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    assert (log_dir / "samples" / "latest.png").stat().st_size > 10_000
    rows = _metrics(log_dir)
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 10 and sum(losses[-5:]) / 5 < 0.6 * sum(losses[:3]) / 3
    w2 = [float(r["val/w2"]) for r in rows if r.get("val/w2")]
    floor = [float(r["val/w2_floor"]) for r in rows if r.get("val/w2_floor")]
    assert len(w2) == 2 and w2[-1] < w2[0] + 0.5 and 0 < floor[0] < 0.3
    config = yaml.safe_load((log_dir / "config.yaml").read_text())
    assert config["model"]["class_path"] == "lightning_fm.modules.CFMModule"
    # the checkpoint alone restores the model, with the EMA weights as its state
    from lightning_fm.modules import CFMModule

    model = CFMModule.load_from_checkpoint(log_dir / "checkpoints" / "last.ckpt", map_location="cpu")
    samples = model.sample(torch.randn(256, 2), steps=20)
    assert samples.x.shape == (256, 2) and samples.nfe == 20 and torch.isfinite(samples.x).all()
    # predict writes samples to a file
    result = run_cli(
        [
            "predict",
            "-c",
            "configs/toy/otcfm.yaml",
            f"--ckpt_path={log_dir / 'checkpoints' / 'last.ckpt'}",
            "--data.init_args.n_predict=300",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    predictions = list((tmp_path / "runs" / "toy_otcfm").glob("version_*/predictions.pt"))
    assert len(predictions) == 1 and torch.load(predictions[0], weights_only=True)["samples"].shape == (300, 2)


def test_bad_configuration_fails_before_training_and_names_the_key(tmp_path):
    result = run_cli(["fit", "--data.init_args.source=notadistribution", "--trainer.max_steps=5"], cwd=tmp_path)
    assert result.returncode != 0
    assert "notadistribution" in result.stderr and "data.source" in result.stderr
    assert not list(tmp_path.glob("runs/**/*.ckpt"))


def test_the_default_job_is_configs_toy_otcfm(tmp_path):
    default = run_cli(["fit", "--print_config"], cwd=tmp_path)
    otcfm = run_cli(["fit", "-c", str(REPO / "configs/toy/otcfm.yaml"), "--print_config"], cwd=tmp_path)
    assert default.returncode == 0 and otcfm.returncode == 0, default.stderr[-2000:] + otcfm.stderr[-2000:]
    assert yaml.safe_load(default.stdout) == yaml.safe_load(otcfm.stdout)
