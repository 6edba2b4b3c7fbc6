"""Validation figures: samples over the target with trajectories (2-D data) or a sample grid (images)."""
from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from lightning.pytorch import Callback, LightningModule, Trainer  # noqa: E402

from lightning_fm.modules.base import ValidationResult  # noqa: E402


def plot_validation(result: ValidationResult, title: str = "", max_points: int = 2000, max_lines: int = 32):
    """Return a matplotlib figure of a validation result."""
    data_dim = result.generated[0].numel()
    if data_dim == 2:
        return _plot_2d(result, title, max_points, max_lines)
    return _plot_grid(result, title)


def _plot_2d(result: ValidationResult, title: str, max_points: int, max_lines: int):
    has_traj = result.trajectory is not None and result.times is not None
    fig, axes = plt.subplots(1, 2 if has_traj else 1, figsize=(11 if has_traj else 5.5, 5), squeeze=False)
    ax = axes[0, 0]
    tgt, gen, src = (v[:max_points].reshape(-1, 2) for v in (result.target, result.generated, result.source))
    ax.scatter(src[:, 0], src[:, 1], s=2, c="0.75", alpha=0.5, label="source")
    ax.scatter(tgt[:, 0], tgt[:, 1], s=2, c="tab:orange", alpha=0.5, label="target (held out)")
    ax.scatter(gen[:, 0], gen[:, 1], s=2, c="tab:blue", alpha=0.6, label="samples")
    if has_traj:
        traj = result.trajectory[:, :max_lines].reshape(result.trajectory.shape[0], -1, 2)
        ax.plot(traj[:, :, 0], traj[:, :, 1], c="olive", lw=0.7, alpha=0.8)
        ax.scatter(traj[0, :, 0], traj[0, :, 1], s=6, c="black", zorder=3)
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(loc="upper right", markerscale=4, fontsize=8)
    ax.set_title(title or "samples")
    if has_traj:
        ax = axes[0, 1]
        traj = result.trajectory[:, :max_lines].reshape(result.trajectory.shape[0], -1, 2)
        ax.plot(result.times.numpy(), traj[:, :, 0].numpy(), c="olive", lw=0.7, alpha=0.8)
        if result.arcs is not None:  # lines continued beyond the target plate (EFM): they run backward in z
            arcs = result.arcs[:, :max_lines]
            moved = (arcs - arcs[:1]).abs().amax(dim=(0, 2)) > 0
            ax.plot(arcs[:, moved, 0].numpy(), arcs[:, moved, 1].numpy(), c="tab:red", lw=0.7, alpha=0.8)
            ax.axvline(float(result.times[-1]), c="0.5", ls=":", lw=0.8)
            ax.set_title(f"field lines in the ({result.time_label}, $x_1$) plane; red: continued past the plate")
        ax.set_xlabel(result.time_label)
        ax.set_ylabel("$x_1$")
        if result.arcs is None:
            ax.set_title(f"trajectories in the ({result.time_label}, $x_1$) plane")
    fig.tight_layout()
    return fig


def _plot_grid(result: ValidationResult, title: str, n: int = 64):
    images = result.generated[:n]
    if images.dim() == 2:  # flattened square images
        side = int(round(images.shape[1] ** 0.5))
        images = images.reshape(-1, 1, side, side) if side * side == images.shape[1] else images[:, None, None, :]
    images = ((images.clamp(-1, 1) + 1) / 2).float()
    cols = int(len(images) ** 0.5 + 0.999)
    fig, axes = plt.subplots(cols, cols, figsize=(cols * 0.8, cols * 0.8), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img in zip(axes.ravel(), images):
        img = img.permute(1, 2, 0).squeeze(-1) if img.shape[0] in (1, 3) else img[0]
        ax.imshow(img.numpy(), cmap="gray" if img.dim() == 2 else None, vmin=0, vmax=1)
    fig.suptitle(title or "samples")
    return fig


def run_dir(trainer: Trainer) -> Path:
    """The run's log directory. Unlike ``trainer.log_dir`` this performs no collective, so one rank may call it."""
    for logger in trainer.loggers:
        directory = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None)
        if directory:
            return Path(directory)
    return Path(trainer.default_root_dir)


class SamplePlotCallback(Callback):
    """After each validation, write ``<log_dir>/samples/<step>.png`` (and ``latest.png``) and send it to W&B.

    Args:
        every_n_validations: plot one validation in this many.
        max_points, max_lines: scatter points and trajectories drawn for 2-D data.
    """

    def __init__(self, every_n_validations: int = 1, max_points: int = 2000, max_lines: int = 32) -> None:
        self.every_n_validations = max(1, every_n_validations)
        self.max_points, self.max_lines = max_points, max_lines
        self._count = 0

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        result = getattr(pl_module, "validation_result", None)
        if result is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        self._count += 1
        if (self._count - 1) % self.every_n_validations:
            return
        w2 = trainer.callback_metrics.get("val/w2")
        title = f"{type(pl_module).__name__}  step {trainer.global_step}"
        if w2 is not None:
            title += f"  val/w2 = {float(w2):.3f}"
        fig = plot_validation(result, title, self.max_points, self.max_lines)
        out_dir = run_dir(trainer) / "samples"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"step_{trainer.global_step:07d}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        shutil.copyfile(path, out_dir / "latest.png")
        for logger in trainer.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image(key="val/samples", images=[str(path)], step=trainer.global_step)


class SampleWriter(Callback):
    """On ``predict``, save all predicted samples to ``<log_dir>/predictions.pt`` as ``{"samples": (N, *dims)}``."""

    def __init__(self, filename: str = "predictions.pt") -> None:
        self.filename = filename

    def on_predict_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        outputs = trainer.predict_loop.predictions
        if not outputs:
            return
        batches = outputs[0] if isinstance(outputs[0], list) else outputs
        samples = torch.cat([b.cpu() for b in batches])
        path = run_dir(trainer) / self.filename
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"samples": samples}, path)
        print(f"wrote {len(samples)} samples to {path}")
