"""The interaction-field objective (IFM: Manukhov et al., arXiv 2506.02950; EFM: Kolesov et al., arXiv 2502.02367):
the pure maths of a field model, its training target and loss, its field-line sampler call and, for a forward-only
field, its likelihood through the duality. No Lightning.

loss = mean_i || f(z_i, x_i) - sqrt(D+1) n(z_i, x_i) ||^2 / (D+1), where ``n`` is the unit direction of the field
superposed over all pairs of the (global) batch (for a class-conditional network: the pairs of the point's class)
and the training points ``(z_i, x_i)`` are drawn by ``volume`` from the first ``n_points`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor

from lightning_fm.duality.wrappers import FieldAsVelocity
from lightning_fm.fields import InteractionField
from lightning_fm.fields.volume import VolumeSampler
from lightning_fm.likelihood import LikelihoodResult, LogProb, log_likelihood
from lightning_fm.objectives.labels import Network
from lightning_fm.objectives.pairs import Pairs, superposition_groups
from lightning_fm.objectives.regression import DropLabels, Regression
from lightning_fm.sampling import FieldLineSampler, SampleResult
from lightning_fm.sampling.guidance import guided_field

Field = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class FieldObjective:
    """Field matching on ``field`` (module docstring), sampled along the learned lines with ``sampler``."""

    time_label = "z"

    def __init__(
        self, field: InteractionField, volume: VolumeSampler, sampler: FieldLineSampler, n_points: int | None = None
    ) -> None:
        if not isinstance(sampler, FieldLineSampler):
            raise ValueError(
                f"model.sampler must be a FieldLineSampler (IFM follows field lines in z), got {type(sampler).__name__}"
            )
        if n_points is not None and n_points < 1:
            raise ValueError(f"model.n_points must be >= 1 (or null for the whole batch), got {n_points}")
        self.field, self.volume, self.sampler, self.n_points = field, volume, sampler, n_points

    @property
    def L(self) -> float:
        return float(self.field.L)

    def target(
        self, z: Tensor, x: Tensor, labels: Tensor | None, pairs: Pairs, null_class: int = 0
    ) -> tuple[Tensor, Tensor]:
        """The regression target at the points ``(z, x)``: the field superposed over all pairs of the global
        batch, or, for a class-conditional model, over the pairs of each point's class (all pairs for points whose
        label was dropped, ``null_class``)."""
        if labels is None:
            return self.field.target(z, x, pairs.all_x0, pairs.all_x1)
        if pairs.all_y1 is None:
            raise ValueError("class-conditional field targets need the labels of the pairs (the batch's y1)")
        target_z, target_x = torch.empty_like(z), torch.empty_like(x)
        none = torch.zeros(len(z), dtype=torch.long, device=z.device)
        for rows, charges in superposition_groups(
            none, torch.zeros_like(pairs.all_y1), labels, pairs.all_y1, null_class
        ):
            target_z[rows], target_x[rows] = self.field.target(
                z[rows], x[rows], pairs.all_x0[charges], pairs.all_x1[charges]
            )
        return target_z, target_x

    def regression(self, pairs: Pairs, drop_labels: DropLabels, null_class: int) -> Regression:
        """A training step's problem: ``n_points`` points from the volume, the labels after dropout, the targets."""
        b = min(self.n_points or pairs.x0.shape[0], pairs.x0.shape[0])
        z, x = self.volume(pairs.x0[:b], pairs.x1[:b], self.L)
        labels = drop_labels(pairs.y1)
        labels = None if labels is None else labels[:b]
        with torch.no_grad():
            target = self.target(z, x, labels, pairs, null_class)
        return Regression(z, x, labels, target)

    @staticmethod
    def loss(field: Network, problem: Regression) -> Tensor:
        """``mean (||f_z - target_z||^2 + ||f_x - target_x||^2) / (D + 1)`` (the network's output in float32)."""
        f_z, f_x = (f.float() for f in field(problem.x, problem.time, problem.labels))
        target_z, target_x = problem.target
        squared = (f_z - target_z).pow(2) + (f_x - target_x).pow(2).flatten(1).sum(1)
        return squared.mean() / (problem.x[0].numel() + 1)

    def combine_guidance(self, conditional: Any, unconditional: Any, w: float) -> tuple[Tensor, Tensor]:
        """Classifier-free guidance of fields (:func:`lightning_fm.sampling.guidance.guided_field`: in velocity
        space for a forward-only field, exactly as its dual CFM; on the outputs otherwise)."""
        return guided_field(conditional, unconditional, w, self.field.forward_only)

    def sample(self, field: Field, x_source: Tensor, record: bool | int = False, **overrides: Any) -> SampleResult:
        """Move ``x_source`` (on the plate z = 0) along ``field(z, x)`` to the plate z = L; lines of a field that is
        not forward-only are continued past the target plate until they return (``overrides``: sampler options)."""
        return self.sampler(field, x_source, self.L, record, forward_only=self.field.forward_only, **overrides)

    def log_likelihood(
        self,
        field: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]],
        x: Tensor,
        source_log_prob: LogProb,
        min_fz: float = 1e-6,
        **options: Any,
    ) -> LikelihoodResult:
        """``log p_1(x)`` of a forward-only field ``field(x, z)`` read as the velocity ``v(x, t) = L f_x / f_z`` at
        ``z = t L`` (the map Psi, :class:`~lightning_fm.duality.FieldAsVelocity`), then ``log p_0(x(0)) -
        int_0^1 div v dt`` (``options``: the solver and divergence settings of
        :func:`lightning_fm.likelihood.log_likelihood`).

        Where ``f_z <= min_fz`` the division is guarded (``v = 0`` there): ``result.guarded`` flags the lines with
        such an evaluation (their ``log_prob`` is then not the model's density) and ``result.info`` counts
        ``guarded_evaluations`` of all ``evaluations``. A field that is not forward-only raises a ValueError: z is
        not a time there and there is no density.
        """
        if not self.field.forward_only:
            raise ValueError(
                f"a model with field {type(self.field).__name__} has no likelihood: the field is not forward-only "
                "(E_z <= 0 somewhere, its lines turn back in z and leave the slab), so z is not a time, the lines "
                "are not a flow in t and carry no density (docs/concepts/likelihoods.md#forward-only-fields)"
            )
        dual = FieldAsVelocity(SimpleNamespace(L=self.L, field_output=lambda z, x_: field(x_, z)), min_fz)
        masks: list[Tensor] = []

        def velocity(x_: Tensor, t: Tensor) -> Tensor:
            v = dual.velocity(x_, t)
            assert dual.last_invalid is not None  # set by every velocity() call
            masks.append(dual.last_invalid)
            return v

        result = log_likelihood(velocity, x, source_log_prob, **options)
        result.guarded = torch.stack(masks).any(0) if masks else torch.zeros(len(x), dtype=torch.bool, device=x.device)
        result.info.update(guarded_evaluations=float(dual.n_invalid), evaluations=float(dual.n_evaluated))
        return result
