"""The paper-recipe image configs start training: two CPU steps of every ``configs/{cifar10,mnist,celeba64}/*.yaml``
as shipped, full-size U-Net included, with only the data swapped for synthetic images of the data set's shape (no
download here) and the batch made small."""

import copy
import json
import logging
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import REPO

from lightning_fm.cli import main
from lightning_fm.cli.app import DEFAULT_BASE, ROOT_BASE, apply_layer, read_base

# each test trains a recipe's full-size U-Net on the CPU (tens of seconds to minutes)
pytestmark = pytest.mark.slow

CIFAR10 = sorted((REPO / "configs" / "cifar10").glob("*.yaml"))
RECIPES = [
    *CIFAR10,
    *sorted((REPO / "configs" / "mnist").glob("*.yaml")),
    *sorted((REPO / "configs" / "celeba64").glob("*.yaml")),
]
SHAPES = {"cifar10": [3, 32, 32], "mnist": [1, 28, 28], "celeba64": [3, 64, 64]}
#: the parameters of the shipped backbones: torchcfm's CIFAR-10 U-Net; the IFM/EFM notebooks' DDPM net in a
#: FieldHead (its 57,634,180 less the 1,024 by which the FieldHead's f_z projection is smaller than its extra
#: output channel; tests/test_unet.py)
BACKBONE_PARAMETERS = {
    "cifar10/icfm": 35_746_307,
    "cifar10/otcfm": 35_746_307,
    "cifar10/ifm": 57_633_156,
    "cifar10/efm": 57_633_156,
    "mnist/otcfm": 1_075_361,
}


