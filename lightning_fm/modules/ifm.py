"""Interaction Field Matching as a LightningModule (MATH.md §4, §5, §7.3-§7.5, §8).

The network ``f(z, x) = (f_z, f_x)`` regresses the normalised superposed field of the batch's pairs,
``sqrt(D+1) E_pi / ||E_pi||``, at training points drawn by a volume sampler between the plates. Samples move along
the learned field from the source plate z = 0 to the target plate z = L (``dx/dz = f_x / f_z``); for fields that are
not forward-only (EFM), lines that cross the target plate are continued by arclength until they return to it, and
the number that never return is reported as ``not_returned``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_fm.couplings import Coupling, IndependentCoupling
from lightning_fm.fields import InteractionField, StrongInteractionField
from lightning_fm.fields.volume import UniformVolume, VolumeSampler
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
