"""Validation figures, drawn from the data's real shape: 2-D samples over the target with trajectories (toys),
image grids of samples beside held-out images (``(C, H, W)`` data), or the first two coordinates otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_fm.modules.evaluation import ValidationResult


def pyplot():
    """matplotlib's ``pyplot`` on the Agg backend, imported at the first figure (not at start-up)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def is_image_shape(shape: tuple[int, ...]) -> bool:
    """``(C, H, W)`` with 1 (grey) or 3 (RGB) channels."""
    return len(shape) == 3 and shape[0] in (1, 3)


def plot_validation(
    result: ValidationResult, title: str = "", max_points: int = 2000, max_lines: int = 32, max_images: int = 64
):
    """A matplotlib figure of a validation result, chosen by the shape of one sample."""
    shape = tuple(result.generated.shape[1:])
    if is_image_shape(shape):
        return _plot_images(result, title, max_images)
    note = "" if shape == (2,) else f" (first two of {shape} coordinates)"
    return _plot_points(result, title + note, max_points, max_lines)


def _xy(v: torch.Tensor, lead: int) -> torch.Tensor:
    """The first two coordinates of samples with ``lead`` leading axes (``(N, *dims)``: 1, ``(K, N, *dims)``: 2)."""
    return v.flatten(lead)[..., :2]


def _plot_points(result: ValidationResult, title: str, max_points: int, max_lines: int):
    has_traj = result.trajectory is not None and result.times is not None
    fig, axes = pyplot().subplots(1, 2 if has_traj else 1, figsize=(11 if has_traj else 5.5, 5), squeeze=False)
    ax = axes[0, 0]
    tgt, gen, src = (_xy(v[:max_points], 1) for v in (result.target, result.generated, result.source))
    ax.scatter(src[:, 0], src[:, 1], s=2, c="0.75", alpha=0.5, label="source")
    ax.scatter(tgt[:, 0], tgt[:, 1], s=2, c="tab:orange", alpha=0.5, label="target (held out)")
    ax.scatter(gen[:, 0], gen[:, 1], s=2, c="tab:blue", alpha=0.6, label="samples")
    if has_traj:
        traj = _xy(result.trajectory[:, :max_lines], 2)
        ax.plot(traj[:, :, 0], traj[:, :, 1], c="olive", lw=0.7, alpha=0.8)
        ax.scatter(traj[0, :, 0], traj[0, :, 1], s=6, c="black", zorder=3)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", markerscale=4, fontsize=8)
    ax.set_title(title or "samples")
    if has_traj:
        ax = axes[0, 1]
        traj = _xy(result.trajectory[:, :max_lines], 2)
        ax.plot(result.times.numpy(), traj[:, :, 0].numpy(), c="olive", lw=0.7, alpha=0.8)
        ax.set_title(f"trajectories in the ({result.time_label}, $x_1$) plane")
        if result.arcs is not None:  # lines continued beyond the target plate (EFM): they run backward in z
            arcs = result.arcs[:, :max_lines]
            moved = (arcs - arcs[:1]).abs().amax(dim=(0, 2)) > 0
            ax.plot(arcs[:, moved, 0].numpy(), arcs[:, moved, 1].numpy(), c="tab:red", lw=0.7, alpha=0.8)
            ax.axvline(float(result.times[-1]), c="0.5", ls=":", lw=0.8)
            ax.set_title(f"field lines in the ({result.time_label}, $x_1$) plane; red: continued past the plate")
        ax.set_xlabel(result.time_label)
        ax.set_ylabel("$x_1$")
    fig.tight_layout()
    return fig


def image_grid(images: torch.Tensor, columns: int | None = None) -> torch.Tensor:
    """Images ``(N, C, H, W)`` in [-1, 1] as one ``(H', W', C)`` array in [0, 1] (one-pixel white borders)."""
    from torchvision.utils import make_grid

    columns = columns or max(1, int(len(images) ** 0.5 + 0.999))
    grid = make_grid(((images.float().clamp(-1, 1) + 1) / 2), nrow=columns, padding=1, pad_value=1.0)
    return grid.permute(1, 2, 0)


def show_images(ax, images: torch.Tensor, name: str, columns: int | None = None) -> None:
    """Draw images ``(N, C, H, W)`` in [-1, 1] on ``ax`` as one grid titled ``name``."""
    grid = image_grid(images, columns)
    ax.imshow(
        grid.squeeze(-1).numpy() if grid.shape[-1] == 1 else grid.numpy(),
        cmap="gray",
        vmin=0,
        vmax=1,
        interpolation="nearest",
    )
    ax.set_title(name)
    ax.axis("off")


def _plot_images(result: ValidationResult, title: str, max_images: int):
    fig, axes = pyplot().subplots(1, 2, figsize=(10, 5.4))
    for ax, images, name in ((axes[0], result.generated, "samples"), (axes[1], result.target, "held-out data")):
        show_images(ax, images[:max_images], name)
    fig.suptitle(title or "samples")
    fig.tight_layout()
    return fig


def save_figure(trainer: Trainer, fig, folder: str, key: str) -> Path:
    """Write ``fig`` as ``<run dir>/<folder>/step_<global step>.png`` and ``latest.png``, close it, and send it to
    the loggers that take images (``log_image``, e.g. W&B) under ``key``; returns the PNG's path."""
    out_dir = run_dir(trainer) / folder
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"step_{trainer.global_step:07d}.png"
    fig.savefig(path, dpi=110)
    pyplot().close(fig)
    shutil.copyfile(path, out_dir / "latest.png")
    for logger in trainer.loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
    return path


def run_dir(trainer: Trainer) -> Path:
    """The run's log directory. Unlike ``trainer.log_dir`` this performs no collective, so one rank may call it."""
    for logger in trainer.loggers:
        directory = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if directory:
            return Path(directory)
    return Path(trainer.default_root_dir)


class SamplePlots(Callback):
    """After each validation, write ``<log_dir>/samples/<step>.png`` (and ``latest.png``) and send it to W&B.

    Args:
        every_n_validations: plot one validation in this many.
        max_points, max_lines: scatter points and trajectories drawn for point data.
        max_images: images in each grid for image data.
    """

    def __init__(
        self, every_n_validations: int = 1, max_points: int = 2000, max_lines: int = 32, max_images: int = 64
    ) -> None:
        self.every_n_validations = max(1, every_n_validations)
        self.max_points, self.max_lines, self.max_images = max_points, max_lines, max_images
        self._count = 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        result = getattr(pl_module, "validation_result", None)
        if result is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._count += 1
        if (self._count - 1) % self.every_n_validations:
            return
        title = f"{type(pl_module).__name__}  step {trainer.global_step}"
        for key in ("val/w2", "val/fd"):  # (val/fd: the digits classifier's Frechet distance, where it is measured)
            if (value := trainer.callback_metrics.get(key)) is not None:
                title += f"  {key} = {float(value):.3f}"
        fig = plot_validation(result, title, self.max_points, self.max_lines, self.max_images)
        save_figure(trainer, fig, "samples", "samples/validation")
