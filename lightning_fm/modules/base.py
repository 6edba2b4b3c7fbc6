"""Machinery shared by every LightningModule of the framework: optimiser and warm-up, validation by sampling
(W2 against held-out target samples, its noise floor, NFE), prediction, and checkpoints that rebuild themselves.

A subclass provides ``loss(batch) -> Tensor`` and ``sample(x_source, steps, method, record) -> SampleResult``, and
lists the constructor arguments that are components (``component_names``): those are stored in the hyperparameters
as plain ``{"class_path", "init_args"}`` specs, so ``Module.load_from_checkpoint(path)`` alone restores the model.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from lightning_fm.metrics import wasserstein2
from lightning_fm.solvers import METHODS
from lightning_fm.spec import build, to_spec


@dataclass
class SampleResult:
    """Samples ``x`` and the number of network evaluations ``nfe``; optionally the trajectory ``(K, B, *dims)`` at
    ``times`` (K,) in the sampler's own time (t for CFM, z for IFM), the continuation of lines beyond the target
    plate ``arcs`` ``(M, B, 1 + D)`` in augmented ``(z, x)`` coordinates (EFM), and sampler diagnostics in ``info``."""

    x: Tensor
    nfe: int
    times: Tensor | None = None
    trajectory: Tensor | None = None
    info: dict[str, float] = field(default_factory=dict)
    arcs: Tensor | None = None


@dataclass
class Pairs:
    """This rank's coupled pairs ``(x0, x1)`` and, for superpositions, the pairs of the GLOBAL batch."""

    x0: Tensor
    x1: Tensor
    all_x0: Tensor
    all_x1: Tensor


@dataclass
class ValidationResult:
    """What the last validation produced, for plotting callbacks."""

    source: Tensor
    generated: Tensor
    target: Tensor
    times: Tensor | None
    trajectory: Tensor | None
    time_label: str
    labels: Tensor | None = None
    arcs: Tensor | None = None


