"""Forward-only IFM: field matching on the space-time current of a CFM path (the dual of CFMModule,
docs/concepts/duality.md#forward-only-target)."""

from __future__ import annotations

from typing import Any

from torch import nn

from lightning_fm.fields import ForwardOnlyField
from lightning_fm.fields.volume import PathVolume, VolumeSampler
from lightning_fm.modules.ifm import IFMModule
from lightning_fm.paths import GaussianPath, LinearPath
from lightning_fm.utils.spec import build


class ForwardOnlyIFMModule(IFMModule):
    """IFM on the field ``ForwardOnlyField(path, L)``: ``E_c = p_t(x|c) (1, u_t(x|c)/L)`` with ``t = z/L``.

    With the same path and coupling, and by default the path's own volume coverage (``z = tL``, ``x ~ p_t(.|c)``),
    it learns the same dynamics as ``CFMModule(path=path, coupling=coupling)``: ``v = L f_x / f_z``. Lines never
    leave the slab, so there is no continuation outside it.

    Args:
        backbone: as :class:`IFMModule` (a :class:`~lightning_fm.models.FieldHead`).
        path: the CFM path whose current is the field; default ``LinearPath(0.1)``. L: the plate distance.
        volume: default ``PathVolume(path)`` (CFM's training points).
        **kwargs: ``coupling``, ``sampler``, ``n_points`` of :class:`IFMModule` and the settings of
            :class:`~lightning_fm.modules.base.FlowMatchingModule`.
    """

    derived_hparams = ("field",)

    def __init__(
        self,
        backbone: nn.Module | None = None,
        path: GaussianPath | None = None,
        L: float = 1.0,
        volume: VolumeSampler | None = None,
        **kwargs: Any,
    ) -> None:
        path = build(path) if path is not None else LinearPath(0.1)
        super().__init__(
            backbone=backbone,
            field=ForwardOnlyField(path, L),
            volume=volume if volume is not None else PathVolume(path),
            **kwargs,
        )
        self.path = self.component("path", path, None)