def small_data_copy(config: Path, tmp_path: Path, inception: Path, checkpoints: bool = True) -> Path:
    """The config with synthetic data of its set's shape, batches of 4, a two-image, two-step sample grid, duality
    checks on four points, FID on stand-in Inception weights, and a checkpoint every 2 steps (or none: a full-size
    checkpoint is up to 1.7 GB)."""
    cfg = yaml.safe_load(config.read_text())
    classes = 0 if config.parent.name == "celeba64" else 10
    cfg["data"]["init_args"]["target"] = {
        "class_path": "lightning_fm.data.SyntheticImages",
        "init_args": {"shape": SHAPES[config.parent.name], "n_train": 16, "n_eval": 4, "num_classes": classes},
    }
    cfg["data"]["init_args"].update(batch_size=4, eval_batch_size=4, num_workers=0)
    # the recipe's whole callback list (its base's and its own callbacks+), to edit the entries in place
    layers: dict = {}
    for name in dict.fromkeys((ROOT_BASE, cfg.get("base", DEFAULT_BASE))):
        apply_layer(layers, read_base(name))
    apply_layer(layers, {"trainer": cfg["trainer"]})
    cfg["trainer"].pop("callbacks+", None)
    cfg["trainer"]["callbacks"] = copy.deepcopy(layers["trainer.callbacks"])
    for callback in cfg["trainer"]["callbacks"]:
        if callback["class_path"].endswith("SampleGrid"):
            callback.setdefault("init_args", {}).update(n_samples=2, sampler={"method": "euler", "steps": 2})
        if callback["class_path"].endswith("InceptionMetrics"):
            callback["init_args"].update(
                weights_path=str(inception), cache_dir=str(tmp_path / "cache"), test_samples=3, batch_size=2, kid=False
            )
        if callback["class_path"].endswith("DualityCheck"):  # its identities on a few points of a few dimensions
            callback.setdefault("init_args", {}).update(n_points=4, steps=2, max_dim=1)
        if callback["class_path"].endswith("ModelCheckpoint"):
            callback["init_args"].update(every_n_train_steps=2)
    if not checkpoints:
        cfg["trainer"]["callbacks"] = [
            c for c in cfg["trainer"]["callbacks"] if not c["class_path"].endswith("ModelCheckpoint")
        ]
        cfg["trainer"]["enable_checkpointing"] = False
    path = tmp_path / config.name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize("config", RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_image_recipe_trains_on_cpu_with_its_full_size_unet(config, tmp_path, monkeypatch, standin_inception):
    assert {p.stem for p in CIFAR10} == {"icfm", "otcfm", "ifm", "efm"}
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LIGHTNING_FM_CACHE", str(tmp_path / "cache"))  # the digits classifier of ClassifierMetrics
    monkeypatch.setattr(sys, "argv", ["lightning_fm"])  # the CLI is given its arguments, not pytest's
    torch.manual_seed(0)
    cli = main(
        [
            "fit",
            "-c",
            str(small_data_copy(config, tmp_path, standin_inception, checkpoints=False)),
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
    )
    model, trainer = cli.model, cli.trainer
    assert trainer.global_step == 2
    unet = getattr(model.backbone, "backbone", model.backbone)  # inside a FieldHead for IFM/EFM
    assert type(unet).__name__ == "UNet" and unet.data_shape == tuple(SHAPES[config.parent.name])
    parameters = sum(p.numel() for p in model.backbone.parameters())
    assert parameters == BACKBONE_PARAMETERS.get(f"{config.parent.name}/{config.stem}", parameters)
    grids = list(tmp_path.glob("runs/*/version_0/grids/latest.png"))
    assert len(grids) == 1 and grids[0].stat().st_size > 1000  # the end-of-fit grid, EMA weights
    x = torch.randn(2, *SHAPES[config.parent.name])
    y = torch.tensor([3, 7]) if model.num_classes else None
    assert torch.isfinite(model.sample(x, y=y, steps=2, method="euler").x).all()
    fid = [c for c in trainer.callbacks if type(c).__name__ == "InceptionMetrics"]
    assert len(fid) == (config.parent.name != "mnist")  # the RGB recipes measure FID (validation was skipped here)


def test_the_test_command_of_a_cifar10_recipe_measures_fid_and_writes_its_settings(
    tmp_path, monkeypatch, caplog, standin_inception
):
    """``python -m lightning_fm test -c configs/cifar10/otcfm.yaml --ckpt_path ...``: FID of ``test_samples``
    generated images (dopri5 as configured) against the training split, the settings written beside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["lightning_fm"])
    config = str(small_data_copy(REPO / "configs" / "cifar10" / "otcfm.yaml", tmp_path, standin_inception))
    main(
        [
            "fit",
            "-c",
            config,
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
        ]
    )
    checkpoint = next(tmp_path.glob("runs/cifar10_otcfm/version_0/checkpoints/last.ckpt"))
    with caplog.at_level(logging.INFO):
        cli = main(["test", "-c", config, f"--ckpt_path={checkpoint}", "--trainer.enable_progress_bar=false"])
    fid = next(c for c in cli.trainer.callbacks if type(c).__name__ == "InceptionMetrics")
    record = fid.last
    assert record["stage"] == "test" and record["n_samples"] == 3 and record["fid"] > 0
    assert record["sampler"]["options"]["method"] == "dopri5" and record["nfe_per_batch"] > 0
    assert record["weights"] == "checkpoint weights" and record["reference"]["n"] == 16
    assert "test/fid" in cli.trainer.callback_metrics
    written = list(tmp_path.glob("runs/cifar10_otcfm/version_*/fid/test_step_*.json"))
    assert len(written) == 1 and json.loads(written[0].read_text())["fid"] == pytest.approx(record["fid"])
    printed = next(line for line in caplog.messages if line.startswith("test/fid"))  # the number beside its settings
    for setting in (
        f"{record['fid']:.4g}",
        "3 samples (checkpoint weights)",
        "method=dopri5",
        "16 images of the train",
        "NOT the reference Inception weights",
        record["features"]["weights_sha256"][:12],
        str(written[0].resolve()),
    ):
        assert setting in printed
