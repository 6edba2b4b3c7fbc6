"""The CFM objective (Lipman et al. 2023, arXiv 2210.02747; Tong et al. 2024, arXiv 2302.00482): the pure maths of a
velocity model, its training target and loss, its sampler call and its likelihood. No Lightning.

loss = mean_b || v(x_t[b], t[b], y[b]) - target[b] ||^2 with ``t ~ time_sampler`` (default ``U[0, 1]``), ``(x0, x1)``
the coupled pairs,
``x_t ~ p_t(.|x0, x1)`` and

* ``velocity_target="single"``: the conditional velocity ``u_t(x_t | x0, x1)`` of the point's own pair;
* ``velocity_target="multi"``: the posterior-weighted average over the batch's pairs, own pair included,
  ``sum_j softmax_j(log p_t(x_t | c_j)) u_t(x_t | c_j)`` (the IFM superposition read as a velocity,
  ``docs/concepts/duality.md#multi-sample-target``), in groups of ``charges`` consecutive pairs of the global batch.

A non-uniform time density (:mod:`lightning_fm.time_samplers`) only reweights the times: at each ``t`` the loss is
still minimised by the marginal velocity ``u_t(x)``, so the minimiser is unchanged wherever the density is positive
(docs/concepts/flow-matching.md#time-sampling).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lightning_fm.likelihood import LikelihoodResult, LogProb, log_likelihood
from lightning_fm.objectives.pairs import Pairs, superposition_groups
from lightning_fm.objectives.regression import DropLabels, Regression
from lightning_fm.paths import GaussianPath
from lightning_fm.sampling import ODESampler, SampleResult
from lightning_fm.sampling.guidance import extrapolate
from lightning_fm.time_samplers import TimeSampler, UniformTime

VELOCITY_TARGETS = ("single", "multi")


class VelocityObjective:
    """CFM on ``path`` (module docstring), trained at times from ``time_sampler`` (None: ``UniformTime()``, the
    ``torch.rand`` draw of old) and sampled with ``sampler`` from t = 0 to t = 1."""

    time_label = "t"

    def __init__(
        self,
        path: GaussianPath,
        sampler: ODESampler,
        velocity_target: str = "single",
        charges: int | None = None,
        time_sampler: TimeSampler | None = None,
    ) -> None:
        if velocity_target not in VELOCITY_TARGETS:
            raise ValueError(
                f"model.velocity_target={velocity_target!r} is unknown; choose one of {list(VELOCITY_TARGETS)}"
            )
        if charges is not None and (charges < 1 or velocity_target != "multi"):
            raise ValueError(
                f"model.charges={charges} needs velocity_target='multi' and charges >= 1 (null: the whole batch)"
            )
        if velocity_target == "multi" and float(path.sigma(torch.tensor([0.5]))) <= 0:
            raise ValueError("model.velocity_target='multi' weights pairs by p_t(x|c): it needs a path with sigma > 0")
        if not isinstance(sampler, ODESampler):
            raise ValueError(f"model.sampler must be an ODESampler (CFM integrates in t), got {type(sampler).__name__}")
        if time_sampler is not None and not isinstance(time_sampler, TimeSampler):
            raise ValueError(
                f"model.time_sampler must be a lightning_fm.time_samplers sampler, got {type(time_sampler).__name__}"
            )
        self.path, self.sampler = path, sampler
        self.time_sampler = time_sampler if time_sampler is not None else UniformTime()
        self.velocity_target, self.charges = velocity_target, charges

    def regression_target(
        self, pairs: Pairs, t: Tensor, labels: Tensor | None = None, null_class: int = 0
    ) -> tuple[Tensor, Tensor]:
        """Training points ``x_t`` of this process's pairs at times ``t`` and their target velocity: the pair's own
        (single), or superposed over the global batch's pairs in groups of ``charges`` and, for a class-conditional
        model, over the pairs of the row's class ``labels`` (all classes for a dropped label, ``null_class``)."""
        sample = self.path.sample(pairs.x0, pairs.x1, t)
        if self.velocity_target == "single":
            return sample.xt, sample.ut
        total = pairs.all_x0.shape[0]
        group = min(self.charges or total, total)
        if group == total and labels is None:
            return sample.xt, self.path.posterior(sample.xt, t, pairs.all_x0, pairs.all_x1).velocity
        rows_group = (pairs.offset + torch.arange(len(t), device=t.device)) // group
        charges_group = torch.arange(total, device=t.device) // group
        target = torch.empty_like(sample.xt)
        for rows, charges in superposition_groups(rows_group, charges_group, labels, pairs.all_y1, null_class):
            target[rows] = self.path.posterior(
                sample.xt[rows], t[rows], pairs.all_x0[charges], pairs.all_x1[charges]
            ).velocity
        return sample.xt, target

    def regression(self, pairs: Pairs, drop_labels: DropLabels, null_class: int) -> Regression:
        """A training step's problem: ``t ~ time_sampler`` (torch's global generator), the labels after dropout, the
        points and their targets."""
        t = self.time_sampler.sample(pairs.x0.shape[0], None, pairs.x0.device, pairs.x0.dtype)
        labels = drop_labels(pairs.y1)
        xt, ut = self.regression_target(pairs, t, labels, null_class)
        return Regression(t, xt, labels, ut)

    @staticmethod
    def loss(velocity: Callable[[Tensor, Tensor, Tensor | None], Tensor], problem: Regression) -> Tensor:
        """``mean || v(x, t, y) - target ||^2`` (the network's output in float32)."""
        return (velocity(problem.x, problem.time, problem.labels).float() - problem.target).pow(2).mean()

    #: classifier-free guidance of velocities: ``(1 + w) v(y) - w v(null)``
    combine_guidance = staticmethod(extrapolate)

    def sample(
        self,
        velocity: Callable[[Tensor, Tensor], Tensor],
        x_source: Tensor,
        record: bool | int = False,
        **overrides: Any,
    ) -> SampleResult:
        """Integrate ``dx/dt = velocity(t, x)`` from ``x(0) = x_source`` to t = 1 (``overrides``: sampler options)."""
        return self.sampler(velocity, x_source, record, **overrides)

    @staticmethod
    def log_likelihood(
        velocity: Callable[[Tensor, Tensor], Tensor], x: Tensor, source_log_prob: LogProb, **options: Any
    ) -> LikelihoodResult:
        """``log p_1(x) = log p_0(x(0)) - int_0^1 div v dt`` of ``velocity(x, t)``
        (:func:`lightning_fm.likelihood.log_likelihood`; ``options``: its solver and divergence settings)."""
        return log_likelihood(velocity, x, source_log_prob, **options)
