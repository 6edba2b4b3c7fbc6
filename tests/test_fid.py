"""FID the way papers measure it, with a stand-in weights file of the real layout (the real one cannot be
downloaded here): the Inception path end to end against torchmetrics' own FID, the missing-weights errors, the
reference-statistics cache, and InceptionMetrics in a real fit (EMA weights, settings written beside the number)."""

import json
import math

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EMAWeightAveraging
from lightning.pytorch.loggers import CSVLogger

from lightning_fm.callbacks import InceptionMetrics
from lightning_fm.couplings import IndependentCoupling
from lightning_fm.data import ImageDataModule, SyntheticImages
from lightning_fm.metrics import (
    InceptionFeatures,
    frechet_distance,
    frechet_distance_from_stats,
    mean_and_covariance,
    reference_statistics,
    sliced_wasserstein2,
)
from lightning_fm.metrics import inception as inception_module
from lightning_fm.metrics.reference import reference_path
from lightning_fm.models import UNet
from lightning_fm.modules import CFMModule
from lightning_fm.paths import LinearPath
from lightning_fm.sampling import ODESampler


def images(n, seed, shape=(3, 16, 16)):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_to_uint8_is_torchcfms_conversion_and_grey_becomes_rgb():
    x = torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 2.0]).reshape(1, 1, 2, 3)
    u8 = inception_module.to_uint8(x)
    assert u8.dtype == torch.uint8 and u8.shape == (1, 3, 2, 3)
    expected = torch.tensor([0.5, 64.25, 128.0, 255.37, 255.5, 383.0]).clamp(0, 255).floor()  # x * 127.5 + 128
    assert torch.equal(u8[0, 0].flatten().float(), expected) and torch.equal(u8[:, 0], u8[:, 2])
    with pytest.raises(ValueError, match="FID takes images"):
        inception_module.to_uint8(torch.zeros(2, 2, 4, 4))


