"""Which copy of a module holds the EMA weights, when (Lightning's ``EMAWeightAveraging``, any ``WeightAveraging``).

The callback keeps the average in a copy of the module (:func:`lightning_fm.compat.averaged_model`) and swaps it
into the live module in its ``on_validation_epoch_start`` and back in ``on_validation_epoch_end``; it builds the copy
in ``setup("fit")`` only, so outside ``fit`` (``validate``/``test``/``predict`` of a checkpoint) there is no copy and
the live module holds the checkpoint's weights, the EMA ones where it was trained with the callback (Lightning saves
them as the state dict). Callback hooks run in the order of ``trainer.callbacks``.

So Lightning's warning that the averaging state "cannot be restored" outside ``fit``, printed on every
``test``/``validate``/``predict`` of a checkpoint, says nothing here (the EMA weights are loaded as the state). This
module only names it (:data:`OUTSIDE_FIT_WARNING`; importing a library module changes no warning filter): the
command line filters it.
"""

from __future__ import annotations

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import WeightAveraging

from lightning_fm.compat import averaged_model

#: the start of Lightning's warning (module docstring), a ``warnings.filterwarnings`` message pattern
OUTSIDE_FIT_WARNING = r"You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage"


def averaging_callback(trainer: Trainer) -> WeightAveraging | None:
    return next((c for c in trainer.callbacks if isinstance(c, WeightAveraging)), None)


def averaged_module(trainer: Trainer) -> LightningModule | None:
    """The EMA copy of the module, or None (no averaging callback, or outside ``fit``). Between training steps it
    holds the averaged weights."""
    callback = averaging_callback(trainer)
    model = None if callback is None else averaged_model(callback)
    return None if model is None else model.module


def evaluation_weights(trainer: Trainer, pl_module: LightningModule, caller: Callback) -> tuple[LightningModule, str]:
    """The module holding the EMA weights inside a validation or test epoch, as seen from a hook of ``caller``, and
    a description: the live module once the averaging callback has swapped them in (it comes before ``caller``),
    else its copy; without a copy, the live module (a checkpoint's own weights)."""
    callback, copy = averaging_callback(trainer), averaged_module(trainer)
    if copy is None:
        return pl_module, (
            "checkpoint weights"
            if callback is not None or trainer.state.fn != "fit"
            else "live weights (no EMA callback)"
        )
    swapped = trainer.callbacks.index(callback) < trainer.callbacks.index(caller)
    return (pl_module if swapped else copy), "EMA weights"
