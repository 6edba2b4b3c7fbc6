"""The checks of the data against the model that run before training starts, each naming its config key."""

from __future__ import annotations

from typing import Any

import torch

from lightning_fm.compat import attached_trainer
from lightning_fm.modules.hot_path import to_channels_last


class DataChecks:
    """Mixin of :class:`~lightning_fm.modules.base.FlowMatchingModule` (a LightningModule with a ``backbone``)."""

    def setup(self, stage: str) -> None:
        """Check the data against the model; ``model.channels_last`` (after the callbacks' setup: an EMA copy keeps
        the default layout)."""
        if self.hparams.channels_last:
            to_channels_last(self)
        trainer = attached_trainer(self)
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None:
            return
        source, target = tuple(datamodule.source_shape), tuple(datamodule.target_shape)
        if source != target:
            raise ValueError(
                f"data: source samples have shape {source} but target samples {target}; "
                "a flow between them needs one data shape (data.source / data.target)"
            )
        self.check_data(datamodule, source)

    def check_data(self, datamodule: Any, data_shape: tuple[int, ...]) -> None:
        """Raise a ValueError naming the config key when the model cannot take this data."""
        if self.hparams.channels_last and len(data_shape) != 3:
            raise ValueError(
                f"model.channels_last=true is a memory format of images (C, H, W), but the data has "
                f"shape {tuple(data_shape)}"
            )
        classes = self.num_classes
        for key in ("label_dropout", "guidance"):
            if self.hparams[key] and not classes:
                raise ValueError(
                    f"model.{key}={self.hparams[key]} needs a class-conditional backbone "
                    "(model.backbone num_classes > 0)"
                )
        if classes and classes != getattr(datamodule, "num_classes", 0):
            raise ValueError(
                f"model.backbone is class-conditional with num_classes={classes}, but the data has "
                f"{getattr(datamodule, 'num_classes', 0)} classes (data.num_classes)"
            )
        probe = torch.zeros(2, *data_shape, device=self.device)
        try:
            with torch.no_grad():
                self.backbone(probe, torch.zeros(2, device=self.device))
        except Exception as err:  # noqa: BLE001 - re-raised with the config key
            raise ValueError(f"model.backbone cannot take data of shape {data_shape}: {err}") from err
