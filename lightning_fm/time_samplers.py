"""Time coverage: where in ``t`` the CFM regression is trained (docs/concepts/flow-matching.md#time-sampling).

A time sampler draws the training times: ``sampler.sample(n, generator=None, device=None, dtype=None) -> t (n,)`` in
``[0, 1]``, and gives its density ``log_prob(t)`` where it has a closed form. A non-uniform time density only
reweights the times of the CFM loss ``E_{t ~ w} E_{c, x ~ p_t(.|c)} || v(x, t) - u_t(x | c) ||^2``: at every ``t``
the conditional expectation is still minimised by the marginal velocity ``u_t(x) = E[u_t(x | c) | x_t = x]``, so the
minimiser is the same wherever ``w(t) > 0``. The choice only changes where the network is accurate (and the variance
of the gradient), exactly as a volume coverage does for IFM (:mod:`lightning_fm.fields.volume`; through the duality
``t = z / L`` the two are the same thing, :class:`VolumeTime` and
:class:`~lightning_fm.fields.volume.TimeDensityVolume`).

* :class:`UniformTime` - ``t ~ U[0, 1]``, the default: exactly the ``torch.rand`` call CFM always made.
* :class:`LogitNormalTime` - ``t = sigmoid(m + s N(0, 1))`` (Esser et al. 2024, arXiv 2403.03206).
* :class:`BetaTime` - ``t ~ Beta(a, b)``.
* :class:`VolumeTime` - the time density of an IFM volume: its ``z``-marginal on the slab ``0 <= z <= L``, ``t = z/L``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from lightning_fm.utils.spec import Buildable, describe

if TYPE_CHECKING:
    from lightning_fm.fields.volume import VolumeSampler


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    return dtype if dtype is not None else torch.get_default_dtype()


class TimeSampler(Buildable, ABC):
    """Base: ``sample(n, generator, device, dtype) -> t`` of shape ``(n,)`` in ``[0, 1]``; ``log_prob(t)`` where
    closed-form (else :class:`NotImplementedError`). With ``generator=None`` the draws use torch's global generator."""

    @abstractmethod
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor: ...

    def log_prob(self, t: Tensor) -> Tensor:
        """The log density of the times at ``t`` (``-inf`` outside the support)."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form density")

    def __repr__(self) -> str:
        return describe(self)


class UniformTime(TimeSampler):
    """``t ~ U[0, 1]``: one ``torch.rand(n, generator=generator, device=device, dtype=dtype)`` call, the very draw
    CFM made before time samplers existed (the same generator calls, so the same training, bit for bit)."""

    def __init__(self) -> None:
        pass

    def sample(self, n, generator=None, device=None, dtype=None):
        return torch.rand(n, generator=generator, device=device, dtype=dtype)

    def log_prob(self, t):
        inside = (t >= 0) & (t <= 1)
        return torch.where(inside, torch.zeros_like(t), torch.full_like(t, -math.inf))


class LogitNormalTime(TimeSampler):
    """``t = sigmoid(m + s eps)``, ``eps ~ N(0, 1)``: density
    ``N(logit t; m, s^2) / (t (1 - t))`` on ``(0, 1)``, concentrated in mid-path for the default ``m = 0, s = 1``."""

    def __init__(self, m: float = 0.0, s: float = 1.0) -> None:
        if not s > 0:
            raise ValueError(f"LogitNormalTime needs s > 0, got {s}")
        self.m, self.s = float(m), float(s)

    def sample(self, n, generator=None, device=None, dtype=None):
        eps = torch.randn(n, generator=generator, device=device, dtype=dtype)
        return torch.sigmoid(self.m + self.s * eps)

    def log_prob(self, t):
        inside = (t > 0) & (t < 1)
        tc = torch.where(inside, t, torch.full_like(t, 0.5))
        y = torch.log(tc) - torch.log1p(-tc)
        log_normal = -0.5 * ((y - self.m) / self.s) ** 2 - math.log(self.s) - 0.5 * math.log(2 * math.pi)
        value = log_normal - torch.log(tc) - torch.log1p(-tc)
        return torch.where(inside, value, torch.full_like(t, -math.inf))


def standard_gamma(
    alpha: float, n: int, generator: torch.Generator | None, device: torch.device | str | None, dtype: torch.dtype
) -> Tensor:
    """``n`` draws of ``Gamma(alpha, 1)`` from ``generator`` (torch's own Gamma takes none): Marsaglia and Tsang's
    squeeze-free rejection (2000) for ``alpha >= 1``, and ``Gamma(alpha + 1) U^(1/alpha)`` below."""
    boost = alpha < 1
    d = (alpha + 1 if boost else alpha) - 1 / 3
    c = 1 / math.sqrt(9 * d)
    out = torch.empty(n, device=device, dtype=dtype)
    todo = torch.arange(n, device=device)
    while todo.numel() > 0:
        m = todo.numel()
        x = torch.randn(m, generator=generator, device=device, dtype=dtype)
        u = torch.rand(m, generator=generator, device=device, dtype=dtype)
        v = (1 + c * x) ** 3
        ok = (v > 0) & (torch.log(u) < 0.5 * x**2 + d - d * v + d * torch.log(v.clamp_min(1e-300)))
        out[todo[ok]] = (d * v)[ok]
        todo = todo[~ok]
    if boost:
        out = out * torch.rand(n, generator=generator, device=device, dtype=dtype).pow(1 / alpha)
    return out


class BetaTime(TimeSampler):
    """``t ~ Beta(a, b)``: ``G_a / (G_a + G_b)`` with ``G ~ Gamma`` drawn from the generator (computed in float64,
    returned in ``dtype``); density ``t^(a-1) (1-t)^(b-1) / B(a, b)``."""

    def __init__(self, a: float = 1.0, b: float = 1.0) -> None:
        if not (a > 0 and b > 0):
            raise ValueError(f"BetaTime needs a > 0 and b > 0, got {a}, {b}")
        self.a, self.b = float(a), float(b)

    def sample(self, n, generator=None, device=None, dtype=None):
        ga = standard_gamma(self.a, n, generator, device, torch.float64)
        gb = standard_gamma(self.b, n, generator, device, torch.float64)
        return (ga / (ga + gb)).to(_dtype(dtype))

    def log_prob(self, t):
        inside = (t > 0) & (t < 1)
        tc = torch.where(inside, t, torch.full_like(t, 0.5))
        log_beta = math.lgamma(self.a) + math.lgamma(self.b) - math.lgamma(self.a + self.b)
        value = (self.a - 1) * torch.log(tc) + (self.b - 1) * torch.log1p(-tc) - log_beta
        return torch.where(inside, value, torch.full_like(t, -math.inf))


class VolumeTime(TimeSampler):
    """The time density an IFM volume induces through ``t = z / L``: its ``z``-marginal restricted to the slab
    ``0 <= z <= L`` (points behind the plates, e.g. :class:`~lightning_fm.fields.volume.SlabAndBeyondVolume`'s
    ``z > L``, are **rejected**, not clamped, and redrawn: the density is the z-marginal conditioned on the slab).

    A volume builds one point per pair; the pairs here are dummies, ``x0 = x1 = 0`` of shape ``(n, 1)``. That is
    exact for every volume of :mod:`lightning_fm.fields.volume` inside the slab, whose ``z`` never depends on the
    pair; a volume whose in-slab ``z`` depends on the data is outside what this class can reproduce. No closed-form
    ``log_prob``. ``max_rounds``: redraws before giving up (a volume with almost nothing in the slab).
    """

    def __init__(self, volume: VolumeSampler, L: float = 1.0, max_rounds: int = 100) -> None:
        from lightning_fm.fields.volume import VolumeSampler

        if not isinstance(volume, VolumeSampler):
            raise TypeError(f"VolumeTime needs a lightning_fm.fields.volume sampler, got {type(volume).__name__}")
        if not L > 0 or max_rounds < 1:
            raise ValueError(f"VolumeTime needs L > 0 and max_rounds >= 1, got {L}, {max_rounds}")
        self.volume, self.L, self.max_rounds = volume, float(L), int(max_rounds)

    def sample(self, n, generator=None, device=None, dtype=None):
        dtype = _dtype(dtype)
        if n == 0:
            return torch.empty(0, device=device, dtype=dtype)
        found: list[Tensor] = []
        have = 0
        for _ in range(self.max_rounds):
            if have >= n:
                break
            dummy = torch.zeros(n, 1, device=device, dtype=dtype)
            z, _ = self.volume(dummy, dummy, self.L, generator)
            z = z[(z >= 0) & (z <= self.L)]
            found.append(z)
            have += z.numel()
        if have < n:
            raise RuntimeError(
                f"VolumeTime: {self.volume!r} put {have} of {n * self.max_rounds} points in the slab 0 <= z <= {self.L}"
            )
        return (torch.cat(found)[:n] / self.L).clamp(0, 1)


TIME_SAMPLERS = {
    "uniform": UniformTime,
    "logit_normal": LogitNormalTime,
    "beta": BetaTime,
    "volume": VolumeTime,
}
