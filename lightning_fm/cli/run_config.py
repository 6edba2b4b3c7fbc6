"""The CLI's run directories and schedule: where a command's run lands (``trainer.default_root_dir`` or the logger's
``save_dir``), which run directory it continues (:mod:`lightning_fm.cli.run_dirs`), the resolved config written
there (and uploaded to W&B), and a validation cadence that fits the run's length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from lightning_fm.callbacks.sample_plots import run_dir
from lightning_fm.cli.run_dirs import continuation
from lightning_fm.utils.spec import import_class


def continuing_kind(logger: Any) -> str | None:
    """``"csv"`` or ``"wandb"`` for a logger config of this framework's loggers (or their subclasses), which keep
    a run directory ``<save_dir>/<name>/<version>`` and continue it; None otherwise."""
    from lightning_fm.loggers import CSVLogger, WandbLogger

    if not (isinstance(logger, Namespace) and logger.get("class_path")):
        return None
    cls = import_class(logger.class_path)
    return "csv" if issubclass(cls, CSVLogger) else "wandb" if issubclass(cls, WandbLogger) else None


#: a run of ``max_steps`` steps validates at least this many times (see :func:`validation_interval`)
MIN_VALIDATIONS = 2


def place_runs(config: Namespace) -> None:
    """The parent directory of this framework's run directories: the logger's ``save_dir`` where given, else
    ``trainer.default_root_dir``, else ``runs`` (relative to the working directory)."""
    logger = config.trainer.get("logger")
    if continuing_kind(logger) is not None and logger.init_args.get("save_dir") is None:
        logger.init_args.save_dir = str(config.trainer.get("default_root_dir") or "runs")


def validation_interval(val_check_interval: Any, check_val_every_n_epoch: Any, max_steps: Any) -> Any:
    """The validation interval of a run: with step-based validation (``check_val_every_n_epoch: null`` and an integer
    ``val_check_interval``, as the configs set it), ``min(val_check_interval, max_steps // MIN_VALIDATIONS)`` (at
    least 1), so that a short run validates (and plots) at least :data:`MIN_VALIDATIONS` times, the last at or near
    its end; any other setting is returned unchanged."""
    step_based = (
        check_val_every_n_epoch is None
        and isinstance(val_check_interval, int)
        and not isinstance(val_check_interval, bool)
    )
    if not step_based or not isinstance(max_steps, int) or max_steps < 1:
        return val_check_interval
    return max(1, min(val_check_interval, max_steps // MIN_VALIDATIONS))


def check_schedule(config: Namespace, subcommand: str) -> None:
    """Values Lightning would take and fail on later: ``seed_everything`` in ``0 .. 2**32 - 1`` (or true/false),
    ``trainer.accumulate_grad_batches >= 1``, and for ``fit`` optimiser steps to take: ``trainer.max_steps >= 1``, or
    ``-1`` (train by epochs) with ``trainer.max_epochs`` not 0."""
    seed, trainer = config.get("seed_everything"), config.trainer
    if isinstance(seed, int) and not isinstance(seed, bool) and not 0 <= seed < 2**32:
        raise ValueError(f"seed_everything={seed} must lie in 0..{2**32 - 1} (true: a random seed, false: none)")
    accumulate = trainer.get("accumulate_grad_batches")
    if isinstance(accumulate, int) and accumulate < 1:
        raise ValueError(f"trainer.accumulate_grad_batches={accumulate} must be an integer >= 1")
    if subcommand != "fit":
        return
    steps, epochs = trainer.get("max_steps"), trainer.get("max_epochs")
    if not isinstance(steps, int) or steps >= 1 or (steps == -1 and epochs != 0):
        return
    given = f"trainer.max_steps={steps}" + (" with trainer.max_epochs=0" if steps == -1 else "")
    raise ValueError(
        f"{given} trains nothing: give the number of optimiser steps (>= 1), or -1 to train for "
        "trainer.max_epochs epochs"
    )


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
        found = sorted(
            Path(config.trainer.get("default_root_dir") or ".").glob("hpc_ckpt_*.ckpt"),
            key=lambda p: int(p.stem.rsplit("_", 1)[-1]),
        )
        if found and kind == "csv" and subcommand == "fit":
            args.keep_until_step = checkpoint_step(str(found[-1]))
        return
    if args.get("version") is not None:
        return
    found = continuation(
        str(args.get("save_dir") or "runs"), str(args.get("name") or "lightning_fm"), ckpt_path, subcommand
    )
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
