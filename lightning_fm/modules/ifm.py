"""Interaction Field Matching as a LightningModule (MATH.md §4, §5, §7.3-§7.5, §8).

The network ``f(z, x) = (f_z, f_x)`` regresses the normalised superposed field of the batch's pairs,
``sqrt(D+1) E_pi / ||E_pi||``, at training points drawn by a volume sampler between the plates. Samples move along
the learned field from the source plate z = 0 to the target plate z = L (``dx/dz = f_x / f_z``); for fields that are
not forward-only (EFM), lines that cross the target plate are continued by arclength until they return to it, and
the number that never return is reported as ``not_returned``.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import Tensor, nn

from lightning_fm.couplings import Coupling, IndependentCoupling
from lightning_fm.duality.wrappers import FieldAsVelocity
from lightning_fm.fields import InteractionField, StrongInteractionField
from lightning_fm.fields.volume import UniformVolume, VolumeSampler
from lightning_fm.likelihood import (
    LikelihoodResult,
    LogProb,
    log_likelihood,
    standard_normal_log_prob,
    trainable_copy,
)
from lightning_fm.models import MLP, FieldHead
from lightning_fm.modules.base import FlowMatchingModule, Pairs, superposition_groups
from lightning_fm.sampling import FieldLineSampler, SampleResult
from lightning_fm.sampling.guidance import both_conditions, guided_field


class IFMModule(FlowMatchingModule):
    """Field matching: ``loss = mean_i ||f(z_i, x_i) - sqrt(D+1) n(z_i, x_i)||^2 / (D+1)`` where ``n`` is the unit
    direction of the field superposed over all B pairs of the (global) batch (for a class-conditional backbone:
    over the pairs of the point's class, :meth:`target`) and the b = ``n_points`` training points are built by
    ``volume`` from the first b pairs (IFM code: B = 256, b = 64).

    Args:
        backbone: a :class:`~lightning_fm.models.FieldHead` around a velocity backbone (it returns ``(f_z, f_x)``),
            called ``net(x, z / L, y)``: the time input is z normalised to [0, 1] inside the slab (EFM also trains
            behind the target plate, z / L > 1). Default ``FieldHead(MLP(data_shape=[2]))``.
        field: the interaction field (StrongInteractionField, CoulombField, ForwardOnlyField).
        coupling: the transport plan of the superposition (IFM-MB = minibatch OT).
        volume: where training points are drawn (UniformVolume, PFGMMixing, GaussianMixing, PathVolume,
            SlabAndBeyondVolume).
        sampler: how ``sample`` follows the learned lines; default ``FieldLineSampler("euler", 100)``, continued
            past the target plate when the field is not forward-only.
        n_points: training points per step (None = one per pair of the batch).
        **kwargs: the optimiser, schedule and evaluation settings of :class:`FlowMatchingModule`.
    """

    time_label = "z"

    def __init__(
        self,
        backbone: nn.Module | None = None,
        field: InteractionField | None = None,
        coupling: Coupling | None = None,
        volume: VolumeSampler | None = None,
        sampler: FieldLineSampler | None = None,
        n_points: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backbone = self.component("backbone", backbone, FieldHead(MLP(data_shape=[2])))
        if not isinstance(self.backbone, FieldHead):
            raise ValueError(f"model.backbone must give the field (f_z, f_x): wrap it as lightning_fm.models.FieldHead "
                             f"(got {type(self.backbone).__name__})")
        self.field = self.component("field", field, StrongInteractionField(L=1.0, scale=1.0))
        self.coupling = self.component("coupling", coupling, IndependentCoupling())
        self.volume = self.component("volume", volume, UniformVolume())
        self.sampler = self.component("sampler", sampler, FieldLineSampler())
        if not isinstance(self.sampler, FieldLineSampler):
            raise ValueError(f"model.sampler must be a FieldLineSampler (IFM follows field lines in z), got "
                             f"{type(self.sampler).__name__}")
        if n_points is not None and n_points < 1:
            raise ValueError(f"model.n_points must be >= 1 (or null for the whole batch), got {n_points}")
        self.n_points = n_points

    @property
    def L(self) -> float:
        return float(self.field.L)

    def field_output(self, z: Tensor, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The learned field ``(f_z, f_x)`` at ``(z, x)`` (for class ``y``)."""
        return self.backbone(x, z / self.L, y)

    def loss(self, batch: dict[str, Tensor], distributed: bool = True) -> Tensor:
        with self.full_precision():  # the pairs, the points and the field target in float32 under bf16-mixed
            pairs = self.couple(batch, distributed)  # under DDP the superposition runs over the global batch's pairs
            b = min(self.n_points or pairs.x0.shape[0], pairs.x0.shape[0])
            z, x = self.volume(pairs.x0[:b], pairs.x1[:b], self.L)
            y = self.training_labels(pairs.y1)
            y = None if y is None else y[:b]
            with torch.no_grad():
                target_z, target_x = self.target(z, x, y, pairs)
        f_z, f_x = (f.float() for f in self.field_output(z, x, y))
        squared = (f_z - target_z).pow(2) + (f_x - target_x).pow(2).flatten(1).sum(1)
        return squared.mean() / (x[0].numel() + 1)

    def target(self, z: Tensor, x: Tensor, labels: Tensor | None, pairs: Pairs) -> tuple[Tensor, Tensor]:
        """The regression target at the points ``(z, x)``: the field superposed over all pairs of the global
        batch, or, for a class-conditional model, over the pairs of each point's class (all pairs for points whose
        label was dropped: :func:`~lightning_fm.modules.base.superposition_groups`)."""
        if labels is None:
            return self.field.target(z, x, pairs.all_x0, pairs.all_x1)
        target_z, target_x = torch.empty_like(z), torch.empty_like(x)
        none = torch.zeros(len(z), dtype=torch.long, device=z.device)
        for rows, charges in superposition_groups(none, torch.zeros_like(pairs.all_y1), labels, pairs.all_y1,
                                                  self.num_classes):
            target_z[rows], target_x[rows] = self.field.target(z[rows], x[rows], pairs.all_x0[charges],
                                                               pairs.all_x1[charges])
        return target_z, target_x

    @torch.no_grad()
    def sample(self, x_source: Tensor, y: Tensor | None = None, record: bool | int = False,
               guidance: float | None = None, **overrides: Any) -> SampleResult:
        """Move ``x_source`` (on the plate z = 0) along the learned field to the plate z = L with ``self.sampler``
        (``overrides``: sampler options for this call). With labels ``y`` and guidance ``w`` (default:
        ``model.guidance``) the field is guided (:func:`lightning_fm.sampling.guidance.guided_field`: in velocity
        space for a forward-only field, exactly as the dual CFM; on the outputs otherwise)."""
        y = self.condition(y)
        w = self.guidance_scale(guidance, y)
        forward_only = self.field.forward_only
        if w:
            def field_fn(z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
                predictions = both_conditions(lambda x2, z2, y2: self.field_output(z2, x2, y2), x, z, y,
                                              self.num_classes)
                return guided_field(*predictions, w, forward_only)
        else:
            def field_fn(z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
                return self.field_output(z, x, y)
        return self.sampler(field_fn, x_source, self.L, record, forward_only=forward_only, **overrides)

    def log_likelihood(self, x: Tensor, source_log_prob: LogProb | None = None, y: Tensor | None = None,
                       min_fz: float = 1e-6, **options: Any) -> LikelihoodResult:
        """``log p_1(x)`` of a forward-only field model through the duality (MATH.md §6.5b): the learned field read
        as the velocity ``v(x, t) = L f_x / f_z`` at ``z = t L`` (Psi, :class:`~lightning_fm.duality.FieldAsVelocity`),
        then ``log p_0(x(0)) - int_0^1 div v dt`` (:func:`lightning_fm.likelihood.log_likelihood`; ``options``: its
        solver and divergence settings). ``source_log_prob``: ``log p_0`` at z = 0; None is N(0, I). With labels
        ``y``: ``log p_1(x | y)``, no guidance. Call it in eval mode.

        Where the learned ``f_z <= min_fz`` the division is guarded (``v = 0`` there): ``result.guarded`` flags the
        lines with such an evaluation (their ``log_prob`` is then not the model's density) and ``result.info``
        counts ``guarded_evaluations`` of all ``evaluations`` (points times solver stages). A field that is not
        forward-only (EFM) raises a ValueError: z is not a time there and there is no density.
        """
        if not self.field.forward_only:
            raise ValueError(
                f"{type(self).__name__} with field {type(self.field).__name__} has no likelihood: the field is not "
                "forward-only (E_z <= 0 somewhere, its lines turn back in z and leave the slab), so z is not a time, "
                "the lines are not a flow in t and carry no density (MATH.md §6.5b, §6.6)")
        y = trainable_copy(self.condition(y))  # a validation batch's labels are inference tensors
        conditioned = SimpleNamespace(L=self.L, field_output=lambda z, x_: self.field_output(z, x_, y))
        dual = FieldAsVelocity(conditioned, min_fz)
        masks: list[Tensor] = []

        def velocity(x_: Tensor, t: Tensor) -> Tensor:
            v = dual.velocity(x_, t)
            masks.append(dual.last_invalid)
            return v

        result = log_likelihood(velocity, x, standard_normal_log_prob if source_log_prob is None else source_log_prob,
                                **options)
        result.guarded = torch.stack(masks).any(0) if masks else torch.zeros(len(x), dtype=torch.bool, device=x.device)
        result.info.update(guarded_evaluations=float(dual.n_invalid), evaluations=float(dual.n_evaluated))
        return result
