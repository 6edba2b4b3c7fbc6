"""Interaction Field Matching as a LightningModule (MATH.md §4, §5, §7.3-§7.5, §8).

The network ``f(z, x) = (f_z, f_x)`` regresses the normalised superposed field of the batch's pairs,
``sqrt(D+1) E_pi / ||E_pi||``, at training points drawn by a volume sampler between the plates. Samples move along
the learned field from the source plate z = 0 to the target plate z = L (``dx/dz = f_x / f_z``); for fields that are
not forward-only (EFM), lines that cross the target plate are continued by arclength until they return to it, and
the number that never return is reported as ``not_returned``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_fm.couplings import Coupling, IndependentCoupling
from lightning_fm.field_lines import integrate_field_lines
from lightning_fm.fields import InteractionField, StrongInteractionField
from lightning_fm.models import MLP
from lightning_fm.modules.base import FlowMatchingModule, SampleResult
from lightning_fm.volume import UniformVolume, VolumeSampler


class IFMModule(FlowMatchingModule):
    """Field matching: ``loss = mean_i ||f(z_i, x_i) - sqrt(D+1) n(z_i, x_i)||^2 / (D+1)`` where ``n`` is the unit
    direction of the field superposed over all B pairs of the batch and the b = ``n_points`` training points are
    built by ``volume`` from the first b pairs (IFM code: B = 256, b = 64).

    The backbone is called ``net(x, z / L)`` (time input normalised to [0, 1] inside the slab) and must return the
    pair ``(f_z, f_x)`` (e.g. ``MLP(field_head=True)``).

    Args:
        field: the interaction field (StrongInteractionField, CoulombField, ForwardOnlyField).
        coupling: the transport plan of the superposition (IFM-MB = minibatch OT).
        volume: where training points are drawn (UniformVolume, PFGMMixing, PathVolume).
        n_points: training points per step (None = one per pair of the batch).
        continue_outside: continue lines past the target plate by arclength (default: when the field is not
            forward-only). max_arc_steps, arc_step: caps of that continuation.
        return_tol, cross_probe, fz_min_rel: sampler options of
            :func:`lightning_fm.field_lines.integrate_field_lines` (defaults: the reference EFM toy sampler).
            For a learned EFM field, ``cross_probe`` decides the crossing by the sign of ``f_z`` just behind the
            plate (where the true field jumps), ``return_tol`` ends returning lines above the layer where a
            finite-batch target is dominated by single charges, and ``fz_min_rel`` bounds phase-1 slopes.
    """

    component_names = ("backbone", "field", "coupling", "volume")
    time_label = "z"

    def __init__(
        self,
        backbone: nn.Module | None = None,
        field: InteractionField | None = None,
        coupling: Coupling | None = None,
        volume: VolumeSampler | None = None,
        n_points: int | None = None,
        continue_outside: bool | None = None,
        arc_step: float = 0.05,
        max_arc_steps: int = 2000,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        sample_steps: int = 100,
        sample_method: str = "euler",
        val_trajectories: int = 64,
        w2_max_samples: int = 5000,
        return_tol: float = 0.05,
        cross_probe: float = 0.0,
        fz_min_rel: float = 0.0,
    ) -> None:
        super().__init__(lr, weight_decay, betas, warmup_steps, sample_steps, sample_method, val_trajectories,
                         w2_max_samples)
        self.line_options = {"return_tol": float(return_tol), "cross_probe": float(cross_probe),
                             "fz_min_rel": float(fz_min_rel)}
        parts = self._register_components(
            backbone=backbone if backbone is not None else MLP(field_head=True),
            field=field if field is not None else StrongInteractionField(L=1.0, scale=1.0),
            coupling=coupling if coupling is not None else IndependentCoupling(),
            volume=volume if volume is not None else UniformVolume(),
        )
        self._init_field_model(parts["backbone"], parts["field"], parts["coupling"], parts["volume"], n_points,
                               continue_outside, arc_step, max_arc_steps)

    def _init_field_model(self, backbone, field, coupling, volume, n_points, continue_outside, arc_step,
                          max_arc_steps) -> None:
        if n_points is not None and n_points < 1:
            raise ValueError(f"model.n_points must be >= 1 (or null for the whole batch), got {n_points}")
        if not getattr(backbone, "field_head", True):
            raise ValueError("model.backbone must output (f_z, f_x): build it with field_head: true")
        self.backbone, self.field, self.coupling, self.volume = backbone, field, coupling, volume
        self.n_points = n_points
        self.continue_outside = (not field.forward_only) if continue_outside is None else continue_outside
        self.arc_step, self.max_arc_steps = arc_step, max_arc_steps

    @property
    def L(self) -> float:
        return float(self.field.L)

    def field_output(self, z: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """The learned field ``(f_z, f_x)`` at ``(z, x)``."""
        return self.backbone(x, z / self.L)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        pairs = self.couple(batch)  # under DDP the superposition runs over the global batch's pairs
        b = min(self.n_points or pairs.x0.shape[0], pairs.x0.shape[0])
        z, x = self.volume(pairs.x0[:b], pairs.x1[:b], self.L)
        with torch.no_grad():
            target_z, target_x = self.field.target(z, x, pairs.all_x0, pairs.all_x1)
        f_z, f_x = self.field_output(z, x)
        squared = (f_z - target_z).pow(2) + (f_x - target_x).pow(2).flatten(1).sum(1)
        return squared.mean() / (x[0].numel() + 1)

    @torch.no_grad()
    def sample(self, x_source: Tensor, steps: int | None = None, method: str | None = None,
               record: bool = False) -> SampleResult:
        """Move ``x_source`` (on the plate z = 0) along the learned field to the plate z = L."""
        lines = integrate_field_lines(
            self.field_output,
            x_source,
            self.L,
            method=method or self.hparams.sample_method,
            steps=steps or self.hparams.sample_steps,
            continue_outside=self.continue_outside,
            arc_step=self.arc_step,
            max_arc_steps=self.max_arc_steps,
            record=record,
            eps=0.0,  # a learned field is smooth at the plate: start exactly on it, as CFM starts at t = 0
            **self.line_options,
        )
        info = {"not_returned": float(lines.n_not_returned), "backward": float(lines.n_backward)}
        return SampleResult(lines.x, lines.nfe, lines.z, lines.trajectory, info, lines.arc_trajectory)
