"""Sample grids written while training: what the EMA model generates from fixed source points, every N steps."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor

from lightning_fm.callbacks.ema import averaged_module
from lightning_fm.callbacks.sample_plots import is_image_shape, pyplot, save_figure, show_images


def nearest(queries: Tensor, split, limit: int | None = None, chunk: int = 2048) -> Tensor:
    """For each query ``(n, *dims)``, the image of ``split`` (an :class:`~lightning_fm.data.image_sets.ImageSplit`
    or a tensor of images) closest in pixel L2, searched over its first ``limit`` images (None: all)."""
    q = queries.flatten(1).float()
    total = len(split) if limit is None else min(limit, len(split))
    best_d, best = torch.full((len(q),), float("inf")), torch.zeros(queries.shape)
    for start in range(0, total, chunk):
        index = torch.arange(start, min(start + chunk, total))
        images = split[index] if isinstance(split, Tensor) else split.get(index)
        d, j = torch.cdist(q, images.flatten(1).float().to(q.device)).min(dim=1)
        better = d.cpu() < best_d
        best_d = torch.where(better, d.cpu(), best_d)
        best[better] = images[j.cpu()[better]].to(best.dtype)
    return best


class SampleGrid(Callback):
    """For image data: every ``every_n_steps`` optimiser steps and at the end of fit, rank 0 maps ``n_samples``
    fixed source points (the first of the validation set) with the EMA weights (the averaged copy of
    ``EMAWeightAveraging``; the live weights, said in the title, when there is none) and writes
    ``<run dir>/grids/step_<step>.png`` and ``latest.png``; loggers that take images (``log_image``, e.g. W&B)
    receive it as ``samples/grid``.

    Class-conditional models draw one class per row (rows of ``ceil(n_samples / K)`` images of one label) with
    guidance ``guidance`` (None: the module's ``model.guidance``). Transfer data (the source is an image set) gives
    three panels: the source images, their transferred images, and each one's nearest training target in pixel L2
    (a memorised sample shows as a copy of its neighbour).

    Args:
        every_n_steps: optimiser steps between grids (0: only at the end of fit).
        n_samples: images in a grid. guidance: the guidance scale of class-conditional sampling.
        nrow: images per row (default: the number of classes for conditional models, else about sqrt(n_samples)).
        sampler: sampler options for the grid (e.g. ``{steps: 20}``); default: the module's sampler as configured.
        nearest_limit: the nearest target is searched among the first this many training images (None: all;
            files decoded per batch, as CelebA's, make a full search slow).
    """

    def __init__(
        self,
        every_n_steps: int = 1000,
        n_samples: int = 64,
        guidance: float | None = None,
        nrow: int | None = None,
        sampler: dict | None = None,
        nearest_limit: int | None = 50_000,
    ) -> None:
        if every_n_steps < 0 or n_samples < 1:
            raise ValueError(
                f"SampleGrid needs every_n_steps >= 0 and n_samples >= 1, got {every_n_steps}, {n_samples}"
            )
        self.every_n_steps, self.n_samples, self.guidance = int(every_n_steps), int(n_samples), guidance
        self.nrow, self.sampler, self.nearest_limit = nrow, dict(sampler or {}), nearest_limit
        self._fixed: dict[str, Tensor] | None = None
        self._per_class = 0
        self._last_step = -1
        self.last: dict[str, Tensor] = {}  # the panels of the last grid (images in [-1, 1]), e.g. for a notebook

    # -- what is drawn ---------------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = trainer.datamodule
        if stage != "fit" or not trainer.is_global_zero or datamodule is None:
            return
        if not is_image_shape(tuple(datamodule.data_shape)):
            return  # points (toys) are drawn by SamplePlots after each validation
        fixed = {"x0": datamodule.evaluation_batches("val").head(self.n_samples)["x0"]}
        classes = int(getattr(pl_module, "num_classes", 0))
        if classes:  # one class per row: rows of ceil(n / K) images
            self._per_class = math.ceil(len(fixed["x0"]) / classes)
            fixed["y"] = torch.arange(len(fixed["x0"])) // self._per_class
        self._fixed = fixed

    def is_transfer(self, trainer: Trainer) -> bool:
        return not getattr(trainer.datamodule, "source_is_standard_normal", True) and hasattr(
            trainer.datamodule, "target_train_images"
        )

    @torch.no_grad()
    def draw(self, trainer: Trainer, pl_module: LightningModule) -> Path | None:
        """Sample, write the PNG and log it; returns its path (None where nothing is drawn: other ranks, no images)."""
        if self._fixed is None or not trainer.is_global_zero:
            return None
        model = averaged_module(trainer)
        weights = "EMA weights" if model is not None else "live weights (no EMA callback)"
        model = model if model is not None else pl_module
        home, device = next(model.parameters()).device, pl_module.device  # the EMA copy may be kept on the CPU
        was_training = model.training
        model.to(device).eval()
        try:
            y = self._fixed.get("y")
            result = model.sample(
                self._fixed["x0"].to(device),
                y=None if y is None else y.to(device),
                guidance=self.guidance,
                **self.sampler,
            )
        finally:
            model.to(home).train(was_training)
        panels = {"samples": result.x.cpu()}
        if self.is_transfer(trainer):
            panels = {
                "source": self._fixed["x0"],
                "transferred": panels["samples"],
                "nearest training target": nearest(
                    panels["samples"], trainer.datamodule.target_train_images(), self.nearest_limit
                ),
            }
        self.last = panels
        title = f"{type(pl_module).__name__}  step {trainer.global_step}  {weights}  NFE {result.nfe}"
        return self._write(trainer, panels, title)

    def _write(self, trainer: Trainer, panels: dict[str, Tensor], title: str) -> Path:
        nrow = self.nrow or (self._per_class if "y" in self._fixed else None)
        fig, axes = pyplot().subplots(1, len(panels), figsize=(4.6 * len(panels), 4.9), squeeze=False)
        for ax, (name, images) in zip(axes[0], panels.items()):
            show_images(ax, images, name, nrow)
        fig.suptitle(title, fontsize=9)
        fig.tight_layout(rect=(0, 0, 1, 0.96))  # (room for the title above the panels' own)
        return save_figure(trainer, fig, "grids", "samples/grid")

    # -- when ------------------------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step != self._last_step:
            self._last_step = step
            self.draw(trainer, pl_module)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.global_step != self._last_step:
            self._last_step = trainer.global_step
            self.draw(trainer, pl_module)
