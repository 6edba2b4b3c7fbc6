"""Gaussian conditional probability paths of Conditional Flow Matching (docs/concepts/flow-matching.md#gaussian-paths).

Every path here has the form ``p_t(x | x0, x1) = N(x; mu_t, sigma_t^2 I)`` with a mean that is linear in the pair,

    mu_t = a(t) x0 + b(t) x1,      sigma_t = sigma(t)   (the same for every pair),

so its conditional velocity (the one that solves the continuity equation together with p_t) is

    u_t(x | x0, x1) = a'(t) x0 + b'(t) x1 + (sigma'(t) / sigma(t)) (x - mu_t).

Tensors: ``x, x0, x1`` are ``(B, *dims)``; ``t`` is ``(B,)`` (a float or 0-d tensor is broadcast). Pure torch: any
device, any dtype. The superposition over all pairs of a batch (the posterior-weighted, i.e. marginal, velocity
of docs/concepts/duality.md#superposition and docs/concepts/duality.md#multi-sample-target) is
:meth:`GaussianPath.posterior`, computed with matrix products in the log domain.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_fm.utils.spec import Buildable
from lightning_fm.utils.tensors import as_time, pad_like

# sigma'(t)/sigma(t) diverges where a bridge pins the path (sigma(0) = sigma(1) = 0): evaluate it inside [EPS, 1-EPS].
BRIDGE_T_EPS = 1e-5


@dataclass
class PathSample:
    """A point of the path and the regression target: ``xt ~ p_t(.|c)``, ``ut = u_t(xt|c)``."""

    t: Tensor
    xt: Tensor
    ut: Tensor


@dataclass
class Posterior:
    """Superposition of all pairs at each point (docs/concepts/duality.md#superposition).

    ``velocity[i] = sum_j w_ij u_t(x_i | c_j)`` with ``w_ij = softmax_j log p_t(x_i | c_j)``;
    ``log_density[i] = log (1/B) sum_j p_t(x_i | c_j)`` (the minibatch estimate of the marginal density p_t(x_i)).
    """

    velocity: Tensor
    log_density: Tensor


def _check_pair(x0: Tensor, x1: Tensor) -> None:
    if x0.shape != x1.shape:
        raise ValueError(f"source x0 {tuple(x0.shape)} and target x1 {tuple(x1.shape)} must have the same shape")


class GaussianPath(Buildable, ABC):
    """Base class: subclasses give ``a, b`` (mean coefficients), ``sigma`` and their time derivatives."""

    #: True when the path is only valid for a N(0, I) source (its t=0 marginal ignores x0).
    requires_gaussian_source: bool = False

    # -- what a subclass defines -------------------------------------------------------------------------------
    @abstractmethod
    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(a, b, a', b')`` at times ``t`` (each shaped like t)."""

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """``sigma(t)``, shaped like t."""

    @abstractmethod
    def log_sigma_rate(self, t: Tensor) -> Tensor:
        """``sigma'(t) / sigma(t)`` (0 for a constant or zero sigma), shaped like t."""

    # -- derived -----------------------------------------------------------------------------------------------
    def std(self, t: Tensor | float) -> Tensor:
        """``sigma_t``, shaped like t (a python float gives a 0-d tensor of the default dtype)."""
        if not isinstance(t, Tensor):
            t = torch.as_tensor(t, dtype=torch.get_default_dtype())
        return self.sigma(t)

    def mean(self, x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
        """``mu_t = a(t) x0 + b(t) x1``."""
        _check_pair(x0, x1)
        t = as_time(t, x0)
        a, b, _, _ = self.coefficients(t)
        return pad_like(a, x0) * x0 + pad_like(b, x1) * x1

    def mean_velocity(self, x0: Tensor, x1: Tensor, t: Tensor | float) -> Tensor:
        """``d mu_t / dt = a'(t) x0 + b'(t) x1``."""
        t = as_time(t, x0)
        _, _, da, db = self.coefficients(t)
        return pad_like(da, x0) * x0 + pad_like(db, x1) * x1

    def default_noise(self, x0: Tensor) -> Tensor:
        return torch.randn_like(x0)

    def sample(self, x0: Tensor, x1: Tensor, t: Tensor | float, noise: Tensor | None = None) -> PathSample:
        """``xt = mu_t + sigma_t * noise``, ``ut = mu_t' + sigma_t' * noise`` (= u_t(xt|c))."""
        _check_pair(x0, x1)
        t = as_time(t, x0)
        noise = self.default_noise(x0) if noise is None else noise
        a, b, da, db = self.coefficients(t)
        s = self.sigma(t)
        ds = self.log_sigma_rate(t) * s
        pad = lambda v: pad_like(v, x0)  # noqa: E731
        xt = pad(a) * x0 + pad(b) * x1 + pad(s) * noise
        ut = pad(da) * x0 + pad(db) * x1 + pad(ds) * noise
        return PathSample(t=t, xt=xt, ut=ut)

    def velocity(self, x: Tensor, t: Tensor | float, x0: Tensor, x1: Tensor) -> Tensor:
        """Conditional velocity ``u_t(x | x0, x1)`` at any ``x`` (not only at sampled points)."""
        _check_pair(x0, x1)
        t = as_time(t, x)
        rate = pad_like(self.log_sigma_rate(t), x)
        return self.mean_velocity(x0, x1, t) + rate * (x - self.mean(x0, x1, t))

    def log_prob(self, x: Tensor, t: Tensor | float, x0: Tensor, x1: Tensor) -> Tensor:
        """``log N(x; mu_t, sigma_t^2 I)`` as ``(B,)``; needs sigma_t > 0."""
        t = as_time(t, x)
        s = self._positive_sigma(t)
        dim = x[0].numel()
        sq = (x - self.mean(x0, x1, t)).flatten(1).pow(2).sum(1)
        return -0.5 * sq / s**2 - dim * torch.log(s) - 0.5 * dim * math.log(2 * math.pi)

    def _positive_sigma(self, t: Tensor) -> Tensor:
        s = self.sigma(t)
        if bool((s <= 0).any()):
            raise ValueError(f"{type(self).__name__}: log-densities need sigma_t > 0, got sigma_t = {s.min().item()}")
        return s

    def posterior(self, x: Tensor, t: Tensor | float, x0: Tensor, x1: Tensor, chunk_size: int = 4096) -> Posterior:
        """Superpose the B pairs ``(x0[j], x1[j])`` at each of the b points ``(t[i], x[i])``.

        ``log w_ij = -||x_i - mu_{t_i}(c_j)||^2 / (2 sigma_{t_i}^2)`` (the normaliser is shared by all j), expanded as
        ``||x||^2 + a^2||x0||^2 + b^2||x1||^2 + 2ab<x0,x1> - 2a<x,x0> - 2b<x,x1>`` so the cost is matrix products:
        memory O(bB + (b+B)D), time O(bBD). The points are processed in chunks of ``chunk_size``. Computed in at least
        float32 whatever the input dtype, returned in x's dtype.
        """
        t = as_time(t, x)
        _check_pair(x0, x1)
        if x.shape[1:] != x0.shape[1:]:
            raise ValueError(f"points x {tuple(x.shape)} and pairs {tuple(x0.shape)} must share the data shape")
        work = torch.promote_types(x.dtype, torch.float32)
        X0, X1 = x0.flatten(1).to(work), x1.flatten(1).to(work)
        n0, n1, c01 = X0.pow(2).sum(1), X1.pow(2).sum(1), (X0 * X1).sum(1)
        velocities, log_densities = [], []
        for start in range(0, x.shape[0], chunk_size):
            xi, ti = x[start : start + chunk_size].flatten(1).to(work), t[start : start + chunk_size].to(work)
            a, b, da, db = (c[:, None] for c in self.coefficients(ti))
            s = self._positive_sigma(ti)[:, None]
            xx = xi.pow(2).sum(1, keepdim=True)
            # the part of ||x - mu_j||^2 that depends on j: ||x||^2 is common to all j and leaves the weights
            # unchanged; kept out of them, it cannot swamp the differences between pairs far from every pair
            rest = a**2 * n0 + b**2 * n1 + 2 * a * b * c01 - 2 * a * (xi @ X0.T) - 2 * b * (xi @ X1.T)
            rest = torch.maximum(rest, -xx)  # ||x - mu_j||^2 >= 0 (round-off)
            w = torch.softmax(-0.5 * rest / s**2, dim=1)
            m0, m1 = w @ X0, w @ X1  # posterior means of x0 and x1
            rate = self.log_sigma_rate(ti)[:, None]
            velocities.append(da * m0 + db * m1 + rate * (xi - a * m0 - b * m1))
            dim = xi.shape[1]
            log_norm = -dim * torch.log(s[:, 0]) - 0.5 * dim * math.log(2 * math.pi) - math.log(X0.shape[0])
            log_densities.append(torch.logsumexp(-0.5 * rest / s**2, dim=1) - 0.5 * xx[:, 0] / s[:, 0] ** 2 + log_norm)
        velocity = torch.cat(velocities).reshape(x.shape).to(x.dtype)
        return Posterior(velocity=velocity, log_density=torch.cat(log_densities).to(x.dtype))


def _check_sigma(name: str, value: float, positive: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ValueError(f"{name} must be {bound} and finite, got {value}")
    return value


class LinearPath(GaussianPath):
    """I-CFM / OT-CFM / rectified flow: ``mu_t = (1-t) x0 + t x1``, ``sigma_t = sigma``, ``u_t = x1 - x0``."""

    def __init__(self, sigma: float = 0.0) -> None:
        self.sigma_value = _check_sigma("LinearPath.sigma", sigma)

    def coefficients(self, t):
        one = torch.ones_like(t)
        return 1 - t, t, -one, one

    def sigma(self, t):
        return torch.full_like(t, self.sigma_value)

    def log_sigma_rate(self, t):
        return torch.zeros_like(t)


class BrownianBridgePath(LinearPath):
    """SB-CFM: ``mu_t = (1-t) x0 + t x1``, ``sigma_t = sigma sqrt(t(1-t))``,
    ``u_t = (1-2t)/(2t(1-t)) (x - mu_t) + x1 - x0``. Pair it with ``OTCoupling("sinkhorn", reg=2 sigma^2)``."""

    def __init__(self, sigma: float = 1.0) -> None:
        self.sigma_value = _check_sigma("BrownianBridgePath.sigma", sigma, positive=True)

    def sigma(self, t):
        return self.sigma_value * torch.sqrt((t * (1 - t)).clamp_min(0))

    def log_sigma_rate(self, t):
        t = t.clamp(BRIDGE_T_EPS, 1 - BRIDGE_T_EPS)
        return (1 - 2 * t) / (2 * t * (1 - t))


class TrigPath(GaussianPath):
    """VP-CFM (trigonometric interpolant): ``mu_t = cos(pi t/2) x0 + sin(pi t/2) x1``, ``sigma_t = sigma``,
    ``u_t = (pi/2)(cos(pi t/2) x1 - sin(pi t/2) x0)``."""

    def __init__(self, sigma: float = 0.0) -> None:
        self.sigma_value = _check_sigma("TrigPath.sigma", sigma)

    def coefficients(self, t):
        h = 0.5 * math.pi
        return torch.cos(h * t), torch.sin(h * t), -h * torch.sin(h * t), h * torch.cos(h * t)

    def sigma(self, t):
        return torch.full_like(t, self.sigma_value)

    def log_sigma_rate(self, t):
        return torch.zeros_like(t)


class LipmanPath(GaussianPath):
    """Lipman et al. FM (OT path): ``mu_t = t x1``, ``sigma_t = 1 - (1 - sigma_min) t``,
    ``u_t = (x1 - (1 - sigma_min) x) / (1 - (1 - sigma_min) t)``.

    The t=0 marginal is N(0, I) whatever x0 is, so the source must be a standard normal; ``x0`` is then used as the
    noise of :meth:`sample` (``xt = t x1 + sigma_t x0``), so that trajectories start at the source samples.
    """

    requires_gaussian_source = True

    def __init__(self, sigma_min: float = 1e-4) -> None:
        self.sigma_min = _check_sigma("LipmanPath.sigma_min", sigma_min)
        if self.sigma_min >= 1:
            raise ValueError(f"LipmanPath.sigma_min must be < 1, got {sigma_min}")

    def coefficients(self, t):
        zero = torch.zeros_like(t)
        return zero, t, zero, torch.ones_like(t)

    def sigma(self, t):
        return 1 - (1 - self.sigma_min) * t

    def log_sigma_rate(self, t):
        return -(1 - self.sigma_min) / self.sigma(t)

    def default_noise(self, x0: Tensor) -> Tensor:
        return x0


class SineBridgePath(LinearPath):
    """The dual of IFM's strong-interaction (quark) field (docs/concepts/interaction-fields.md#strong-interaction-field,
    docs/concepts/duality.md#forward-only-models): ``mu_t = (1-t) x0 + t x1`` and

        sigma_t = scale sin(pi t / (2 ramp))              for t < ramp
                = scale                                   for ramp <= t <= 1 - ramp
                = scale cos(pi (t - 1 + ramp) / (2 ramp)) for t > 1 - ramp.

    With the default ``ramp = 0.5`` this is ``scale sin(pi t)`` and ``u_t = x1 - x0 + pi cot(pi t) (x - mu_t)``.
    ``ramp`` is IFM's ``d / L = pi / (2 K L)``.
    """

    def __init__(self, scale: float = 1.0, ramp: float = 0.5) -> None:
        self.scale = _check_sigma("SineBridgePath.scale", scale, positive=True)
        if not 0 < ramp <= 0.5:
            raise ValueError(f"SineBridgePath.ramp must be in (0, 0.5], got {ramp}")
        self.ramp = float(ramp)

    def sigma(self, t):
        k = math.pi / (2 * self.ramp)
        rising = torch.sin(k * t.clamp(0, self.ramp))
        falling = torch.cos(k * (t.clamp(1 - self.ramp, 1) - 1 + self.ramp))
        return self.scale * torch.where(t < self.ramp, rising, torch.where(t > 1 - self.ramp, falling, 1.0))

    def log_sigma_rate(self, t):
        k = math.pi / (2 * self.ramp)
        t = t.clamp(BRIDGE_T_EPS, 1 - BRIDGE_T_EPS)
        rising = k / torch.tan(k * t.clamp(max=self.ramp))
        falling = -k * torch.tan(k * (t.clamp(min=1 - self.ramp) - 1 + self.ramp))
        return torch.where(t < self.ramp, rising, torch.where(t > 1 - self.ramp, falling, torch.zeros_like(t)))


PATHS = {
    "linear": LinearPath,
    "brownian_bridge": BrownianBridgePath,
    "trig": TrigPath,
    "lipman": LipmanPath,
    "sine_bridge": SineBridgePath,
}
