"""The CLI's output filters: Lightning's advertising tips and the warnings that this framework's own use of
Lightning and torch triggers but that say nothing to its user. Installed by the CLI only (``python -m
lightning_fm``), so a Python program that imports the package keeps every warning but one: EMA's "loading a
checkpoint outside the 'fit' stage", which :mod:`lightning_fm.callbacks.ema` silences when imported (the EMA
weights are the checkpoint's own weights there).

* Lightning's "Tip: ... litlogger / litmodels" lines (``rank_zero_info``).
* ``isinstance(treespec, LeafSpec)`` is deprecated: Lightning's own ``_pytree`` helper under torch >= 2.10, called
  for every batch.
* ``torch.distributed._all_gather_base`` is deprecated: torch's ``all_gather`` autograd function, which
  ``LightningModule.all_gather`` (the coupling over the global batch, the loss check) goes through under DDP.
* ``Checkpoint directory ... exists and is not empty``: the CLI resumes a run in its own directory on purpose.
* ``The dirpath has changed from ...``: a resumed run's checkpoint directory named differently (e.g. relative vs
  absolute); only the best-k bookkeeping of a monitored ``ModelCheckpoint`` is not restored, which the recipes do
  not use.
"""
from __future__ import annotations

import logging
import warnings

#: messages (regular expressions matched at the start) of the warnings the CLI does not show
SILENCED_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"`torch\.distributed\._all_gather_base` is a private function",
    r"`torch\.distributed\.all_gather_into_tensor` is deprecated",
    r"Checkpoint directory .* exists and is not empty",
    r"The dirpath has changed from",
)
#: loggers through which Lightning prints its tips
TIP_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
               "lightning_utilities.core.rank_zero")


class DropTips(logging.Filter):
    """Drop Lightning's advertising lines (``💡 Tip: ...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless" not in str(record.msg)


def quiet() -> None:
    """Install the filters of the module docstring and EMA's (:mod:`lightning_fm.callbacks.ema`); idempotent."""
    from lightning_fm.callbacks.ema import OUTSIDE_FIT_WARNING

    for message in (*SILENCED_WARNINGS, OUTSIDE_FIT_WARNING):
        warnings.filterwarnings("ignore", message=message)
    for name in TIP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropTips) for f in logger.filters):
            logger.addFilter(DropTips())
