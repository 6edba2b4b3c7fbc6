"""One real multi-process run: 2 CPU processes (gloo) through the CLI, global-batch coupling and superposition."""
import csv
import shutil

import pytest

from conftest import REPO, run_cli

pytestmark = pytest.mark.cli


@pytest.mark.parametrize("config", ["configs/toy/otcfm.yaml", "configs/toy/ifm_exact.yaml"])
def test_two_process_ddp_fit_on_cpu(tmp_path, config):
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    result = run_cli(["fit", "-c", config, "--trainer.accelerator=cpu", "--trainer.devices=2",
                      "--trainer.strategy=ddp", "--trainer.max_steps=60", "--data.init_args.steps_per_epoch=30",
                      "--data.init_args.n_val=400", "--trainer.log_every_n_steps=10"], cwd=tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    log_dir = next((tmp_path / "runs").glob("*/version_0"))
    assert (log_dir / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader(open(log_dir / "metrics.csv")))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) >= 5 and all(v == v for v in losses) and losses[-1] < losses[0]
    w2 = [float(r["val/w2"]) for r in rows if r.get("val/w2")]
    assert len(w2) == 2  # validated twice
    if "otcfm" in config:  # a CFM sampler cannot diverge; an IFM one may after 60 steps (then W2 is NaN, not hidden)
        assert all(0 < v < 10 for v in w2)
