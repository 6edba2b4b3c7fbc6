"""The Lightning glue shared by every family: a training step asks the family's pure objective
(:mod:`lightning_fm.objectives`) for the step's regression problem and loss; evaluation samples through the
objective; the optimiser and schedule are injected; components are stored as specs (:mod:`.components`).

A subclass builds its components, sets ``self.objective`` (a :class:`~lightning_fm.objectives.VelocityObjective`
or :class:`~lightning_fm.objectives.FieldObjective`) and provides ``predict(x, s, y)``, the network at ``x`` and the
objective's variable ``s`` (``t`` or ``z``) for labels ``y``. Cross-cutting concerns are callbacks the module adds
(:meth:`configure_callbacks`): per-step seeding, the divergence guard, throughput.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor

from lightning_fm.callbacks.divergence import DivergenceGuard, is_logging_step
from lightning_fm.callbacks.step_seeding import StepSeeding
from lightning_fm.callbacks.throughput import Throughput
from lightning_fm.compat import attached_trainer
from lightning_fm.likelihood import LikelihoodResult, LogProb, standard_normal_log_prob, trainable_copy
from lightning_fm.modules.components import Components
from lightning_fm.modules.data_checks import DataChecks
from lightning_fm.modules.evaluation import Evaluation
from lightning_fm.modules.hot_path import channels_last_batch, compile_in_place, compile_options
from lightning_fm.modules.sampling_evaluation import SamplingEvaluation
from lightning_fm.modules.source_density import SourceDensity
from lightning_fm.objectives import Pairs, couple
from lightning_fm.objectives.labels import check_labels, conditioned, drop_labels, guidance_scale
from lightning_fm.sampling import SampleResult
from lightning_fm.sampling.result import warn_if_not_returned
from lightning_fm.utils.spec import build_callable, callable_spec


class FlowMatchingModule(SourceDensity, Components, DataChecks, SamplingEvaluation, LightningModule):
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

    A non-finite training loss stops the run within ``trainer.log_every_n_steps`` steps
    (:class:`~lightning_fm.callbacks.divergence.DivergenceGuard`).

    The source of a fit is recorded (:attr:`source_density`, a record of :mod:`lightning_fm.data.sources`) and kept
    in the checkpoint (``checkpoint["lightning_fm"]["source"]``): :meth:`log_likelihood` uses its density.
    """

    objective: Any

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
        for key, value, low in (
            ("val_trajectories", val_trajectories, 0),
            ("plot_samples", plot_samples, 0),
            ("w2_max_samples", w2_max_samples, 2),
        ):
            if int(value) != value or value < low:
                raise ValueError(f"model.{key} must be an integer >= {low}, got {value!r}")
        if not 0.0 <= label_dropout < 1.0:
            raise ValueError(f"model.label_dropout must lie in [0, 1), got {label_dropout!r}")
        if not math.isfinite(guidance):
            raise ValueError(f"model.guidance must be finite, got {guidance!r}")
        if not 0.0 <= nonfinite_tolerance <= 1.0:
            raise ValueError(
                f"model.nonfinite_tolerance must lie in [0, 1] (a fraction of samples), got {nonfinite_tolerance!r}"
            )
        self.compile_options = compile_options(compile_backbone)
        self.save_hyperparameters(ignore=["backbone"])  # every constructor's arguments up the class hierarchy
        self.store_hyperparameters()
        # stored as specs and rebuilt as plain partials (LightningCLI's hold its instantiator, which cannot be copied)
        self.hparams["optimizer"] = callable_spec(optimizer)
        self.hparams["lr_scheduler"] = callable_spec(lr_scheduler)
        self.optimizer_factory = build_callable(self.hparams["optimizer"])
        self.lr_scheduler_factory = build_callable(self.hparams["lr_scheduler"])
        self.evaluation = Evaluation(w2_max_samples, plot_samples)

    # -- labels ------------------------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """Classes the backbone is conditioned on (0: unconditional; index ``num_classes`` is the null class)."""
        return int(getattr(self.backbone, "num_classes", 0))

    def condition(self, labels: Tensor | None, required: bool = False) -> Tensor | None:
        """The labels the backbone is given (:func:`~lightning_fm.objectives.labels.check_labels`)."""
        return check_labels(labels, self.num_classes, required)

    def training_labels(self, labels: Tensor | None) -> Tensor | None:
        """:meth:`condition`, each replaced by the null class with probability ``label_dropout``."""
        return drop_labels(self.condition(labels, required=True), self.hparams.label_dropout, self.num_classes)

    # -- training ----------------------------------------------------------------------------------------------
    def configure_callbacks(self) -> list[Callback]:
        return [StepSeeding(), DivergenceGuard(), Throughput()]

    def on_fit_start(self) -> None:
        """``model.compile_backbone``, once the callbacks have copied the module: a compiled forward holds the module
        it was compiled from, so a copy made after it (the EMA average) would run the live weights."""
        if self.compile_options is not None:
            compile_in_place(self.backbone, self.compile_options)

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
        if self.hparams.channels_last:
            batch.update(channels_last_batch(batch))

    def couple(self, batch: dict[str, Tensor], distributed: bool = True) -> Pairs:
        """Pair the batch with ``self.coupling``; under DDP (``distributed``) over the GLOBAL batch
        (:func:`lightning_fm.objectives.couple`)."""
        trainer = attached_trainer(self) if distributed else None
        if trainer is None or trainer.world_size == 1:
            return couple(self.coupling, batch)
        return couple(self.coupling, batch, self.all_gather, trainer.global_rank, self.global_step)

    def loss(self, batch: dict[str, Tensor], distributed: bool = True) -> Tensor:
        """The objective's loss on the batch: pairs, points and targets in float32 (outside autocast), the network
        in the run's precision."""
        with self.full_precision():
            pairs = self.couple(batch, distributed)
            problem = self.objective.regression(pairs, self.training_labels, self.num_classes)
        return self.objective.loss(self.predict, problem)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(batch)
        if is_logging_step(self.trainer):  # a log call costs about a toy step's maths: at the written steps only
            self.log("train/loss", loss, prog_bar=True, batch_size=batch["x0"].shape[0])
        return loss

    # -- sampling and likelihood (every family) ----------------------------------------------------------------
    def predict(self, x: Tensor, s: Tensor, y: Tensor | None = None) -> Any:
        """The network at ``x`` and the objective's variable ``s`` (``t`` or ``z``) for labels ``y``."""
        raise NotImplementedError

    @torch.no_grad()
    def sample(
        self,
        x_source: Tensor,
        y: Tensor | None = None,
        record: bool | int = False,
        guidance: float | None = None,
        **overrides: Any,
    ) -> SampleResult:
        """Carry ``x_source`` to the target with the objective's sampler (``overrides``: its options for this call,
        e.g. ``steps=20, method="rk4"``). Field lines that did not return to the target plate are flagged in
        ``result.returned`` (a :class:`~lightning_fm.sampling.result.LinesNotReturnedWarning` says how many; the
        samples are ``result.x[result.kept()]``). With labels ``y`` and guidance ``w`` (default: ``model.guidance``) the
        network is guided, ``(1 + w) f(y) - w f(null)``, both evaluated in one batched call
        (:mod:`lightning_fm.sampling.guidance`)."""
        y = self.condition(y)
        w = guidance_scale(guidance, self.hparams.guidance, y, self.num_classes)
        net = conditioned(self.predict, y, w, self.num_classes, self.objective.combine_guidance)
        result = self.objective.sample(net, x_source, record, **overrides)
        warn_if_not_returned(result)  # field lines that stopped before the target plate are flagged, not samples
        return result

    def log_likelihood(
        self, x: Tensor, source_log_prob: LogProb | None = None, y: Tensor | None = None, **options: Any
    ) -> LikelihoodResult:
        """``log p_1(x) = log p_0(x(0)) - int_0^1 div v dt`` of the model's flow (``docs/concepts/likelihoods.md``):
        the objective's likelihood (``options``: its solver and divergence settings). ``source_log_prob``: ``log
        p_0``; None: the density of the source the model was fit from (:meth:`source_log_prob`, kept in its
        checkpoint; a ValueError where that source has no closed-form density), N(0, I) for a model never fit. With
        labels ``y`` (a class-conditional backbone): ``log p_1(x | y)``, no guidance. Call it in eval mode."""
        if source_log_prob is None:
            field = getattr(self, "field", None)
            no_flow = field is not None and not field.forward_only  # no density at all: the objective says why
            source_log_prob = standard_normal_log_prob if no_flow else self.source_log_prob()
        y = trainable_copy(self.condition(y))  # a validation batch's labels are inference tensors
        return self.objective.log_likelihood(lambda x_, s: self.predict(x_, s, y), x, source_log_prob, **options)
