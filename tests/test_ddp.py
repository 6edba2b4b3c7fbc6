"""Multi-process runs: 2 CPU processes (gloo). Global-batch coupling with labels, validation metrics on the union of
all ranks' samples, and the CLI end to end."""

import csv
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import REPO, run_cli

from lightning_fm.metrics import wasserstein2

pytestmark = [pytest.mark.cli, pytest.mark.slow]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_probe.py"), str(out)],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    ranks[0]["predictions"] = out / "predictions.pt"
    return ranks


def test_ddp_couples_the_global_batch_and_labels_follow_their_samples(probe):
    assert [p["world_size"] for p in probe] == [2, 2]
    for step in range(len(probe[0]["coupled"])):
        ranks = [p["coupled"][step] for p in probe]
        gathered_x1 = torch.cat([r["batch"]["x1"] for r in ranks])  # the global batch, in rank order
        gathered_y1 = torch.cat([r["batch"]["y1"] for r in ranks])
        paired_x1 = torch.cat([r["x1"] for r in ranks])
        # every rank holds the global coupled pairs (the charges of a superposition) and knows its offset in them
        assert all(torch.equal(r["all_x1"], paired_x1) for r in ranks) and [r["offset"] for r in ranks] == [0, 32]
        paired_y1 = torch.cat([r["y1"] for r in ranks])
        # one plan for both ranks: together they use every target of the global batch exactly once
        index = torch.cdist(paired_x1, gathered_x1).argmin(1)
        assert torch.equal(gathered_x1[index], paired_x1) and len(set(index.tolist())) == 64
        # each label is the label of its own sample
        assert torch.equal(paired_y1, gathered_y1[index])
        # within-class OT of a noise source: class c gets a block of noise rows of the size of class c
        counts = torch.bincount(gathered_y1, minlength=2)
        assert torch.equal(paired_y1, torch.sort(gathered_y1).values) and int(counts.sum()) == 64


def test_ddp_validation_w2_is_the_w2_of_the_union_of_all_ranks_samples(probe):
    samples = torch.cat([b["samples"] for p in probe for b in p["validated"]])
    targets = torch.cat([b["x1"] for p in probe for b in p["validated"]])
    assert [len(b["x1"]) for b in probe[0]["validated"]] == [50, 50, 50]  # 3 batches of 50 on every rank
    assert len(samples) == len(targets) == 300 and len(torch.unique(targets, dim=0)) == 300  # each sample once
    expected = wasserstein2(samples, targets)  # the single-process W2 of the same samples
    assert probe[0]["val_w2"] == pytest.approx(expected, rel=1e-5) and probe[1]["val_w2"] == probe[0]["val_w2"]


def test_ddp_predictions_of_all_ranks_are_written_once_in_order(probe):
    from lightning_fm.models import MLP
    from lightning_fm.modules import CFMModule

    written = torch.load(probe[0]["predictions"], weights_only=True)["samples"]
    model = CFMModule(MLP([2], width=16, num_classes=2))
    model.load_state_dict(probe[0]["state_dict"])
    expected = model.sample(probe[0]["predict_set"]["x0"]).x  # one process, the whole predict set, in order
    assert written.shape == (101, 2) and torch.allclose(written, expected, atol=1e-6)


@pytest.mark.parametrize("config, logger", [("configs/toy/otcfm.yaml", "wandb"), ("configs/toy/ifm_exact.yaml", "csv")])
def test_two_process_ddp_fit_on_cpu(tmp_path, monkeypatch, config, logger):
    """``fit --trainer.devices 2 --trainer.strategy ddp``: one run directory with one set of checkpoints, of plots
    and (W&B) one offline W&B run holding the config and the plots, written by rank 0 alone."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    monkeypatch.delenv("WANDB_DIR")  # W&B's files go into the run directory
    result = run_cli(
        [
            "fit",
            "-c",
            config,
            "-c",
            f"configs/logger/{logger}.yaml",
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
            "--trainer.max_steps=60",
            "--data.init_args.steps_per_epoch=30",
            "--data.init_args.n_val=400",
            "--trainer.log_every_n_steps=10",
        ],
        cwd=tmp_path,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    [log_dir] = (tmp_path / "runs").glob("*/*")  # one run directory (no second version from rank 1)
    assert sorted(p.name for p in (log_dir / "checkpoints").iterdir()) == ["last.ckpt"]  # one, by rank 0
    assert sorted(p.name for p in (log_dir / "samples").iterdir()) == [
        "latest.png",
        "step_0000030.png",
        "step_0000060.png",
    ]  # two validations, drawn once each
    assert (log_dir / "config.yaml").is_file()
    if logger == "wandb":
        [run] = (log_dir / "wandb").glob("offline-run-*")  # one W&B run, its id saved beside the checkpoints
        assert run.name.endswith((log_dir / "wandb_run_id").read_text().strip())
        assert len(list((run / "files" / "media" / "images" / "samples").glob("validation_*.png"))) == 2  # plots in W&B
        assert (run / "files" / log_dir.name / "config.yaml").is_file()  # the resolved config among the run's files
        record = next(run.glob("run-*.wandb")).read_bytes()  # and as the W&B config: the data and model classes too
        assert b"lightning_fm.data.ToyDataModule" in record and b"lightning_fm.couplings.OTCoupling" in record
        return
    rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 5 and all(v == v for v in losses) and losses[-1] < losses[0]
    assert all(float(r["train/samples_per_s"]) > 0 for r in rows if r.get("train/samples_per_s"))
    w2 = [float(r["val/w2"]) for r in rows if r.get("val/w2")]
    assert len(w2) == 2  # validated twice (an IFM sampler may diverge after 60 steps: then W2 is NaN, not hidden)


def test_a_non_finite_loss_on_one_rank_stops_every_rank(tmp_path):
    """A NaN loss on rank 1 alone at step 50 (the averaged gradient then makes every later loss NaN on both ranks):
    both processes stop at the next check (step 59, log_every_n_steps = 10) with each process's count, instead of
    rank 1 stopping alone and rank 0 waiting for it in the next collective; no checkpoint is claimed (the first one
    would come at step 1000)."""
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    env_path = f"{REPO / 'tests'}{os.pathsep}{REPO}"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_fm",
            "fit",
            "-c",
            "configs/toy/otcfm.yaml",
            "--model.class_path=nan_probe.NaNOnRank1",
            "--trainer.accelerator=cpu",
            "--trainer.devices=2",
            "--trainer.strategy=ddp",
            "--trainer.max_steps=200",
            "--trainer.limit_val_batches=0",
            "--trainer.log_every_n_steps=10",
            "--trainer.enable_progress_bar=false",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=env_path, MPLBACKEND="Agg"),
    )
    assert result.returncode != 0
    said = (
        "training loss is not finite in steps 50..59 (non-finite steps per process: rank 0: 9, rank 1: 10); "
        "noticed at step 59"
    )
    assert said in result.stderr, result.stderr[-2000:]
    assert "no checkpoint has been written yet (one every 1000 steps" in result.stderr
