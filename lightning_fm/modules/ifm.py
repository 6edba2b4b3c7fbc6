"""Interaction Field Matching as a LightningModule: the components of a field model and the Lightning glue; the
maths is :class:`~lightning_fm.objectives.FieldObjective`.

The network ``f(z, x) = (f_z, f_x)`` regresses the normalised superposed field of the batch's pairs,
``sqrt(D+1) E_pi / ||E_pi||``, at training points drawn by a volume sampler between the plates. Samples move along
the learned field from the source plate z = 0 to the target plate z = L (``dx/dz = f_x / f_z``); for fields that are
not forward-only (EFM), lines that cross the target plate are continued by arclength until they return to it, and
the number that never return is reported as ``not_returned``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_fm.couplings import Coupling, IndependentCoupling
from lightning_fm.fields import InteractionField, StrongInteractionField
from lightning_fm.fields.volume import UniformVolume, VolumeSampler
from lightning_fm.models import MLP, FieldHead
from lightning_fm.modules.base import FlowMatchingModule
from lightning_fm.objectives import FieldObjective
from lightning_fm.sampling import FieldLineSampler


class IFMModule(FlowMatchingModule):
    """Field matching: ``loss = mean_i ||f(z_i, x_i) - sqrt(D+1) n(z_i, x_i)||^2 / (D+1)`` where ``n`` is the unit
    direction of the field superposed over all B pairs of the (global) batch (for a class-conditional backbone:
    over the pairs of the point's class) and the b = ``n_points`` training points are built by ``volume`` from the
    first b pairs (IFM code: B = 256, b = 64; :class:`~lightning_fm.objectives.FieldObjective`).

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

    ``log_likelihood(x, ..., min_fz=1e-6)`` of a forward-only field reads it as the velocity ``L f_x / f_z``
    (:meth:`~lightning_fm.objectives.FieldObjective.log_likelihood`); a field that is not forward-only has none.
    """

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
        self.backbone = self.build_backbone(backbone, FieldHead(MLP(data_shape=[2])), gives_field=True)
        self.field = self.component("field", field, StrongInteractionField(L=1.0, scale=1.0))
        self.coupling = self.component("coupling", coupling, IndependentCoupling())
        self.volume = self.component("volume", volume, UniformVolume())
        self.sampler = self.component("sampler", sampler, FieldLineSampler())
        self.objective = FieldObjective(self.field, self.volume, self.sampler, n_points)

    @property
    def L(self) -> float:
        return float(self.field.L)

    def predict(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The learned field ``(f_z, f_x)`` at ``(z, x)`` for class ``y``: ``backbone(x, z / L, y)``."""
        return self.backbone(x, z / self.L, y)

    def field_output(self, z: Tensor, x: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The learned field ``(f_z, f_x)`` at ``(z, x)`` (for class ``y``)."""
        return self.predict(x, z, y)
