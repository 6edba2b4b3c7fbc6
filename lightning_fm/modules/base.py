"""Machinery shared by every LightningModule of the framework: components stored as specs, the injected optimiser
and schedule, coupling over the global batch (with labels), evaluation by sampling, prediction.

A subclass provides ``loss(batch, distributed) -> Tensor`` and ``sample(x_source, y=None, record=False,
**overrides) -> SampleResult``, and builds its parts with :meth:`FlowMatchingModule.component`: each is stored in
the hyperparameters as a plain ``{"class_path", "init_args"}`` spec, so ``Module.load_from_checkpoint(path)`` alone
restores the model (backbone, path or field, coupling, volume, sampler, optimiser).
"""
from __future__ import annotations

import inspect
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor

from lightning_fm.modules.evaluation import (
    EvaluationMetrics,
    NonFiniteSamplesWarning,
    PlotSamples,
    ValidationResult,
    nonfinite_warning,
)
from lightning_fm.modules.hot_path import (
    channels_last_batch,
    cheap_cuda_probe,
    compile_in_place,
    compile_options,
    to_channels_last,
)
from lightning_fm.sampling import SampleResult
from lightning_fm.utils.finite import NonFiniteTracker
from lightning_fm.utils.hparams import StoredHyperparameters
from lightning_fm.utils.seeding import derive_seed
from lightning_fm.utils.spec import build, build_callable, callable_spec, class_path, to_spec

#: the seed stream of the training steps' randomness (apart from the data's streams)
STEP_STREAM = 101


@dataclass
class Pairs:
    """This process's coupled pairs ``(x0, x1)`` with their labels, and the pairs of the GLOBAL batch (all
    processes) with their target labels for superpositions; ``offset`` is the global index of this process's first
    row."""

    x0: Tensor
    x1: Tensor
    y0: Tensor | None
    y1: Tensor | None
    all_x0: Tensor
    all_x1: Tensor
    offset: int = 0
    all_y1: Tensor | None = None


def superposition_groups(row_groups: Tensor, charge_groups: Tensor, row_labels: Tensor | None,
                         charge_labels: Tensor | None, null_class: int):
    """The superpositions of a batch's targets, as ``(rows, charges)`` boolean masks: a row superposes the charges
    (pairs) of its own group and, when it carries a class ``c`` (a class-conditional model; not the null class of a
    dropped label), only the charges of class ``c``: the class-conditional field (or posterior) that the network
    given ``c`` must learn, while a null row learns the unconditional one over all classes. One superposition per
    (group, class) present."""
    labelled = row_labels is not None and charge_labels is not None
    keys = row_groups * (null_class + 1) + row_labels if labelled else row_groups
    for key in torch.unique(keys).tolist():
        group, label = divmod(key, null_class + 1) if labelled else (key, null_class)
        charges = charge_groups == group
        if label != null_class:
            charges = charges & (charge_labels == label)
        yield keys == key, charges


