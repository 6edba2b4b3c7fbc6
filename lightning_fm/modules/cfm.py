"""Conditional Flow Matching as a LightningModule: the components of a velocity model and the Lightning glue; the
maths is :class:`~lightning_fm.objectives.VelocityObjective`."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_fm.couplings import Coupling, OTCoupling
from lightning_fm.models import MLP
from lightning_fm.modules.base import FlowMatchingModule
from lightning_fm.objectives import VelocityObjective
from lightning_fm.paths import GaussianPath, LinearPath
from lightning_fm.sampling import ODESampler
from lightning_fm.time_samplers import TimeSampler, UniformTime


class CFMModule(FlowMatchingModule):
    """Regress ``v_theta(x_t, t, y)`` onto a CFM target and sample ``dx/dt = v_theta(x, t, y)`` from t=0 to t=1.

    loss = mean_b || v_theta(x_t[b], t[b], y[b]) - target[b] ||^2 with ``t ~ time_sampler``, ``(x0, x1) ~ coupling``,
    ``x_t ~ p_t(.|x0, x1)``, ``y`` the target's class for a class-conditional backbone, and the target the
    conditional velocity ``u_t(x_t | x0, x1)`` (``velocity_target="single"``) or its posterior-weighted average over
    the batch's pairs (``"multi"``, in groups of ``charges`` pairs; :class:`~lightning_fm.objectives.
    VelocityObjective`).

    Args:
        backbone: the velocity network ``net(x, t, y=None)``; default ``MLP(data_shape=[2])``.
        path: the conditional path; default ``LinearPath(0.1)``. coupling: default exact minibatch OT.
        sampler: how ``sample`` integrates; default ``ODESampler("euler", 100)``.
        velocity_target, charges: the regression target (above).
        time_sampler: the training times (:mod:`lightning_fm.time_samplers`); default ``UniformTime()``, t ~ U[0, 1]
            with the same generator calls as before it existed. Any other density reweights the times only: the loss
            is still minimised by the marginal velocity (docs/concepts/flow-matching.md#time-sampling).
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
        time_sampler: TimeSampler | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.backbone = self.build_backbone(backbone, MLP(data_shape=[2]), gives_field=False)
        self.path = self.component("path", path, LinearPath(0.1))
        self.coupling = self.component("coupling", coupling, OTCoupling("exact"))
        self.sampler = self.component("sampler", sampler, ODESampler())
        self.time_sampler = self.component("time_sampler", time_sampler, UniformTime())
        self.objective = VelocityObjective(self.path, self.sampler, velocity_target, charges, self.time_sampler)

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

    predict = velocity
