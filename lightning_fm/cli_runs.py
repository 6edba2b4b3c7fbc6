"""The CLI's run directories: which directory a command logs into (:mod:`lightning_fm.runs`), and the resolved
config written there (and uploaded to W&B)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from lightning_fm.callbacks.plots import run_dir
from lightning_fm.runs import continuation
from lightning_fm.utils.spec import import_class


def continuing_kind(logger: Any) -> str | None:
    """``"csv"`` or ``"wandb"`` for a logger config of this framework's loggers (or their subclasses), which keep
    a run directory ``<save_dir>/<name>/<version>`` and continue it; None otherwise."""
    from lightning_fm.loggers import CSVLogger, WandbLogger

    if not (isinstance(logger, Namespace) and logger.get("class_path")):
        return None
    cls = import_class(logger.class_path)
    return "csv" if issubclass(cls, CSVLogger) else "wandb" if issubclass(cls, WandbLogger) else None


def checkpoint_step(path: str) -> int:
    """The ``global_step`` a checkpoint was saved at (read without loading its tensors into memory)."""
    return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("global_step", 0))


def continue_run(config: Namespace, subcommand: str) -> None:
    """Point the logger at the run directory the command continues and resolve ``ckpt_path="last"`` to its file:
    ``fit --ckpt_path last`` resumes the newest run of the logger's ``<save_dir>/<name>`` in its own directory (the
    CSV rows it logged after the checkpoint are dropped, the W&B run id is reused); ``--ckpt_path`` of a file in
    ``<run>/checkpoints/`` logs into ``<run>`` (``test``, ``validate``, ``predict`` into ``metrics_<command>.csv``);
    ``--ckpt_path hpc`` (a SLURM requeue into the job's fixed ``version``) drops the CSV rows logged after the hpc
    checkpoint. Only this framework's loggers, one logger, and (but for ``hpc``) a ``version`` not set by the
    user."""
    logger = config.trainer.get("logger")
    kind = continuing_kind(logger)
    ckpt_path = config.get("ckpt_path")
    if kind is None or not ckpt_path:
        return
    args = logger.init_args
    if ckpt_path == "hpc":  # a SLURM requeue: Lightning loads the highest hpc_ckpt_<N>.ckpt of default_root_dir
        found = sorted(Path(config.trainer.get("default_root_dir") or ".").glob("hpc_ckpt_*.ckpt"),
                       key=lambda p: int(p.stem.rsplit("_", 1)[-1]))
        if found and kind == "csv" and subcommand == "fit":
            args.keep_until_step = checkpoint_step(str(found[-1]))
        return
    if args.get("version") is not None:
        return
    found = continuation(str(args.get("save_dir") or "runs"), str(args.get("name") or "lightning_fm"), ckpt_path,
                         subcommand)
    config.ckpt_path = found.ckpt_path
    if not found.resumed:
        return
    args.save_dir, args.name, args.version = found.save_dir, found.name, found.version
    if kind == "csv":
        if subcommand == "fit":
            args.keep_until_step = checkpoint_step(found.ckpt_path)
        else:
            args.metrics_file = f"metrics_{subcommand}.csv"


class RunConfigCallback(SaveConfigCallback):
    """Write the resolved config into the run directory, ``config.yaml`` for ``fit`` (``config_<command>.yaml``
    for the others, beside it), and upload it to W&B: the file, and the whole config as the W&B run's config (every
    component's class and arguments, not only the scalar hyperparameters)."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        if trainer.is_global_zero:
            directory = run_dir(trainer)
            command = trainer.state.fn.value if trainer.state.fn is not None else stage
            path = directory / ("config.yaml" if command == "fit" else f"config_{command}.yaml")
            directory.mkdir(parents=True, exist_ok=True)
            self.parser.save(self.config, str(path), skip_none=False, overwrite=True, multifile=self.multifile)
            self.upload(trainer, path)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def upload(self, trainer: Trainer, path: Path) -> None:
        from lightning_fm.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                resolved = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
                logger.experiment.config.update({"config": resolved}, allow_val_change=True)
                # as <version>/config.yaml among the run's files: W&B keeps its own config.yaml there
                logger.experiment.save(str(path), base_path=str(path.parent.parent), policy="now")
