"""The closed-form Gaussian -> Gaussian toy of docs/concepts/checks.md#gaussian-toy, used by the checks C3, C5-C8.

Source ``N(m0, s0^2 I)``, target ``N(m1, s1^2 I)``, independent coupling, and any path of :mod:`lightning_fm.paths`
(mean ``mu_t = a(t) x0 + b(t) x1``, width ``sigma_t``). Then ``x_t = a x0 + b x1 + sigma_t eps`` is Gaussian and so
is its velocity ``a' x0 + b' x1 + sigma_t' eps``; jointly Gaussian, hence

    m_t   = a m0 + b m1,
    s_t^2 = a^2 s0^2 + b^2 s1^2 + sigma_t^2,
    u_t(x) = E[u_t(x|c) | x_t = x] = a' m0 + b' m1 + (d s_t^2/dt) / (2 s_t^2) (x - m_t),
    d s_t^2/dt = 2 a a' s0^2 + 2 b b' s1^2 + d sigma_t^2/dt.

For the linear-mean paths (LinearPath, BrownianBridgePath, SineBridgePath) ``a = 1 - t``, ``b = t`` and this is
the familiar ``m_t = (1-t) m0 + t m1``, ``s_t^2 = (1-t)^2 s0^2 + t^2 s1^2 + sigma_t^2``. TrigPath works the same way.
LipmanPath (``a = 0``) ignores the source: its t = 0 marginal is ``N(0, sigma_0^2 I) = N(0, I)`` whatever m0, s0.

``d sigma_t^2/dt`` is taken by autograd on the path's ``sigma(t)`` (exact). On a pinned plate of a bridge
(``sigma_t = 0``: ``sigma'/sigma`` is singular but ``sigma sigma'`` is not, and autograd through ``sqrt(0)`` is not
usable) it is the one-sided limit, Richardson-extrapolated from ``t = 1e-5`` and ``2e-5`` (error ~1e-10).
Everything is float64 on the CPU unless another dtype is asked for.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_fm.paths import BRIDGE_T_EPS, GaussianPath
from lightning_fm.utils.tensors import as_time


def _vector(value: Tensor | float | list[float], dim: int | None, dtype: torch.dtype) -> Tensor:
    v = torch.as_tensor(value, dtype=dtype).reshape(-1)
    if dim is not None and v.numel() == 1:
        v = v.expand(dim).clone()
    return v


class GaussianToy:
    """Gaussian -> Gaussian transport along ``path`` with the independent coupling, in closed form.

    Args:
        path: a :class:`lightning_fm.paths.GaussianPath`.
        m0, s0: source mean ``(D,)`` (or a scalar broadcast to ``dim``) and isotropic std.
        m1, s1: target mean and std.
        dim: D when both means are scalars.
        dtype: float64 by default.

    The object is also a velocity model (``velocity(x, t)``), so it plugs into
    :class:`lightning_fm.duality.VelocityAsField` and the checks as ground truth.
    """

    def __init__(
        self,
        path: GaussianPath,
        m0=0.0,
        s0: float = 1.0,
        m1=(4.0, 1.0),
        s1: float = 0.5,
        dim: int | None = None,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        self.path = path
        self.dtype = dtype
        self.m0 = _vector(m0, dim, dtype)
        self.m1 = _vector(m1, dim, dtype)
        if self.m0.numel() == 1 and self.m1.numel() > 1:
            self.m0 = self.m0.expand(self.m1.numel()).clone()
        if self.m1.numel() == 1 and self.m0.numel() > 1:
            self.m1 = self.m1.expand(self.m0.numel()).clone()
        if self.m0.shape != self.m1.shape:
            raise ValueError(f"source mean {tuple(self.m0.shape)} and target mean {tuple(self.m1.shape)} differ")
        if not (s0 >= 0 and s1 >= 0):
            raise ValueError(f"stds must be >= 0, got s0={s0}, s1={s1}")
        self.s0, self.s1 = float(s0), float(s1)

    @property
    def D(self) -> int:
        return self.m0.numel()

    # -- time-dependent scalars -----------------------------------------------------------------------------
    def _t(self, t: Tensor | float, n: int | None = None) -> Tensor:
        t = torch.as_tensor(t, dtype=self.dtype)
        if t.dim() == 0:
            t = t.expand(1 if n is None else n)
        return t.to(self.dtype)

    def _dsigma2_autograd(self, t: Tensor) -> Tensor:
        with torch.enable_grad():
            tt = t.detach().clone().requires_grad_(True)
            s2 = self.path.sigma(tt).square()
            grad = torch.autograd.grad(s2.sum(), tt, allow_unused=True)[0] if s2.requires_grad else None
        return torch.zeros_like(t) if grad is None else grad.detach()

    def dsigma2(self, t: Tensor) -> Tensor:
        """``d sigma_t^2 / dt`` of the path (see the module docstring)."""
        grad = self._dsigma2_autograd(t)
        pinned = (self.path.sigma(t) == 0) | ~torch.isfinite(grad)
        if bool(pinned.any()):
            # one-sided limit at a pinned plate, Richardson-extrapolated: 2 g(eps) - g(2 eps), error O(eps^2)
            e = BRIDGE_T_EPS
            g1 = self._dsigma2_autograd(t.clamp(e, 1 - e))
            g2 = self._dsigma2_autograd(t.clamp(2 * e, 1 - 2 * e))
            grad = torch.where(pinned, 2 * g1 - g2, grad)
        return grad

    def moments(self, t: Tensor | float) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(m_t (B, D), s_t^2 (B,), dm_t/dt (B, D), d s_t^2/dt (B,))``."""
        t = self._t(t)
        a, b, da, db = self.path.coefficients(t)
        s2 = a.square() * self.s0**2 + b.square() * self.s1**2 + self.path.sigma(t).square()
        ds2 = 2 * a * da * self.s0**2 + 2 * b * db * self.s1**2 + self.dsigma2(t)
        mean = a[:, None] * self.m0 + b[:, None] * self.m1
        dmean = da[:, None] * self.m0 + db[:, None] * self.m1
        return mean, s2, dmean, ds2

    def mean(self, t: Tensor | float) -> Tensor:
        """Marginal mean ``m_t`` ``(B, D)``."""
        return self.moments(t)[0]

    def var(self, t: Tensor | float) -> Tensor:
        """Marginal variance ``s_t^2`` (per coordinate) ``(B,)``."""
        return self.moments(t)[1]

    # -- fields in x ----------------------------------------------------------------------------------------
    def velocity(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Marginal velocity ``u_t(x) = m_t' + (d s_t^2/dt)/(2 s_t^2) (x - m_t)`` at ``x`` ``(B, D)``, t ``(B,)``.

        Same signature as a CFM model's ``velocity(x, t)``; computed in the toy's dtype, returned in x's dtype.
        """
        t = as_time(t, x).to(self.dtype)
        mean, s2, dmean, ds2 = self.moments(t)
        u = dmean + (0.5 * ds2 / s2)[:, None] * (x.to(self.dtype) - mean)
        return u.to(x.dtype)

    def log_prob(self, x: Tensor, t: Tensor | float) -> Tensor:
        """``log p_t(x) = log N(x; m_t, s_t^2 I)`` ``(B,)``."""
        t = as_time(t, x).to(self.dtype)
        mean, s2, _, _ = self.moments(t)
        sq = (x.to(self.dtype) - mean).square().sum(1)
        return -0.5 * sq / s2 - 0.5 * self.D * torch.log(2 * math.pi * s2)

    # -- samples --------------------------------------------------------------------------------------------
    def _normal(self, n: int, generator: torch.Generator | None) -> Tensor:
        return torch.randn(n, self.D, generator=generator, dtype=self.dtype)

    def sample_source(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples of the source ``N(m0, s0^2 I)``. For LipmanPath the source is ``N(0, I)``."""
        if self.path.requires_gaussian_source:
            return self._normal(n, generator)
        return self.m0 + self.s0 * self._normal(n, generator)

    def sample_target(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples of the target ``N(m1, s1^2 I)``."""
        return self.m1 + self.s1 * self._normal(n, generator)

    def sample_pairs(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """``n`` independent pairs ``(x0, x1)``: the coupling whose marginal path this toy describes."""
        return self.sample_source(n, generator), self.sample_target(n, generator)

    def sample_marginal(
        self, t: Tensor | float, n: int | None = None, generator: torch.Generator | None = None
    ) -> Tensor:
        """Samples of ``p_t = N(m_t, s_t^2 I)``, one per entry of ``t`` (or ``n`` at a scalar ``t``)."""
        t = self._t(t, n)
        mean, s2, _, _ = self.moments(t)
        return mean + s2.sqrt()[:, None] * self._normal(t.shape[0], generator)
