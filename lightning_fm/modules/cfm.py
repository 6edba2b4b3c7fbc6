"""Conditional Flow Matching as a LightningModule (MATH.md §2.3, §7.1, §7.2)."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from lightning_fm.couplings import Coupling, OTCoupling
from lightning_fm.models import MLP
from lightning_fm.modules.base import FlowMatchingModule, SampleResult
from lightning_fm.paths import GaussianPath, LinearPath
from lightning_fm.solvers import integrate

TARGETS = ("single", "multi")


class CFMModule(FlowMatchingModule):
    """Regress ``v_theta(x_t, t)`` onto a CFM target and sample ``dx/dt = v_theta(x, t)`` from t=0 to t=1.

    loss = mean_b || v_theta(x_t[b], t[b]) - target[b] ||^2 with ``t ~ U[0,1]``, ``(x0, x1) ~ coupling``,
    ``x_t ~ p_t(.|x0, x1)`` and

    * ``target="single"``: the conditional velocity ``u_t(x_t | x0, x1)`` of the sample's own pair (standard CFM);
    * ``target="multi"``: the posterior-weighted average over ``charges`` pairs of the batch, own pair included,
      ``sum_j softmax_j(log p_t(x_t|c_j)) u_t(x_t|c_j)`` (the IFM superposition, MATH.md §6.7/§7.2; needs sigma > 0).

    The defaults are the OT-CFM 2-D toy recipe (64-wide MLP, sigma = 0.1, exact minibatch OT).
    """

    component_names = ("backbone", "path", "coupling")

    def __init__(
        self,
        backbone: nn.Module | None = None,
        path: GaussianPath | None = None,
        coupling: Coupling | None = None,
        target: str = "single",
        charges: int | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        sample_steps: int = 100,
        sample_method: str = "euler",
        val_trajectories: int = 64,
        w2_max_samples: int = 5000,
    ) -> None:
        super().__init__(lr, weight_decay, betas, warmup_steps, sample_steps, sample_method, val_trajectories,
                         w2_max_samples)
        parts = self._register_components(
            backbone=backbone if backbone is not None else MLP(),
            path=path if path is not None else LinearPath(0.1),
            coupling=coupling if coupling is not None else OTCoupling("exact"),
        )
        self.backbone, self.path, self.coupling = parts["backbone"], parts["path"], parts["coupling"]
        if target not in TARGETS:
            raise ValueError(f"model.target={target!r} is unknown; choose one of {list(TARGETS)}")
        if target == "multi" and float(self.path.sigma(torch.tensor([0.5]))) <= 0:
            raise ValueError("model.target='multi' weights pairs by p_t(x|c): it needs a path with sigma > 0")
        if charges is not None and charges < 1:
            raise ValueError(f"model.charges must be >= 1 (or null for the whole batch), got {charges}")

    def check_data(self, datamodule, data_shape) -> None:
        super().check_data(datamodule, data_shape)
        if self.path.requires_gaussian_source and not getattr(datamodule, "source_is_standard_normal", False):
            raise ValueError(
                f"model.path={type(self.path).__name__} is only valid for a N(0, I) source, "
                f"but the data module's source is not (data.source={getattr(datamodule.hparams, 'source', '?')!r})"
            )

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """The learned velocity ``v_theta(x, t)``."""
        return self.backbone(x, t)

    def regression_target(self, x0: Tensor, x1: Tensor, t: Tensor, charges: tuple[Tensor, Tensor] | None = None
                          ) -> tuple[Tensor, Tensor]:
        """Training points ``x_t`` and their target velocity for pairs ``(x0, x1)`` at times ``t``; the multi-sample
        target superposes ``charges`` (default: the pairs themselves), in groups of ``self.hparams.charges``."""
        sample = self.path.sample(x0, x1, t)
        if self.hparams.target == "single":
            return sample.xt, sample.ut
        c0, c1 = charges if charges is not None else (x0, x1)
        group = self.hparams.charges or c0.shape[0]
        if group >= c0.shape[0]:
            return sample.xt, self.path.posterior(sample.xt, t, c0, c1).velocity
        # groups of `group` consecutive pairs, each point superposed over its own group (own pair included)
        targets = [
            self.path.posterior(sample.xt[s : s + group], t[s : s + group], x0[s : s + group], x1[s : s + group]).velocity
            for s in range(0, x0.shape[0], group)
        ]
        return sample.xt, torch.cat(targets)

    def loss(self, batch: dict[str, Tensor]) -> Tensor:
        pairs = self.couple(batch)
        t = torch.rand(pairs.x0.shape[0], device=pairs.x0.device, dtype=pairs.x0.dtype)
        xt, ut = self.regression_target(pairs.x0, pairs.x1, t, (pairs.all_x0, pairs.all_x1))
        return (self.velocity(xt, t) - ut).pow(2).mean()

    @torch.no_grad()
    def sample(self, x_source: Tensor, steps: int | None = None, method: str | None = None,
               record: bool = False) -> SampleResult:
        """Integrate ``dx/dt = v_theta(x, t)`` from ``x(0) = x_source`` to t = 1."""
        solution = integrate(
            lambda t, x: self.velocity(x, t),
            x_source,
            0.0,
            1.0,
            method=method or self.hparams.sample_method,
            steps=steps or self.hparams.sample_steps,
            record=record,
        )
        return SampleResult(solution.x, solution.nfe, solution.times, solution.trajectory)
