"""FID under DDP: 2 CPU processes (gloo) each generate their share of the samples; the FID of the union equals the
single-process FID of the same samples."""

import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO

from lightning_fm.callbacks import InceptionMetrics
from lightning_fm.data import SyntheticImages
from lightning_fm.metrics import InceptionFeatures, frechet_distance_from_stats, mean_and_covariance
from lightning_fm.models import UNet
from lightning_fm.modules import CFMModule
from lightning_fm.sampling import ODESampler

pytestmark = [pytest.mark.cli, pytest.mark.slow]


def test_two_process_fid_is_the_single_process_fid_of_the_same_samples(tmp_path, standin_inception):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "ddp_fid_probe.py"), str(tmp_path), str(standin_inception)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2] and [r["record"]["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["record"]["fid"] == ranks[1]["record"]["fid"] and ranks[0]["record"]["n_samples"] == 7
    # one process: the same model maps the same 7 noise points (rank 0 made 0, 2, 4, 6; rank 1 made 1, 3, 5)
    unet = UNet(
        (3, 8, 8),
        model_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        norm_groups=4,
        num_classes=3,
    )
    model = CFMModule(unet, sampler=ODESampler("euler", 2))
    model.load_state_dict(ranks[0]["state_dict"])
    noise = InceptionMetrics(batch_size=2)
    x0 = torch.stack([noise.noise(i, (3, 8, 8)) for i in range(7)])
    samples = model.sample(x0, y=torch.arange(7) % 3).x.clamp(-1, 1)
    extractor = InceptionFeatures(str(standin_inception))
    train = SyntheticImages(shape=(3, 8, 8), n_train=12, n_eval=4, num_classes=3).splits()["train"]
    mu_r, cov_r = mean_and_covariance(extractor(train.get(torch.arange(12))))
    mu_g, cov_g = mean_and_covariance(extractor(samples))
    expected = frechet_distance_from_stats(mu_g, cov_g, mu_r, cov_r)
    assert ranks[0]["record"]["fid"] == pytest.approx(expected, rel=1e-4)
    assert ranks[0]["val_fid"] == pytest.approx(expected, rel=1e-4)
