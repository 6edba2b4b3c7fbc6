"""Forward-only IFM: field matching on the space-time current of a CFM path (the dual of CFMModule, MATH.md §6)."""
from __future__ import annotations

from torch import nn

from lightning_fm.couplings import Coupling
from lightning_fm.fields import ForwardOnlyField
from lightning_fm.modules.ifm import IFMModule
from lightning_fm.paths import GaussianPath, LinearPath
from lightning_fm.spec import build
from lightning_fm.volume import PathVolume, VolumeSampler


class ForwardOnlyIFMModule(IFMModule):
    """IFM on the field ``ForwardOnlyField(path, L)``: ``E_c = p_t(x|c) (1, u_t(x|c)/L)`` with ``t = z/L``.

    With the same path and coupling, and by default the path's own volume coverage (``z = tL``, ``x ~ p_t(.|c)``),
    it learns the same dynamics as ``CFMModule(path=path, coupling=coupling)``: ``v = L f_x / f_z``. Lines never
    leave the slab, so there is no continuation outside it.
    """

    def __init__(
        self,
        backbone: nn.Module | None = None,
        path: GaussianPath | None = None,
        L: float = 1.0,
        coupling: Coupling | None = None,
        volume: VolumeSampler | None = None,
        n_points: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        sample_steps: int = 100,
        sample_method: str = "euler",
        val_trajectories: int = 64,
        w2_max_samples: int = 5000,
    ) -> None:
        path = build(path) if path is not None else LinearPath(0.1)
        super().__init__(backbone, ForwardOnlyField(path, L), coupling,
                         volume if volume is not None else PathVolume(path), n_points, False, 0.05, 1, lr,
                         weight_decay, betas, warmup_steps, sample_steps, sample_method, val_trajectories,
                         w2_max_samples)
        self.path = self.field.path
