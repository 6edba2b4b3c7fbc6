"""A non-finite training loss stops every process of the run, within ``trainer.log_every_n_steps`` steps."""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from lightning_fm.utils.finite import NonFiniteTracker


def is_logging_step(trainer: Trainer) -> bool:
    """The steps the loggers write: ``(step + 1) % log_every_n_steps == 0``."""
    return (trainer.global_step + 1) % max(1, int(trainer.log_every_n_steps)) == 0


def finite_checkpoint_note(trainer: Trainer) -> str:
    """Which checkpoint holds the last finite state, from the checkpoint callbacks that know it
    (:class:`~lightning_fm.callbacks.checkpoints.CrashSafeModelCheckpoint`)."""
    notes = [c.finite_note() for c in trainer.checkpoint_callbacks if hasattr(c, "finite_note")]
    if notes:
        return "; ".join(notes)
    return (
        "no checkpoint is known to be finite (trainer.callbacks has no lightning_fm.callbacks.CrashSafeModelCheckpoint)"
    )


class DivergenceGuard(Callback):
    """Count the training loss's non-finite values on the device at every step (no host synchronisation,
    :class:`~lightning_fm.utils.finite.NonFiniteTracker`), and read the counts at the logging steps and the last
    step (every process reaches them together): a non-finite loss since the last check on ANY process raises
    ``FloatingPointError`` on EVERY process (one rank stopping alone would leave the others waiting in the next
    collective), before the backward pass. The message gives the steps, each process's count and the checkpoint
    that holds the last finite state. Every :class:`~lightning_fm.modules.base.FlowMatchingModule` adds it
    (``configure_callbacks``)."""

    def __init__(self) -> None:
        self.watch = NonFiniteTracker()

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: Tensor) -> None:
        self.watch.update(loss, trainer.global_step)  # on the device: no synchronisation
        if is_logging_step(trainer) or trainer.global_step + 1 == trainer.max_steps:
            self.stop_if_diverged(trainer, pl_module)

    def stop_if_diverged(self, trainer: Trainer, pl_module: LightningModule) -> None:
        window = self.watch.window
        counts = self.watch.pending(pl_module.device)
        self.watch.reset()
        world = trainer.world_size
        counts = (pl_module.all_gather(counts) if world > 1 else counts).reshape(-1).tolist()
        if not any(counts):
            return
        first, last = window if window is not None else (trainer.global_step, trainer.global_step)
        if world > 1:
            where = (
                f"in steps {first}..{last} (non-finite steps per process: "
                + ", ".join(f"rank {rank}: {count}" for rank, count in enumerate(counts))
                + ")"
            )
        else:
            where = f"at {counts[0]} of the {last - first + 1} steps {first}..{last}"
        raise FloatingPointError(
            f"training loss is not finite {where}; noticed at step {last} (the loss is checked every "
            f"trainer.log_every_n_steps={trainer.log_every_n_steps} steps); {finite_checkpoint_note(trainer)}"
        )