@pytest.mark.slow
def test_fid_of_our_features_equals_torchmetrics_fid_with_the_reference_resize(standin_inception):
    """An independent pipeline on the same weights: torchmetrics' FrechetInceptionDistance with antialias=False (the
    TF1-compatible resize of torch-fidelity, which the literature uses), fed the same uint8 images."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    a, b = images(16, 1), images(16, 2) * 0.5
    extractor = InceptionFeatures(str(standin_inception), batch_size=10)
    ours = frechet_distance(extractor(a), extractor(b))
    metric = FrechetInceptionDistance(
        feature=2048, feature_extractor_weights_path=str(standin_inception), antialias=False
    )
    metric.update(inception_module.to_uint8(a), real=True)
    metric.update(inception_module.to_uint8(b), real=False)
    assert ours > 0 and ours == pytest.approx(float(metric.compute()), rel=2e-3)
    assert frechet_distance(extractor(a[:8]), extractor(a[8:])) < ours  # two halves of one set are closer


def test_settings_name_the_weights_and_tell_stand_in_weights_from_the_reference(standin_inception):
    settings = InceptionFeatures(str(standin_inception)).settings()
    assert settings["weights"] == str(standin_inception) and len(settings["weights_sha256"]) == 64
    assert settings["reference_weights"] is False  # its sha256 does not start with 6726825d
    assert "TF1-compatible" in settings["resize"] and settings["torch_fidelity"]


def test_missing_weights_name_the_file_the_url_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    with pytest.raises(FileNotFoundError) as err:
        InceptionFeatures()
    message = str(err.value)
    assert str(expected) in message and inception_module.WEIGHTS_URL in message and "weights_path" in message
    with pytest.raises(FileNotFoundError, match="weights_path='/nowhere/w.pth': no such file"):
        InceptionFeatures("/nowhere/w.pth")


def test_reference_statistics_are_cached_and_invalidated_by_any_setting(tmp_path):
    calls = []

    def features(batch):
        calls.append(len(batch))
        return batch.flatten(1)[:, :5] * 3

    data = images(30, 3, (1, 4, 4))
    chunks = lambda: (data[i : i + 8] for i in range(0, 30, 8))  # noqa: E731
    key = {"name": "toy", "split": "train", "n": 30, "features": {"weights_sha256": "abc"}}
    first = reference_statistics(features, 5, chunks(), key, tmp_path, kid_features=12)
    mu, cov = mean_and_covariance(data.flatten(1)[:, :5] * 3)
    assert torch.allclose(first["mu"], mu, atol=1e-12) and torch.allclose(first["cov"], cov, atol=1e-10)
    assert first["n"] == 30 and first["kid"].shape == (12, 5) and sum(calls) == 30
    again = reference_statistics(features, 5, chunks(), key, tmp_path, kid_features=12)
    assert sum(calls) == 30 and torch.equal(again["cov"], first["cov"])  # read from the cache, nothing computed
    other = reference_statistics(features, 5, chunks(), {**key, "features": {"weights_sha256": "def"}}, tmp_path)
    assert (
        sum(calls) == 60
        and reference_path(key, tmp_path) != reference_path({**key, "features": {"weights_sha256": "def"}}, tmp_path)
        and other["n"] == 30
    )


def test_sliced_w2_against_the_closed_form_between_isotropic_gaussians():
    """Projections of N(m1, s1^2 I) and N(m2, s2^2 I) on theta are N(theta.m, s^2): SW2^2 = |m1 - m2|^2 / D +
    (s1 - s2)^2 over directions uniform on the sphere of R^D."""
    g = torch.Generator().manual_seed(0)
    d, n = 4, 5000
    m = torch.tensor([2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = m + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64)
    expected = math.sqrt(4.0 / d + 0.25)
    # over P directions the estimate of SW2^2 = 1.25 has sd ~ sd(4 theta_1^2) / sqrt(P) = 1 / sqrt(4000) = 0.016
    # (theta_1^2 ~ Beta(1/2, 3/2) in R^4), i.e. 0.6% on SW2; 3% allows the quantiles' sampling error of n = 5000
    assert sliced_wasserstein2(x, y, projections=4000, generator=g) == pytest.approx(expected, rel=0.03)
    assert sliced_wasserstein2(x[:500], x[500:1700], generator=g) < 0.1  # one distribution, unequal sizes


def tiny_model(num_classes=0):
    torch.manual_seed(0)
    unet = UNet(
        (3, 8, 8),
        model_channels=8,
        channel_mult=(1, 2),
        num_res_blocks=1,
        attention_resolutions=(),
        norm_groups=4,
        num_classes=num_classes,
    )
    return CFMModule(unet, LinearPath(0.0), IndependentCoupling(), sampler=ODESampler("euler", 2))


@pytest.mark.slow
def test_fid_callback_in_a_fit_measures_the_ema_weights_and_writes_every_setting(tmp_path, standin_inception):
    data = ImageDataModule(
        target=SyntheticImages(shape=(3, 8, 8), n_train=12, n_eval=4, num_classes=3), batch_size=6, eval_batch_size=4
    )
    fid = InceptionMetrics(
        n_samples=7,
        test_samples=3,
        batch_size=3,
        kid_subsets=5,
        kid_subset_size=4,
        weights_path=str(standin_inception),
        cache_dir=str(tmp_path / "cache"),
    )
    module = tiny_model(num_classes=3)
    trainer = Trainer(
        max_steps=4,
        logger=CSVLogger(tmp_path),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[EMAWeightAveraging(decay=0.5), fid],
        check_val_every_n_epoch=1,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)  # two epochs of 2 steps: two validations
    written = sorted((tmp_path / "lightning_logs" / "version_0" / "fid").glob("val_step_*.json"))
    assert [p.name for p in written] == ["val_step_0000002.json", "val_step_0000004.json"]
    record = json.loads(written[-1].read_text())
    for key in (
        "fid",
        "kid",
        "kid_std",
        "n_samples",
        "nfe_per_batch",
        "sampler",
        "reference",
        "features",
        "weights",
        "world_size",
        "precision",
        "device",
        "tools",
    ):
        assert key in record, key
    assert record["n_samples"] == 7 and record["weights"] == "EMA weights" and record["world_size"] == 1
    assert record["reference"]["split"] == "train" and record["reference"]["n"] == 12
    assert record["features"]["weights_sha256"] == InceptionFeatures(str(standin_inception)).weights_sha256
    assert record["nfe_per_batch"] == 2 and record["sampler"]["options"]["method"] == "euler"
    assert trainer.callback_metrics["val/fid"] == pytest.approx(record["fid"], rel=1e-6)
    # independently: the EMA weights (in the live module after fit) map the same fixed noise, asked for the same
    # classes, and the FID of their features to the training split's is the logged one
    extractor = InceptionFeatures(str(standin_inception))
    x0 = torch.stack([fid.noise(i, (3, 8, 8)) for i in range(7)])
    samples = module.sample(x0, y=torch.arange(7) % 3).x.clamp(-1, 1)
    split = data.target_train_images()
    mu, cov = mean_and_covariance(extractor(split.get(torch.arange(12))))
    g_mu, g_cov = mean_and_covariance(extractor(samples))
    assert record["fid"] == pytest.approx(frechet_distance_from_stats(g_mu, g_cov, mu, cov), rel=1e-4)
    # test: test_samples samples, under test/
    trainer.test(module, data, verbose=False)
    assert fid.last["stage"] == "test" and fid.last["n_samples"] == 3 and "test/fid" in trainer.callback_metrics


def test_fid_callback_refuses_point_data_before_training(standin_inception):
    from lightning_fm.data import ToyDataModule

    trainer = Trainer(
        max_steps=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[InceptionMetrics(weights_path=str(standin_inception))],
    )
    with pytest.raises(ValueError, match="InceptionMetrics measures images"):
        trainer.fit(CFMModule(), ToyDataModule(steps_per_epoch=2))
