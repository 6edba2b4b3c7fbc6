"""The CLI's run directories and schedule: where a command's run lands (``trainer.default_root_dir`` or the logger's
``save_dir``), which run directory it continues (:mod:`lightning_fm.cli.run_dirs`), the resolved config written
there (and uploaded to W&B), and a validation cadence that fits the run's length."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
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
    ``trainer.default_root_dir``, else ``runs`` (relative to the working directory). A ``default_root_dir`` that is
    itself the run directory, ``<dir>/<name>/<version>`` of the logger's name and given version, places the run
    there (``<dir>``), not a level below it."""
    logger = config.trainer.get("logger")
    if continuing_kind(logger) is not None and logger.init_args.get("save_dir") is None:
        root = config.trainer.get("default_root_dir")
        args = logger.init_args
        version = args.get("version")
        if version is not None and not isinstance(version, str):
            version = f"version_{version}"
        if root and version and Path(root).parts[-2:] == (str(args.get("name") or "lightning_fm"), version):
            root = str(Path(root).parent.parent)
        args.save_dir = str(root or "runs")


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
    checkpoint. With a ``version`` given (``docker/slurm.sbatch``: ``slurm_<job id>``) ``fit`` logs into that
    version's directory whatever it resumes: ``last`` is that run's newest checkpoint (else a fresh start there),
    a checkpoint of that run continues it, any other starts it; a fresh start drops the CSV rows of an earlier
    attempt (a job killed before its first checkpoint and requeued). A ``fit`` whose run directory is known before
    the logger exists (a ``version`` given, or a run continued) gets it as ``trainer.default_root_dir`` where none is
    given, so Lightning's SLURM ``hpc_ckpt_<n>.ckpt`` files land in the run, where ``--ckpt_path last`` finds them.
    Only this framework's loggers, one logger."""
    logger = config.trainer.get("logger")
    kind = continuing_kind(logger)
    ckpt_path = config.get("ckpt_path")
    if kind is None:
        return
    args = logger.init_args
    version = args.get("version")
    if version is not None and not isinstance(version, str):
        version = f"version_{version}"  # Lightning's directory of an integer version
    save_dir, name = str(args.get("save_dir") or "runs"), str(args.get("name") or "lightning_fm")
    if subcommand == "fit" and version is not None:
        root_at_run(config, Path(save_dir, name, version))
    if ckpt_path == "hpc":  # a SLURM requeue: Lightning loads the highest hpc_ckpt_<N>.ckpt of default_root_dir
        found = sorted(
            Path(config.trainer.get("default_root_dir") or ".").glob("hpc_ckpt_*.ckpt"),
            key=lambda p: int(p.stem.rsplit("_", 1)[-1]),
        )
        if found and kind == "csv" and subcommand == "fit":
            args.keep_until_step = checkpoint_step(str(found[-1]))
        return
    if version is not None and subcommand != "fit":
        return
    if not ckpt_path and version is None:
        return
    found = continuation(save_dir, name, ckpt_path, subcommand, version if subcommand == "fit" else None)
    config.ckpt_path = found.ckpt_path
    if not found.resumed:
        if version is not None and not found.ckpt_path and kind == "csv":
            args.keep_until_step = 0  # a fresh start in a given version: an earlier attempt's rows are dropped
        return
    args.save_dir, args.name, args.version = found.save_dir, found.name, found.version
    if subcommand == "fit":
        root_at_run(config, Path(found.save_dir, found.name, found.version))
    if kind == "csv":
        if subcommand == "fit":
            args.keep_until_step = checkpoint_step(found.ckpt_path)
        else:
            args.metrics_file = f"metrics_{subcommand}.csv"


def root_at_run(config: Namespace, run: Path) -> None:
    """``trainer.default_root_dir``, where not given: the run directory (Lightning's SLURM checkpoints go there)."""
    if config.trainer.get("default_root_dir") is None:
        config.trainer.default_root_dir = str(run)


def run_loggers(config: Namespace) -> list[Namespace]:
    """The configs of this framework's loggers (:func:`continuing_kind`) in ``trainer.logger``, one or a list."""
    logger = config.trainer.get("logger")
    return [item for item in (logger if isinstance(logger, list) else [logger]) if continuing_kind(item) is not None]


#: what the loggers of one run share: their run directory ``<save_dir>/<name>/<version>``
RUN_DIRECTORY_KEYS = ("save_dir", "name", "version")


@contextmanager
def share_run_directory(config: Namespace) -> Iterator[None]:
    """Several of this framework's loggers in a list (``[CSVLogger, WandbLogger]``: ``configs/logger/wandb.yaml``)
    keep one run directory. Inside, the first (a CSV logger if there is one) stands alone as ``trainer.logger``, with
    the ``save_dir``, ``name`` and ``version`` set on the last logger that sets them (the command line's
    ``--trainer.logger.init_args.name=X`` sets the last logger's), for :func:`place_runs` and :func:`continue_run`
    to decide the run directory; on leaving, the list is back and every logger has that directory."""
    logger, found = config.trainer.get("logger"), run_loggers(config)
    if not isinstance(logger, list) or len(found) < 2:
        yield
        return
    primary = next((item for item in found if continuing_kind(item) == "csv"), found[0])
    for key in RUN_DIRECTORY_KEYS:
        given = [item.init_args.get(key) for item in found if item.init_args.get(key) is not None]
        if given:
            primary.init_args[key] = given[-1]
    config.trainer.logger = primary
    try:
        yield
    finally:
        config.trainer.logger = logger
        for item in found:
            for key in RUN_DIRECTORY_KEYS:
                item.init_args[key] = primary.init_args.get(key)


def resume_wandb_run(config: Namespace, record: Any) -> None:
    """Give a W&B logger that sets no ``id`` the W&B run a checkpoint records (``record``:
    ``checkpoint["lightning_fm"]["wandb"]``, its ``id``, ``project`` and ``group``): a command from a checkpoint file,
    also a copy kept outside its run directory, continues that W&B run (``id: new`` starts another)."""
    if not isinstance(record, dict) or not record.get("id"):
        return
    for item in run_loggers(config):
        if continuing_kind(item) != "wandb" or item.init_args.get("id") is not None:
            continue
        item.init_args.id = str(record["id"])
        for key in ("project", "group"):
            if record.get(key) and item.init_args.get(key) is None:
                item.init_args[key] = str(record[key])


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
                run = logger.experiment
                run.config.update({"config": resolved}, allow_val_change=True)
                # as <version>/config.yaml among the run's files (W&B keeps its own config.yaml there): copied into
                # the W&B run's files and saved from there, not linked from the run directory by wandb.save (which
                # warns that later changes of a linked file need another save)
                uploaded = Path(run.dir) / path.parent.name / path.name
                uploaded.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, uploaded)
                run.save(str(uploaded), base_path=run.dir, policy="now")
