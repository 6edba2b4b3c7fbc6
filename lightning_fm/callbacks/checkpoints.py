"""Checkpoints that survive: ``last.ckpt`` every N optimiser steps (and every M minutes of training), at the end of
training, on SIGTERM, on Ctrl-C and
on an exception between training steps; written atomically; never with non-finite weights.

* By time too (``every_n_minutes``): a run slowed down (a busy machine, a slow file system, long validations) still
  has a checkpoint at most that many minutes old, besides the step interval. Lightning's ``ModelCheckpoint`` takes
  one trigger only (``every_n_train_steps``, ``every_n_epochs`` or ``train_time_interval``), so the time trigger is
  this callback's: after each optimiser step it reads ``time.monotonic()`` (under DDP rank 0 decides and broadcasts,
  as Lightning's ``train_time_interval`` does) and writes ``last.ckpt`` through the same save path.

* Atomic writes (:class:`AtomicCheckpointIO`): a checkpoint goes to a temporary file beside its target
  (``.<name>.<host>.<pid>.tmp``), is flushed to disk (``fsync``) and renamed over the target (``os.replace``,
  atomic on a POSIX file system): a kill at any moment leaves the previous file or the new one, never a truncated
  one.
  (Lightning's default writer stages the file in the system temporary directory and moves it: a rename only where
  that directory is on the same file system as the run, else a copy onto the target.) The callback installs it as
  the strategy's checkpoint writer when that is Lightning's default, so every checkpoint of the run (other
  ``ModelCheckpoint`` callbacks, SLURM's ``hpc_ckpt``) is written this way.
* Finite only: before writing, the weights (EMA and raw), buffers and optimiser states are tested (one host
  synchronisation per checkpoint, decided over all processes); a non-finite state is not written and the run stops
  with :class:`NonFiniteStateError`, which names the tensor and the checkpoint that holds the last finite state.
  So ``last.ckpt`` is always the last finite state that was checkpointed.
* Stops between steps: SIGTERM (Lightning's handler: the run stops after the current step, on every process) and the
  first Ctrl-C (handled the same way, through Lightning's stop flag) write ``last.ckpt`` at a step boundary, which
  ``--ckpt_path last`` resumes exactly; the process then exits with status 143 (SIGTERM) or 130 (Ctrl-C). A second
  Ctrl-C interrupts at once (Lightning's ``KeyboardInterrupt``), treated as an exception (below). Under DDP a
  terminal's Ctrl-C reaches every process, as Lightning's SIGTERM handling needs.
* Exceptions: one raised between training steps (data loading, validation, a callback) writes ``last.ckpt`` at
  the current step; one raised inside a training step (forward, backward, optimiser update: the state may be torn)
  and, under DDP, any exception (the other processes may never reach the save) write nothing new: the last
  periodic checkpoint, at most ``every_n_train_steps`` steps old, is kept.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any
from weakref import proxy

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_fm.callbacks.ema import averaging_callback
from lightning_fm.compat import request_stop_after_this_step
from lightning_fm.utils.finite import first_nonfinite

#: the default checkpoint interval in optimiser steps: seconds of a toy run on a CPU; for an image recipe on a GPU,
#: long enough that writing a checkpoint (four copies of the parameters: raw, EMA, Adam's two moments) is a small
#: part of it
DEFAULT_EVERY_N_TRAIN_STEPS = 1000
#: the parts of a checkpoint that must be finite: the weights and buffers (EMA ones under ``state_dict``), the raw
#: weights beside the EMA ones, and the optimiser states
FINITE_KEYS = ("state_dict", "current_model_state", "optimizer_states")
EXIT_STATUS = {signal.SIGTERM: 143, signal.SIGINT: 130}


class NonFiniteStateError(FloatingPointError):
    """The state to checkpoint has a NaN or infinite entry; it was not written. ``where``: the first such tensor."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(message)
        self.where = where


def temporary_path(path: Path) -> Path:
    """Where :class:`AtomicCheckpointIO` writes ``path`` before renaming it: beside it, hidden, per process
    (``.<name>.<host>.<pid>.tmp``; not a ``*.ckpt`` file, so no checkpoint search ever finds it)."""
    return path.with_name(f".{path.name}.{_host()}.{os.getpid()}.tmp")


