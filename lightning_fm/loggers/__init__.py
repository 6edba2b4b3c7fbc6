"""Loggers that keep one directory per run, ``<save_dir>/<name>/<version>/`` (checkpoints, config, metrics, plots,
FID records), and continue it when the run is resumed: :class:`CSVLogger` and :class:`WandbLogger`. The CLI picks
the directory to continue (:mod:`lightning_fm.cli.run_dirs`)."""

from lightning_fm.loggers.csv import CSVLogger
from lightning_fm.loggers.wandb import WandbLogger

__all__ = ["CSVLogger", "WandbLogger"]
