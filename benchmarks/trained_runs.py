"""Shared by the benchmarks that read trained runs: restore a run's model and the digits evaluation."""

from __future__ import annotations

from pathlib import Path

import yaml


def load_run(run: Path):
    """The model of a run directory (``config.yaml`` and ``checkpoints/last.ckpt``, EMA weights), in eval mode,
    and the run's resolved config."""
    from lightning_fm.utils.spec import import_class

    config = yaml.safe_load((Path(run) / "config.yaml").read_text())
    module = import_class(config["model"]["class_path"]).load_from_checkpoint(
        Path(run) / "checkpoints" / "last.ckpt", map_location="cpu"
    )
    return module.eval(), config


def run_name(config: dict) -> str:
    """The run's name: its logger's ``name`` (``digits_cfm``, ...)."""
    return Path(config["trainer"]["logger"]["init_args"]["name"]).name


def digits_evaluation():
    """``(validation set, classifier)``: the digits' fixed validation set (``x0`` noise, ``x1`` held-out digits,
    ``x1_ref``, ``y1``) and the cached digits classifier of :class:`~lightning_fm.callbacks.ClassifierMetrics`."""
    from lightning_fm.data import DigitsDataModule
    from lightning_fm.metrics import load_or_train_classifier

    data = DigitsDataModule()
    images, labels = data.splits["train"]
    return data.eval_set("val"), load_or_train_classifier(images, labels)
