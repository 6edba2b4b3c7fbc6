"""Conditional Flow Matching as a LightningModule (MATH.md §2.3, §7.1, §7.2)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_fm.couplings import Coupling, OTCoupling
from lightning_fm.likelihood import (
    LikelihoodResult,
    LogProb,
    log_likelihood,
    standard_normal_log_prob,
    trainable_copy,
)
from lightning_fm.models import MLP, FieldHead
from lightning_fm.modules.base import FlowMatchingModule, Pairs, superposition_groups
from lightning_fm.paths import GaussianPath, LinearPath
from lightning_fm.sampling import ODESampler, SampleResult
from lightning_fm.sampling.guidance import both_conditions, extrapolate

VELOCITY_TARGETS = ("single", "multi")


class CFMModule(FlowMatchingModule):
    """Regress ``v_theta(x_t, t, y)`` onto a CFM target and sample ``dx/dt = v_theta(x, t, y)`` from t=0 to t=1.

    loss = mean_b || v_theta(x_t[b], t[b], y[b]) - target[b] ||^2 with ``t ~ U[0,1]``, ``(x0, x1) ~ coupling``,
    ``x_t ~ p_t(.|x0, x1)``, ``y`` the target's class for a class-conditional backbone, and

    * ``velocity_target="single"``: the conditional velocity ``u_t(x_t | x0, x1)`` of the sample's own pair
      (standard CFM);
    * ``velocity_target="multi"``: the posterior-weighted average over pairs of the batch, own pair included,
      ``sum_j softmax_j(log p_t(x_t|c_j)) u_t(x_t|c_j)`` (the IFM superposition, MATH.md §6.7/§7.2; needs
      sigma > 0). ``charges``: superpose over groups of this many consecutive pairs of the global batch (the
      group of the point's own pair; the same groups under any number of processes), None: over all of them.
      A class-conditional model superposes only the pairs of the row's class (all of them for a dropped label).

    Args:
        backbone: the velocity network ``net(x, t, y=None)``; default ``MLP(data_shape=[2])``.
        path: the conditional path; default ``LinearPath(0.1)``. coupling: default exact minibatch OT.
        sampler: how ``sample`` integrates; default ``ODESampler("euler", 100)``.
        **kwargs: the optimiser, schedule and evaluation settings of :class:`FlowMatchingModule`.

    The defaults are the OT-CFM 2-D toy recipe (64-wide MLP, sigma = 0.1, exact minibatch OT, Adam 1e-3).
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        path: GaussianPath | None = None,
        coupling: Coupling | None = None,
        sampler: ODESampler | None = None,
        velocity_target: str = "single",
        charges: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backbone = self.component("backbone", backbone, MLP(data_shape=[2]))
        if isinstance(self.backbone, FieldHead):
            raise ValueError("model.backbone is a FieldHead (an IFM output (f_z, f_x)); CFMModule needs a velocity "
                             "backbone such as lightning_fm.models.MLP")
        self.path = self.component("path", path, LinearPath(0.1))
        self.coupling = self.component("coupling", coupling, OTCoupling("exact"))
        self.sampler = self.component("sampler", sampler, ODESampler())
        if velocity_target not in VELOCITY_TARGETS:
            raise ValueError(f"model.velocity_target={velocity_target!r} is unknown; choose one of "
                             f"{list(VELOCITY_TARGETS)}")
        if charges is not None and (charges < 1 or velocity_target != "multi"):
            raise ValueError(f"model.charges={charges} needs velocity_target='multi' and charges >= 1 (null: the "
                             "whole batch)")
        if velocity_target == "multi" and float(self.path.sigma(torch.tensor([0.5]))) <= 0:
            raise ValueError("model.velocity_target='multi' weights pairs by p_t(x|c): it needs a path with sigma > 0")
        if not isinstance(self.sampler, ODESampler):
            raise ValueError(f"model.sampler must be an ODESampler (CFM integrates in t), got "
                             f"{type(self.sampler).__name__}")

    def check_data(self, datamodule, data_shape) -> None:
        super().check_data(datamodule, data_shape)
        if self.path.requires_gaussian_source and not getattr(datamodule, "source_is_standard_normal", False):
            raise ValueError(
                f"model.path={type(self.path).__name__} is only valid for a N(0, I) source, "
                f"but the data module's source is not (data.source={getattr(datamodule.hparams, 'source', '?')!r})"
            )

    def velocity(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The learned velocity ``v_theta(x, t, y)``."""
        return self.backbone(x, t, y)

    def regression_target(self, pairs: Pairs, t: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Training points ``x_t`` of this process's pairs at times ``t`` and their target velocity: the pair's own
        (single), or superposed over the global batch's pairs in groups of ``charges`` and, for a class-conditional
        model, over the pairs of the row's class ``labels`` (all classes for a dropped label:
        :func:`~lightning_fm.modules.base.superposition_groups`)."""
        sample = self.path.sample(pairs.x0, pairs.x1, t)
        if self.hparams.velocity_target == "single":
            return sample.xt, sample.ut
        total = pairs.all_x0.shape[0]
        group = min(self.hparams.charges or total, total)
        if group == total and labels is None:
            return sample.xt, self.path.posterior(sample.xt, t, pairs.all_x0, pairs.all_x1).velocity
        rows_group = (pairs.offset + torch.arange(len(t), device=t.device)) // group
        charges_group = torch.arange(total, device=t.device) // group
        target = torch.empty_like(sample.xt)
        for rows, charges in superposition_groups(rows_group, charges_group, labels, pairs.all_y1,
                                                  self.num_classes):
            target[rows] = self.path.posterior(sample.xt[rows], t[rows], pairs.all_x0[charges],
                                               pairs.all_x1[charges]).velocity
        return sample.xt, target

    def loss(self, batch: dict[str, Tensor], distributed: bool = True) -> Tensor:
        with self.full_precision():  # the pairs and the target in float32 under bf16-mixed
            pairs = self.couple(batch, distributed)
            t = torch.rand(pairs.x0.shape[0], device=pairs.x0.device, dtype=pairs.x0.dtype)
            labels = self.training_labels(pairs.y1)
            xt, ut = self.regression_target(pairs, t, labels)
        return (self.velocity(xt, t, labels).float() - ut).pow(2).mean()

    @torch.no_grad()
    def sample(self, x_source: Tensor, y: Tensor | None = None, record: bool | int = False,
               guidance: float | None = None, **overrides: Any) -> SampleResult:
        """Integrate ``dx/dt = v_theta(x, t, y)`` from ``x(0) = x_source`` to t = 1 with ``self.sampler``
        (``overrides``: sampler options for this call, e.g. ``steps=20, method="rk4"``). With labels ``y`` and
        guidance ``w`` (default: ``model.guidance``) the velocity is ``(1 + w) v(x, t | y) - w v(x, t | null)``,
        both evaluated in one batched call (:mod:`lightning_fm.sampling.guidance`)."""
        y = self.condition(y)
        w = self.guidance_scale(guidance, y)
        if w:
            def velocity(t: Tensor, x: Tensor) -> Tensor:
                return extrapolate(*both_conditions(self.velocity, x, t, y, self.num_classes), w)
        else:
            def velocity(t: Tensor, x: Tensor) -> Tensor:
                return self.velocity(x, t, y)
        return self.sampler(velocity, x_source, record, **overrides)

    def log_likelihood(self, x: Tensor, source_log_prob: LogProb | None = None, y: Tensor | None = None,
                       **options: Any) -> LikelihoodResult:
        """``log p_1(x)`` of the model's flow ``dx/dt = v_theta(x, t, y)`` (MATH.md §6.5b): ``log p_0(x(0)) -
        int_0^1 div v_theta dt`` along the line through ``x`` (:func:`lightning_fm.likelihood.log_likelihood`;
        ``options``: its solver and divergence settings). ``source_log_prob``: ``log p_0``; None is N(0, I) (the
        image and Gaussian-source configs). With labels ``y`` (a class-conditional backbone): ``log p_1(x | y)``, no
        guidance. Call it in eval mode."""
        y = trainable_copy(self.condition(y))  # a validation batch's labels are inference tensors
        return log_likelihood(lambda x_, t: self.velocity(x_, t, y), x,
                              standard_normal_log_prob if source_log_prob is None else source_log_prob, **options)
