"""The package's only contact with what Lightning and torch do not offer publicly.

Everything else in ``lightning_fm`` uses public API only (``tests/test_compat.py`` audits every other module for
private attribute accesses and for overrides of private methods of other libraries). Each function here reaches one
private attribute, says why no public API does the same, and has a test in ``tests/test_compat.py`` that checks the
installed version still has it and still behaves as relied upon, so an upgrade that changes it fails there, naming
the helper, instead of somewhere inside a run.

Besides them, helpers that other modules need near such places and that the public API does serve
(:func:`attached_trainer`) live here too, so that a module needs one import for its Lightning glue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lightning.pytorch import LightningModule, Trainer
from torch import nn

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import WeightAveraging
    from torch.optim.swa_utils import AveragedModel


def request_stop_after_this_step(trainer: Trainer) -> None:
    """Make ``trainer`` stop at the end of the current training step (or validation batch) the way it does on
    SIGTERM: Lightning raises ``SIGTERMException`` there, on every process, and its ``on_exception`` hooks run.

    Private: ``trainer._signal_connector.received_sigterm``. ``Trainer.received_sigterm`` reads that flag but has no
    setter, and the public ``trainer.should_stop`` is a different stop (at the end of the epoch loop's step checks,
    subject to ``min_steps``, ending ``fit`` normally: no exception, ``on_train_end`` runs, exit status 0), so a
    Ctrl-C made to behave like SIGTERM (:class:`~lightning_fm.callbacks.checkpoints.CrashSafeModelCheckpoint`) has to
    set the flag itself."""
    trainer._signal_connector.received_sigterm = True


def averaged_model(callback: WeightAveraging) -> AveragedModel | None:
    """The ``AveragedModel`` that a ``WeightAveraging`` callback (Lightning's ``EMAWeightAveraging``) keeps beside the
    live module, or None outside ``fit`` (it is built in ``setup("fit")``). Its ``.module`` holds the averaged weights
    between training steps and the live ones during a validation of ``fit`` (the callback swaps them).

    Private: ``WeightAveraging._average_model``; the callback has no accessor for the averaged copy (it only writes
    it into checkpoints, through ``on_save_checkpoint``), and sampling from the EMA weights between steps needs it."""
    return callback._average_model


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module.compile()`` (``nn.Module.compile``, in place) has been called on ``module``.

    Private: ``nn.Module._compiled_call_impl``, set by ``nn.Module.compile`` to the compiled ``_call_impl``; torch
    keeps no public record of an in-place compile (``torch.compile(module)`` instead returns a wrapper module, but an
    in-place compile keeps the module's class, state-dict keys and hooks)."""
    return module._compiled_call_impl is not None


def attached_trainer(module: LightningModule) -> Trainer | None:
    """The ``Trainer`` that ``module`` is attached to, or None (a module used on its own, or under Fabric).

    Public API: ``LightningModule.trainer`` raises ``RuntimeError`` when no trainer is attached."""
    try:
        trainer = module.trainer
    except RuntimeError:
        return None
    return trainer if isinstance(trainer, Trainer) else None


def drop_unset_wandb_init_argument(logger: Any, name: str) -> None:
    """Remove the keyword ``name`` from what Lightning's ``WandbLogger`` will pass to ``wandb.init`` where it is None.

    Private: ``WandbLogger._wandb_init``, the keyword dict the logger builds in its constructor and passes to
    ``wandb.init`` when the run starts. Lightning always puts ``anonymous`` in it (None when not given), and W&B warns
    on every run that the setting has no effect; no public argument leaves it out."""
    init = logger._wandb_init
    if name in init and init[name] is None:
        del init[name]
