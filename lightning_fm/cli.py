"""``python -m lightning_fm {fit,validate,test,predict} [-c config.yaml] [--model.x ...]``: a LightningCLI.

Model and data are chosen by class (``--model CFMModule``, ``--data DigitsDataModule``, or ``class_path`` in YAML).
With no arguments, ``fit`` runs the default embedded job: OT-CFM on the 2-D toy 8gaussians -> moons (the same settings
as ``configs/toy/otcfm.yaml``), leaving a checkpoint with EMA weights, the resolved config, metrics and sample plots in
``runs/<name>/version_<n>/``.
"""
from __future__ import annotations

import sys

from lightning.pytorch import LightningDataModule
from lightning.pytorch.callbacks import EMAWeightAveraging, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI, lazy_instance
from lightning.pytorch.loggers import CSVLogger

import lightning_fm.data  # noqa: F401  (registers the DataModules for class-name lookup)
from lightning_fm.callbacks import SamplePlotCallback, SampleWriter
from lightning_fm.modules import FlowMatchingModule

TRAINER_DEFAULTS = {
    "max_steps": 5000,
    "log_every_n_steps": 50,
    "gradient_clip_val": 1.0,
    "logger": lazy_instance(CSVLogger, save_dir="runs", name="default"),
    "callbacks": [
        lazy_instance(EMAWeightAveraging, decay=0.999),
        lazy_instance(ModelCheckpoint, save_last=True),
        lazy_instance(LearningRateMonitor, logging_interval="step"),
        lazy_instance(SamplePlotCallback),
        lazy_instance(SampleWriter),
    ],
}


class FlowMatchingCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults(
            {
                "model": {"class_path": "lightning_fm.modules.CFMModule"},
                "data": {"class_path": "lightning_fm.data.ToyDataModule"},
            }
        )


def main(args: list[str] | None = None) -> None:
    args = sys.argv[1:] if args is None else args
    FlowMatchingCLI(
        FlowMatchingModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=args or ["fit"],
    )
