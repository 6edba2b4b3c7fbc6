"""What Lightning loggers and checkpoints record of a module's or a DataModule's hyperparameters."""

from __future__ import annotations

import copy
from typing import Any

#: bookkeeping keys that LightningCLI adds to the hyperparameters of what it instantiates
CLI_KEYS = ("_instantiator", "_class_path")


class StoredHyperparameters:
    """Mixin for a LightningModule or LightningDataModule whose ``__init__`` finishes its hyperparameters after
    ``save_hyperparameters()`` (components as specs): loggers record them as stored, without LightningCLI's
    bookkeeping keys, instead of Lightning's copy of the raw constructor arguments."""

    hparams: dict[str, Any]  # the host class's (Lightning's AttributeDict, a dict)

    def drop_cli_keys(self, *more: str) -> None:
        for key in (*CLI_KEYS, *more):
            self.hparams.pop(key, None)

    @property
    def hparams_initial(self) -> Any:
        return type(self.hparams)(copy.deepcopy(dict(self.hparams)))