def _host() -> str:
    return socket.gethostname().replace(".", "_")


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # a platform without directory handles: the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` into ``.<name>.<host>.<pid>.tmp`` beside the target, ``fsync``, ``os.replace`` onto it,
    ``fsync`` of the directory. Remote paths (``scheme://``) go through Lightning's writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = temporary_path(path)
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_directory(path.parent)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by another user
        return True
    return True


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete the temporary files of writers that died during a save (a SIGKILL) in ``directory``: those of
    another host (a requeued job), or of a process of this host that no longer runs; returns them. A training run
    calls it on its own checkpoint directory before it writes there."""
    host, stale = _host(), []
    for path in Path(directory).glob(".*.tmp"):
        parts = path.name[: -len(".tmp")].rsplit(".", 2)
        if len(parts) != 3 or not parts[2].isdigit() or not path.is_file():
            continue  # not one of ours
        if parts[1] != host or (int(parts[2]) != os.getpid() and not _alive(int(parts[2]))):
            path.unlink(missing_ok=True)
            stale.append(path)
    return stale


class CrashSafeModelCheckpoint(ModelCheckpoint):
    """``last.ckpt`` in the run's ``checkpoints/`` directory every ``every_n_train_steps`` optimiser steps and every
    ``every_n_minutes`` of training, at the end of training, on SIGTERM / Ctrl-C and on an exception between steps;
    atomic and finite (module docstring).

    Args:
        every_n_train_steps: the interval in optimiser steps (at most this many steps are lost to a SIGKILL).
        every_n_minutes: also write ``last.ckpt`` after the first step that ends this many minutes (wall clock,
            ``time.monotonic``) after the last checkpoint or the start of training; None: by steps only.
        dirpath: the directory (default: the logger's ``<run>/checkpoints``).
        save_on_signal: turn the first Ctrl-C into a stop after the current step with a checkpoint (SIGTERM is
            Lightning's and always handled).

    It keeps no other files: add a ``lightning.pytorch.callbacks.ModelCheckpoint(every_n_train_steps=...,
    save_top_k=-1)`` beside it for a history of snapshots (written atomically too).

    ``finite_checkpoint`` is ``(path, step)`` of the last checkpoint this callback wrote (finite by construction), or
    None; :meth:`finite_note` says it in words for error messages.

    It writes through Lightning's public ``trainer.save_checkpoint`` (from its own hooks: the periodic, final,
    signal and exception saves; ``ModelCheckpoint``'s own saving hooks are switched off) and tests the state in
    ``on_save_checkpoint``, which Lightning calls with the checkpoint being built, before writing it, on every
    process; checkpoint callbacks come last in ``trainer.callbacks``, so the EMA callback has added its entries by
    then. Saves made by others (``trainer.save_checkpoint``, other checkpoint callbacks) are not tested.
    """

    def __init__(
        self,
        every_n_train_steps: int = DEFAULT_EVERY_N_TRAIN_STEPS,
        dirpath: str | None = None,
        save_on_signal: bool = True,
        every_n_minutes: float | None = None,
    ) -> None:
        if (
            isinstance(every_n_train_steps, bool)
            or int(every_n_train_steps) != every_n_train_steps
            or every_n_train_steps < 1
        ):
            raise ValueError(
                f"CrashSafeModelCheckpoint.every_n_train_steps must be an integer >= 1, got {every_n_train_steps!r}"
            )
        if every_n_minutes is not None and (
            isinstance(every_n_minutes, bool) or not isinstance(every_n_minutes, (int, float)) or every_n_minutes <= 0
        ):
            raise ValueError(f"CrashSafeModelCheckpoint.every_n_minutes must be > 0 or None, got {every_n_minutes!r}")
        # every_n_train_steps goes to ModelCheckpoint too: it is part of the callback's state key in checkpoints
        super().__init__(dirpath=dirpath, every_n_train_steps=int(every_n_train_steps), save_last=True, save_top_k=0)
        self.every_n_train_steps = int(every_n_train_steps)
        self.save_on_signal = bool(save_on_signal)
        self.every_n_minutes = None if every_n_minutes is None else float(every_n_minutes)
        self._saved_time: float | None = None  # time.monotonic() of the last checkpoint (or of the start of training)
        self.finite_checkpoint: tuple[str, int] | None = None
        self._saved_step = 0  # the step of the last checkpoint written (none is needed before the first step)
        self._resumed_from: tuple[str, int] | None = None
        self._stop_signal: int | None = None
        self._previous_sigint: Any = None
        self._own_save: dict[str, bool] | None = None  # while this callback saves: {"swapped": ..., "tested": ...}

    # -- setup: the atomic writer, stale temporaries, the Ctrl-C handler ------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        local = self.dirpath and "://" not in str(self.dirpath) and Path(self.dirpath).is_dir()
        if stage == "fit" and trainer.is_global_zero and local:  # evaluating beside a running fit deletes nothing
            remove_stale_temporaries(Path(self.dirpath))

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        if trainer.ckpt_path and Path(str(trainer.ckpt_path)).is_file():
            self._resumed_from = (str(trainer.ckpt_path), int(trainer.global_step))
        self._stop_signal = None
        self._saved_time = time.monotonic()
        if self.save_on_signal and threading.current_thread() is threading.main_thread():
            self._previous_sigint = signal.getsignal(signal.SIGINT)

            def stop_after_this_step(signum: int, frame: Any) -> None:
                self._stop_signal = signal.SIGINT
                request_stop_after_this_step(trainer)  # the stop of SIGTERM (no public API sets it)
                self._restore_sigint()  # a second Ctrl-C interrupts at once
                if trainer.is_global_zero:
                    sys.stderr.write(
                        "\nCtrl-C: stopping after this step and saving last.ckpt (Ctrl-C again to stop at once)\n"
                    )

            signal.signal(signal.SIGINT, stop_after_this_step)

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, self._previous_sigint)
        self._previous_sigint = None

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._restore_sigint()
        super().teardown(trainer, pl_module, stage)

    # -- writing -----------------------------------------------------------------------------------------------
    def last_checkpoint_path(self, trainer: Trainer) -> str:
        """Where :meth:`write_last` writes, named as Lightning's ``ModelCheckpoint`` names its last checkpoint:
        ``<dirpath>/last.ckpt``, or ``last-v<n>.ckpt`` where a ``last.ckpt`` is there that is not this callback's
        ``last_model_path`` (which a resume restores). All processes call it (the file test is synchronised)."""
        metrics = {
            **trainer.callback_metrics,
            "epoch": torch.tensor(trainer.current_epoch),
            "step": torch.tensor(trainer.global_step),
        }
        path, version = self.format_checkpoint_name(dict(metrics), self.CHECKPOINT_NAME_LAST), self.STARTING_VERSION
        while self.file_exists(path, trainer) and path != self.last_model_path:
            path = self.format_checkpoint_name(dict(metrics), self.CHECKPOINT_NAME_LAST, ver=version)
            version += 1
        return path

    def write_last(self, trainer: Trainer, ema_swapped_in: bool = False) -> None:
        """Write ``last.ckpt`` now (all processes call it) through ``trainer.save_checkpoint``; raises
        :class:`NonFiniteStateError` (on every process, from :meth:`on_save_checkpoint`) instead of writing a
        non-finite state. ``ema_swapped_in``: the EMA callback has swapped its average into the module (inside a
        validation of ``fit``), so the checkpoint's EMA and raw entries are exchanged back."""
        path = self.last_checkpoint_path(trainer)
        previous, self.last_model_path = self.last_model_path, path  # before the save: it is part of the state
        self._own_save = {"swapped": ema_swapped_in, "tested": False}
        try:
            trainer.save_checkpoint(path, weights_only=False)
            tested = self._own_save["tested"]
        finally:
            self._own_save = None
        if not tested:
            raise RuntimeError(
                f"{path} was written without the finiteness test: Lightning did not call "
                "CrashSafeModelCheckpoint.on_save_checkpoint from trainer.save_checkpoint"
            )
        self._saved_step = trainer.global_step
        self._saved_time = time.monotonic()
        self.finite_checkpoint = (path, int(trainer.global_step))
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))
        if previous and self._replaced_file(trainer, previous, path):
            trainer.strategy.remove_checkpoint(previous)

    def _replaced_file(self, trainer: Trainer, previous: str, current: str) -> bool:
        """Whether the last checkpoint written before, ``previous``, is to be deleted now that ``current`` holds the
        last state (as ``ModelCheckpoint`` decides): a different file of this callback's directory, not the one the
        run resumed from."""
        if previous == current:
            return False
        if "://" in str(previous):
            return True
        previous_path = Path(previous).absolute()
        if trainer.ckpt_path is not None and previous_path == Path(trainer.ckpt_path).absolute():
            return False
        return Path(self.dirpath).absolute() in previous_path.parents

    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """The finiteness test of this callback's own saves, between building the checkpoint and writing it;
        raises :class:`NonFiniteStateError` on every process (the decision is synchronised) so nothing is written."""
        if self._own_save is None:
            return
        if self._own_save["swapped"] and "current_model_state" in checkpoint:
            # WeightAveraging.on_save_checkpoint put the live module's state (the EMA weights while they are swapped
            # in) under "current_model_state" and its copy's (the raw weights) under "state_dict": exchanged back,
            # the checkpoint is the one written outside validation
            checkpoint["state_dict"], checkpoint["current_model_state"] = (
                checkpoint["current_model_state"],
                checkpoint["state_dict"],
            )
        bad = first_nonfinite({key: checkpoint[key] for key in FINITE_KEYS if key in checkpoint})
        if trainer.strategy.reduce_boolean_decision(bad is not None, all=False):
            where = f"first: {bad}" if bad else "on another process"
            raise NonFiniteStateError(
                f"the model or optimiser state is not finite at step {trainer.global_step} "
                f"({where}): not checkpointed; {self.finite_note()}",
                where,
            )
        self._own_save["tested"] = True

    def write_last_as_trained(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """:meth:`write_last` with the raw weights as the raw ones: inside a validation of ``fit`` the EMA callback
        has swapped its average into the module."""
        self.write_last(trainer, ema_swapped_in=trainer.validating and averaging_callback(trainer) is not None)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        """Every ``every_n_train_steps`` steps, every ``every_n_minutes``, and at the last step (``max_steps``): the
        final state is written here, before the EMA callback's ``on_train_end`` copies its average over the raw
        weights."""
        step = trainer.global_step
        if step % self.every_n_train_steps == 0 or 0 < trainer.max_steps <= step or self._time_is_up(trainer):
            self._write_last_if_unsaved(trainer)

    def _time_is_up(self, trainer: Trainer) -> bool:
        """Whether ``every_n_minutes`` have passed since the last checkpoint (rank 0's clock decides for all)."""
        if self.every_n_minutes is None or self._saved_time is None:
            return False
        due = time.monotonic() - self._saved_time >= 60.0 * self.every_n_minutes
        return bool(trainer.strategy.broadcast(due)) if trainer.world_size > 1 else due

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Nothing (``ModelCheckpoint`` may save here; this callback writes at step boundaries only)."""

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Nothing (``ModelCheckpoint`` may save here; this callback writes at step boundaries only)."""

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """The final state of a run that ends otherwise (``max_epochs``), whatever the interval; with an EMA callback
        its average has by now replaced the raw weights, which are then not kept."""
        self._restore_sigint()
        self._write_last_if_unsaved(trainer)

    def _write_last_if_unsaved(self, trainer: Trainer) -> None:
        if not self._skips_saving(trainer):
            self.write_last(trainer)

    def _skips_saving(self, trainer: Trainer) -> bool:
        """No checkpoint under ``fast_dev_run``, outside ``fit``, in the sanity check, or twice at one step."""
        return (
            bool(trainer.fast_dev_run)
            or trainer.state.fn != TrainerFn.FITTING
            or trainer.sanity_checking
            or self._saved_step == trainer.global_step
        )

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._restore_sigint()
        stop = isinstance(exception, SIGTERMException)
        if stop:
            signum = self._stop_signal or signal.SIGTERM
            exception.code = EXIT_STATUS.get(signum, 1)
            what = "Ctrl-C" if signum == signal.SIGINT else "SIGTERM"
        else:
            what = type(exception).__name__
        if (
            isinstance(exception, FloatingPointError)
            or trainer.sanity_checking
            or trainer.fast_dev_run
            or trainer.state.fn != TrainerFn.FITTING
        ):
            return  # a divergence says where the finite state is itself; nothing to keep outside fit
        reason = None
        if not stop and trainer.world_size > 1:
            reason = "an exception under DDP (other processes may never reach a save)"
        elif not stop and self._inside_training_step(trainer):
            reason = f"raised inside training step {trainer.global_step} (the state may be torn)"
        if reason is None and self._saved_step != trainer.global_step:
            try:
                self.write_last_as_trained(trainer, pl_module)
            except NonFiniteStateError as err:
                reason = f"the state is not finite, {err.where}"
        if trainer.is_global_zero:
            if reason is None:
                sys.stderr.write(f"{what} at step {trainer.global_step}: {self.finite_note()}\n")
            else:
                sys.stderr.write(
                    f"{what} at step {trainer.global_step}: no new checkpoint ({reason}); {self.finite_note()}\n"
                )

    @staticmethod
    def _inside_training_step(trainer: Trainer) -> bool:
        """Whether a batch has started its training step and not finished its optimiser update."""
        progress = trainer.fit_loop.epoch_loop.batch_progress.total
        return progress.started != progress.processed

    # -- words -------------------------------------------------------------------------------------------------
    def finite_note(self) -> str:
        """Which checkpoint holds the last finite state, and how to resume from it (for messages)."""
        if self.finite_checkpoint is not None:
            path, step = self.finite_checkpoint
            return f"the last finite state is {path} (step {step}), resumable with --ckpt_path {path}"
        if self._resumed_from is not None:
            path, step = self._resumed_from
            return f"no checkpoint written since this run resumed from {path} (step {step})"
        return (
            f"no checkpoint has been written yet (one every {self.every_n_train_steps} steps"
            + (f" or {self.every_n_minutes:g} minutes" if self.every_n_minutes is not None else "")
            + ", CrashSafeModelCheckpoint.every_n_train_steps"
            + (", every_n_minutes)" if self.every_n_minutes is not None else ")")
        )