class FlowMatchingModule(StoredHyperparameters, LightningModule):
    """Shared training and evaluation machinery. Subclasses: CFMModule, IFMModule, ForwardOnlyIFMModule.

    Args:
        optimizer: the optimiser factory ``params -> Optimizer``; default ``torch.optim.Adam`` (lr 1e-3), the
            torchcfm 2-D recipe. In YAML: ``{class_path: torch.optim.AdamW, init_args: {lr: 2e-4}}``.
        lr_scheduler: the schedule factory ``optimizer -> LRScheduler``, stepped after every optimiser step (e.g.
            ``lightning_fm.utils.schedules.LinearWarmup``, ``CosineDecay``); None: constant learning rate.
        val_trajectories: lines whose trajectories validation records (of its first batch, for plots).
        w2_max_samples: validation W2 (exact EMD, cubic cost) uses at most this many samples of each side.
        plot_samples: samples of each validation kept for plots.
        label_dropout: probability that a training label is replaced by the null class (classifier-free guidance
            training; needs a class-conditional backbone). 0: no dropout.
        guidance: the default classifier-free guidance scale ``w`` of :meth:`sample` and of evaluation
            (:mod:`lightning_fm.sampling.guidance`: ``(1 + w) cond - w uncond``; 0: the conditional model).
        nonfinite_tolerance: the fraction of generated samples of a validation or test pass that may be non-finite
            without a warning (``<stage>/nonfinite_frac`` is logged either way; W2 of a pass with a non-finite
            sample is NaN, never computed on the finite ones alone).
        channels_last: keep image backbones and batches in the channels_last memory format (GPU tensor cores;
            :mod:`lightning_fm.modules.hot_path`). Needs image data.
        compile_backbone: ``torch.compile`` the backbone in place: true, or a dict of ``torch.compile``'s keyword
            arguments (``mode``, ``backend``, ``fullgraph``, ``dynamic``); false: eager.

    A non-finite training loss stops the run (:meth:`stop_if_diverged`) within ``trainer.log_every_n_steps`` steps.
    """

    time_label = "t"
    #: arguments of a parent class that a subclass sets itself (not stored, not accepted when rebuilding).
    derived_hparams: tuple[str, ...] = ()

    def __init__(
        self,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
        val_trajectories: int = 64,
        w2_max_samples: int = 5000,
        plot_samples: int = 2000,
        label_dropout: float = 0.0,
        guidance: float = 0.0,
        nonfinite_tolerance: float = 0.0,
        channels_last: bool = False,
        compile_backbone: bool | dict[str, Any] = False,
    ) -> None:
        super().__init__()
        for key, value, low in (("val_trajectories", val_trajectories, 0), ("plot_samples", plot_samples, 0),
                                ("w2_max_samples", w2_max_samples, 2)):
            if int(value) != value or value < low:
                raise ValueError(f"model.{key} must be an integer >= {low}, got {value!r}")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"model.label_dropout must lie in [0, 1), got {label_dropout!r}")
        if not math.isfinite(guidance):
            raise ValueError(f"model.guidance must be finite, got {guidance!r}")
        if not 0.0 <= nonfinite_tolerance <= 1.0:
            raise ValueError(f"model.nonfinite_tolerance must lie in [0, 1] (a fraction of samples), got "
                             f"{nonfinite_tolerance!r}")
        self.compile_options = compile_options(compile_backbone)
        self.save_hyperparameters(ignore=["backbone"])  # every constructor's arguments up the class hierarchy
        self.drop_cli_keys(*self.derived_hparams)
        accepted = self.accepted_hparams()
        for name in [name for name in self.hparams if name not in accepted]:
            del self.hparams[name]
        # stored as specs and rebuilt as plain partials (LightningCLI's hold its instantiator, which cannot be copied)
        self.hparams["optimizer"] = callable_spec(optimizer)
        self.hparams["lr_scheduler"] = callable_spec(lr_scheduler)
        self.optimizer_factory = build_callable(self.hparams["optimizer"])
        self.lr_scheduler_factory = build_callable(self.hparams["lr_scheduler"])
        self.evaluation = EvaluationMetrics(w2_max_samples)
        self.validation_result: ValidationResult | None = None
        self._plots: PlotSamples | None = None
        self._loss_watch = NonFiniteTracker()

    # -- components and checkpoints ----------------------------------------------------------------------------
    @classmethod
    def accepted_hparams(cls) -> set[str]:
        """The constructor arguments that rebuild this class: its own and those its ``**kwargs`` reach."""
        names: set[str] = set()
        for klass in cls.__mro__:
            if not (isinstance(klass, type) and issubclass(klass, FlowMatchingModule)):
                continue
            parameters = inspect.signature(klass.__init__).parameters.values()
            names |= {p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"}
            if not any(p.kind is p.VAR_KEYWORD for p in parameters):
                break
        return names - set(cls.derived_hparams)

    def component(self, name: str, value: Any, default: Any) -> Any:
        """Build the component ``name`` (an object, a spec dict, or None for ``default``) and store its spec (unless
        a subclass derives it from its own arguments: ``derived_hparams``)."""
        built = build(value) if value is not None else default
        if name not in self.derived_hparams:
            self.hparams[name] = to_spec(built)
        return built

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the module's class beside its hyperparameters (``checkpoint["lightning_fm"]["module"]``): the CLI's
        ``--ckpt_path`` rebuilds that class from them (:mod:`lightning_fm.cli`)."""
        checkpoint.setdefault("lightning_fm", {})["module"] = class_path(self)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, allowed_classes: tuple[str, ...] = (),
                             **kwargs: Any) -> FlowMatchingModule:
        """Lightning's ``load_from_checkpoint`` (``weights_only=True`` by default), building nothing a checkpoint
        names outside the allow-list (``allowed_classes``: more trusted modules or classes), loading any family from
        ``FlowMatchingModule`` and refusing another family's checkpoint
        (:func:`lightning_fm.utils.checkpoint_files.load_module`)."""
        from lightning_fm.utils.checkpoint_files import load_module

        return load_module(cls, checkpoint_path, super().load_from_checkpoint, allowed_classes, *args, **kwargs)

    # -- data checks (before training starts) ------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        """Check the data against the model; ``model.channels_last`` (after the callbacks' setup: an EMA copy keeps
        the default layout) and a cheap CUDA probe where there is no CUDA device (:mod:`.hot_path`)."""
        cheap_cuda_probe()
        if self.hparams.channels_last:
            to_channels_last(self)
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
        if self.hparams.channels_last and len(data_shape) != 3:
            raise ValueError(f"model.channels_last=true is a memory format of images (C, H, W), but the data has "
                             f"shape {tuple(data_shape)}")
        classes = self.num_classes
        for key in ("label_dropout", "guidance"):
            if self.hparams[key] and not classes:
                raise ValueError(f"model.{key}={self.hparams[key]} needs a class-conditional backbone "
                                 "(model.backbone num_classes > 0)")
        if classes and classes != getattr(datamodule, "num_classes", 0):
            raise ValueError(f"model.backbone is class-conditional with num_classes={classes}, but the data has "
                             f"{getattr(datamodule, 'num_classes', 0)} classes (data.num_classes)")
        probe = torch.zeros(2, *data_shape, device=self.device)
        try:
            with torch.no_grad():
                self.backbone(probe, torch.zeros(2, device=self.device))
        except Exception as err:  # noqa: BLE001 - re-raised with the config key
            raise ValueError(f"model.backbone cannot take data of shape {data_shape}: {err}") from err

    @property
    def num_classes(self) -> int:
        """Classes the backbone is conditioned on (0: unconditional)."""
        return int(getattr(self.backbone, "num_classes", 0))

    def condition(self, labels: Tensor | None, required: bool = False) -> Tensor | None:
        """The labels the backbone is given: the target classes if it is class-conditional, else None. Training
        (``required``) needs them; sampling without them draws from the null class."""
        if not self.num_classes:
            return None
        if labels is None:
            if required:
                raise ValueError("model.backbone is class-conditional but the batch has no target labels 'y1'")
            return None
        if bool(((labels < 0) | (labels > self.num_classes)).any()):
            raise ValueError(f"labels y must lie in 0..{self.num_classes - 1} ({self.num_classes}: the null class) "
                             f"for model.backbone with num_classes={self.num_classes}")
        return labels

    def training_labels(self, labels: Tensor | None) -> Tensor | None:
        """The labels a training step gives the backbone: :meth:`condition`, each replaced by the null class
        (index ``num_classes``) with probability ``label_dropout``."""
        labels = self.condition(labels, required=True)
        p = self.hparams.label_dropout
        if labels is None or not p:
            return labels
        drop = torch.rand(labels.shape, device=labels.device) < p
        return torch.where(drop, torch.full_like(labels, self.num_classes), labels)

    def guidance_scale(self, guidance: float | None, labels: Tensor | None) -> float:
        """The guidance scale of one sampling call: ``guidance``, or the module's default when None; guidance needs
        labels (without them the null class is sampled, which has nothing to guide)."""
        w = float(self.hparams.guidance if guidance is None else guidance)
        if w and labels is None:
            if guidance is None:
                return 0.0  # the default scale applies to labelled sampling only
            if not self.num_classes:
                raise ValueError(f"guidance={w} needs a class-conditional backbone (model.backbone num_classes > 0)")
            raise ValueError(f"guidance={w} needs labels y (classifier-free guidance towards a class)")
        return w

    # -- hot path (GPU) ----------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        """``model.compile_backbone``, once the callbacks have copied the module: a compiled forward holds the module
        it was compiled from, so a copy made after it (the EMA average) would run the live weights."""
        if self.compile_options is not None:
            compile_in_place(self.backbone, self.compile_options)

    # -- optimisation ------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        schedule = self.lr_scheduler_factory(optimizer)
        if getattr(schedule, "wants_total_steps", False):  # e.g. CosineDecay: decay over the run's max_steps
            schedule.set_total_steps(self.trainer.max_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def full_precision(self):
        """A region outside mixed-precision autocast (``precision: bf16-mixed``): couplings, volumes, paths and
        field targets run in the data's float32 there, the network alone in bf16."""
        return torch.autocast(self.device.type, enabled=False)

    def on_train_batch_start(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        """Seed the step's randomness (times, path noise, label dropout, dropout) from ``(seed, step, rank)``:
        ``torch.manual_seed(derive_seed(PL_GLOBAL_SEED, STEP_STREAM, global_step, rank))``, so a resumed run draws
        what the uninterrupted run drew (Lightning does not restore the global generators), and the processes of a
        DDP run draw independently. With ``model.channels_last`` the batch's images are stored channels_last."""
        if self.hparams.channels_last:
            batch.update(channels_last_batch(batch))
        seed = derive_seed(int(os.environ.get("PL_GLOBAL_SEED", 0)), STEP_STREAM, self.global_step, self.global_rank)
        # the generators this process draws from, not torch.manual_seed: that also queues a lazy seeding of every
        # CUDA device, recording a stack trace each time (a millisecond a step, more than a toy step's maths)
        torch.default_generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.default_generators[self.device.index or 0].manual_seed(seed)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        self._loss_watch.update(loss, self.global_step)  # on the device: no synchronisation
        if self.is_divergence_check_step():
            self.stop_if_diverged()
        self.log_training(loss, batch["x0"].shape[0])
        return loss

    def is_logging_step(self) -> bool:
        """The steps the loggers write: ``(step + 1) % log_every_n_steps == 0``."""
        return (self.global_step + 1) % max(1, int(self.trainer.log_every_n_steps)) == 0

    def is_divergence_check_step(self) -> bool:
        """The steps where the loss record is read: the logging steps and the last one (``step + 1 ==
        max_steps``); every process reaches them together."""
        return self.is_logging_step() or self.global_step + 1 == self.trainer.max_steps

    def stop_if_diverged(self) -> None:
        """Raise ``FloatingPointError`` on EVERY process when the training loss was not finite at any step since
        the last check on ANY process (one rank stopping alone would leave the others waiting in the next
        collective). The loss is counted on the device every step (:class:`~lightning_fm.utils.finite.
        NonFiniteTracker`); this reads the counts, one synchronisation (a gather under DDP). The message gives the
        steps, each process's count, and the checkpoint that holds the last finite state."""
        window = self._loss_watch.window
        counts = self._loss_watch.pending(self.device)
        self._loss_watch.reset()
        world = self.trainer.world_size
        counts = (self.all_gather(counts) if world > 1 else counts).reshape(-1).tolist()
        if not any(counts):
            return
        first, last = window if window is not None else (self.global_step, self.global_step)
        if world > 1:
            where = (f"in steps {first}..{last} (non-finite steps per process: "
                     + ", ".join(f"rank {rank}: {count}" for rank, count in enumerate(counts)) + ")")
        else:
            where = f"at {counts[0]} of the {last - first + 1} steps {first}..{last}"
        raise FloatingPointError(
            f"training loss is not finite {where}; noticed at step {last} (the loss is checked every "
            f"trainer.log_every_n_steps={self.trainer.log_every_n_steps} steps); {self.finite_checkpoint_note()}")

    def finite_checkpoint_note(self) -> str:
        """Which checkpoint holds the last finite state, from the checkpoint callbacks that know it
        (:class:`~lightning_fm.callbacks.checkpoints.CrashSafeModelCheckpoint`)."""
        notes = [c.finite_note() for c in self.trainer.checkpoint_callbacks if hasattr(c, "finite_note")]
        if notes:
            return "; ".join(notes)
        return ("no checkpoint is known to be finite (trainer.callbacks has no "
                "lightning_fm.callbacks.CrashSafeModelCheckpoint)")

    def log_training(self, loss: Tensor, batch_size: int) -> None:
        """``train/loss`` and ``train/samples_per_s`` (global training samples a second since the last written
        step), logged at the steps the loggers write (:meth:`is_logging_step`) only: a ``self.log``
        call costs about as much as a toy step's maths (the progress bar's loss is the last written one)."""
        now = time.perf_counter()
        start = getattr(self, "_speed_window", None)
        if start is None:
            self._speed_window = start = (now, self.global_step)
        if not self.is_logging_step():
            return
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        elapsed, steps = now - start[0], self.global_step - start[1]
        if elapsed > 0 and steps > 0:
            rate = steps * batch_size * self.trainer.world_size / elapsed
            self.log("train/samples_per_s", rate, batch_size=batch_size)
        self._speed_window = (now, self.global_step)

    def couple(self, batch: dict[str, Tensor], distributed: bool = True) -> Pairs:
        """Pair the batch with ``self.coupling``. Under DDP (``distributed``) over the GLOBAL batch: every process
        gathers all processes' samples and labels, computes the same coupling (the same seed gives the same plan)
        and keeps its own rows; the global pairs are returned too, as the charges of a superposition."""
        x0, x1, y0, y1 = batch["x0"], batch["x1"], batch.get("y0"), batch.get("y1")
        world = self.trainer.world_size if (distributed and self._trainer is not None) else 1
        if world == 1:
            x0, x1, y0, y1 = self.coupling(x0, x1, y0, y1)
            return Pairs(x0, x1, y0, y1, x0, x1, all_y1=y1)
        rank, n = self.trainer.global_rank, x0.shape[0]
        gathered = [None if v is None else self.all_gather(v).flatten(0, 1) for v in (x0, x1, y0, y1)]
        generator = torch.Generator().manual_seed(int(self.global_step))  # identical plans on every rank
        g0, g1, gy0, gy1 = self.coupling(*gathered, generator=generator)
        local = slice(rank * n, (rank + 1) * n)
        pick = lambda v: None if v is None else v[local]  # noqa: E731
        return Pairs(g0[local], g1[local], pick(gy0), pick(gy1), g0, g1, rank * n, gy1)

    # -- evaluation by sampling --------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._start_evaluation()

    def on_test_epoch_start(self) -> None:
        self._start_evaluation()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluation_step(batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        self._end_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self._end_evaluation("test")

    def _start_evaluation(self) -> None:
        self.evaluation.reset()
        self._plots = PlotSamples(self.hparams.plot_samples, self.time_label)

    def _evaluation_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Sample the batch's sources and update the pass's metrics; returns ``{"generated": samples}`` (what
        callbacks such as :class:`~lightning_fm.callbacks.ClassifierMetrics` receive as ``outputs``)."""
        first = self._plots is not None and self._plots.first is None
        with torch.no_grad():
            loss = self.loss(batch, distributed=False)  # no collective inside a step: ranks may differ in batches
            result = self.sample(batch["x0"], y=batch.get("y1"), record=self.hparams.val_trajectories if first else 0)
        self.evaluation.update(loss, batch, result)
        self._plots.add(batch, result)
        return {"generated": result.x}

    def _end_evaluation(self, prefix: str) -> None:
        values = self.evaluation.compute()  # already gathered over processes: the mean below changes nothing
        self.log_dict({f"{prefix}/{k}": v.float() for k, v in values.items()}, prog_bar=prefix == "val", sync_dist=True)
        warning = nonfinite_warning(prefix, float(values["nonfinite"]), float(values["nonfinite_frac"]),
                                    float(self.hparams.get("nonfinite_tolerance", 0.0)))
        if warning:
            rank_zero_warn(warning, category=NonFiniteSamplesWarning)
        info = {f"{prefix}/{k}": torch.tensor(v, device=self.device) for k, v in self.evaluation.info.items()}
        if info:
            self.log_dict(info, sync_dist=True, reduce_fx="sum")
        self.validation_result = self._plots.result() if self._plots is not None else None
        self.evaluation.reset()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.sample(batch["x0"], y=batch.get("y1")).x

    # -- what a subclass provides ------------------------------------------------------------------------------
    def loss(self, batch: dict[str, Tensor], distributed: bool = True) -> Tensor:
        raise NotImplementedError

    def sample(self, x_source: Tensor, y: Tensor | None = None, record: bool | int = False,
               **overrides: Any) -> SampleResult:
        raise NotImplementedError