class FlowMatchingModule(LightningModule):
    """Shared training/validation machinery. Subclasses: CFMModule, IFMModule, ForwardOnlyIFMModule.

    Args:
        lr, weight_decay, betas: AdamW settings. warmup_steps: linear learning-rate warm-up (per optimiser step).
        sample_steps, sample_method: the sampler used in validation/test/predict (``lightning_fm.solvers.METHODS``).
        val_trajectories: number of trajectories kept from validation for plots.
        w2_max_samples: W2 (exact EMD, cubic cost) uses at most this many samples.
    """

    component_names: tuple[str, ...] = ("backbone",)
    time_label = "t"

    def __init__(
        self,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        sample_steps: int = 100,
        sample_method: str = "euler",
        val_trajectories: int = 64,
        w2_max_samples: int = 5000,
    ) -> None:
        super().__init__()
        if sample_method not in METHODS:
            raise ValueError(f"model.sample_method={sample_method!r} is unknown; choose one of {list(METHODS)}")
        if lr <= 0:
            raise ValueError(f"model.lr must be > 0, got {lr}")
        if sample_steps < 1:
            raise ValueError(f"model.sample_steps must be >= 1, got {sample_steps}")
        self.validation_result: ValidationResult | None = None
        self._eval_outputs: list[dict[str, Any]] = []

    # -- components and checkpoints ----------------------------------------------------------------------------
    def _register_components(self, **components: Any) -> dict[str, Any]:
        """Save hyperparameters with each component as a spec; return the built components."""
        self.save_hyperparameters(ignore=list(components))
        for key in ("_instantiator", "_class_path"):
            self.hparams.pop(key, None)
        built = {name: build(value) for name, value in components.items()}
        for name, value in [*self.hparams.items(), *built.items()]:  # subclass arguments that are components too
            self.hparams[name] = to_spec(value)
        accepted = inspect.signature(type(self).__init__).parameters  # keep exactly what rebuilds this class
        for name in [name for name in self.hparams if name not in accepted]:
            del self.hparams[name]
        return built

    # -- data checks (before training starts) ------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
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
        probe = torch.zeros(2, *data_shape, device=self.device)
        try:
            with torch.no_grad():
                self.backbone(probe, torch.zeros(2, device=self.device))
        except Exception as err:  # noqa: BLE001 - re-raised with the config key
            raise ValueError(f"model.backbone cannot take data of shape {data_shape}: {err}") from err

    # -- optimisation ------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        warmup = max(int(hp.warmup_steps), 0)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup + 1)))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        # stop on a diverged loss (checked every 50 steps: each check synchronises an accelerator with the host)
        if self.global_step % 50 == 0 and not torch.isfinite(loss):
            raise FloatingPointError(f"training loss is {loss.item()} at step {self.global_step}; the last "
                                     "checkpoint (checkpoints/last.ckpt) is intact and resumable with --ckpt_path")
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["x0"].shape[0])
        return loss

    def couple(self, batch: dict[str, Tensor]) -> Pairs:
        """Pair the batch with ``self.coupling`` over the GLOBAL batch: under DDP every rank gathers all ranks'
        samples, computes the same coupling (the same seed gives the same plan) and keeps its own rows; the global
        pairs are returned too, as the charges of a superposition."""
        x0, x1 = batch["x0"], batch["x1"]
        world = self.trainer.world_size if self._trainer is not None else 1
        if world == 1:
            x0, x1, _, _ = self.coupling(x0, x1, batch.get("y0"), batch.get("y1"))
            return Pairs(x0, x1, x0, x1)
        rank, n = self.trainer.global_rank, x0.shape[0]
        g0, g1 = (self.all_gather(v).flatten(0, 1) for v in (x0, x1))
        generator = torch.Generator().manual_seed(int(self.global_step))  # identical plans on every rank
        kwargs = {"generator": generator} if "generator" in inspect.signature(self.coupling.__call__).parameters else {}
        g0, g1, _, _ = self.coupling(g0, g1, **kwargs)
        local = slice(rank * n, (rank + 1) * n)
        return Pairs(g0[local], g1[local], g0, g1)

    # -- evaluation by sampling --------------------------------------------------------------------------------
    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, batch_idx)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def _eval_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        with torch.no_grad():
            loss = self.loss(batch)
            result = self.sample(batch["x0"], record=batch_idx == 0)
        self._eval_outputs.append(
            {"batch": batch, "result": result, "loss": loss.detach(), "n": batch["x0"].shape[0]}
        )

    def _eval_epoch_end(self, prefix: str) -> None:
        outputs, self._eval_outputs = self._eval_outputs, []
        if not outputs:
            return
        cat = lambda key: torch.cat([o["batch"][key] for o in outputs])  # noqa: E731
        generated = torch.cat([o["result"].x for o in outputs])
        target, source = cat("x1"), cat("x0")
        n = min(len(generated), self.hparams.w2_max_samples)
        metrics = {
            f"{prefix}/loss": sum(o["loss"] * o["n"] for o in outputs) / sum(o["n"] for o in outputs),
            f"{prefix}/w2": wasserstein2(generated[:n], target[:n]),
            f"{prefix}/nfe": float(sum(o["result"].nfe for o in outputs) / len(outputs)),
            f"{prefix}/nonfinite": float((~torch.isfinite(generated.flatten(1)).all(1)).sum()),
        }
        if "x1_ref" in outputs[0]["batch"]:
            metrics[f"{prefix}/w2_floor"] = wasserstein2(cat("x1_ref")[:n], target[:n])
        for key in outputs[0]["result"].info:
            metrics[f"{prefix}/{key}"] = float(sum(o["result"].info[key] for o in outputs))
        self.log_dict(metrics, prog_bar=prefix == "val", sync_dist=True)
        first = outputs[0]["result"]
        k = self.hparams.val_trajectories
        self.validation_result = ValidationResult(
            source=source.cpu(),
            generated=generated.cpu(),
            target=target.cpu(),
            times=None if first.times is None else first.times.cpu(),
            trajectory=None if first.trajectory is None else first.trajectory[:, :k].cpu(),
            time_label=self.time_label,
            labels=cat("y1").cpu() if "y1" in outputs[0]["batch"] else None,
            arcs=None if first.arcs is None else first.arcs[:, :k].cpu(),
        )

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.sample(batch["x0"]).x

    # -- what a subclass provides ------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def sample(self, x_source: Tensor, steps: int | None = None, method: str | None = None, record: bool = False):
        raise NotImplementedError
