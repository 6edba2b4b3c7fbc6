"""Forward-only interaction fields: the map Phi of the duality (docs/concepts/duality.md#the-bijection) and IFM's
strong-interaction field.

``ForwardOnlyField(path, L)`` turns a CFM path into the space-time probability current

    E_c(z, x) = p_t(x|c) * (1, u_t(x|c) / L),    t = z / L,

which is divergence-free between the plates (continuity equation), carries unit flux through every slice
(``int E_z dx = 1``) and has ``E_z > 0``: its lines never turn back. The superposition over B pairs is the current of
the minibatch marginal path, ``(p_t(x), p_t(x) v(x)/L)`` with ``v = sum_j softmax_j(log p_t(x|c_j)) u_t(x|c_j)``, so
its direction is ``(1, v/L) / ||(1, v/L)||`` whatever the (underflowing) density is.

``StrongInteractionField`` is IFM's quark-antiquark field
(docs/concepts/interaction-fields.md#strong-interaction-field). ``exact=True`` is the exact current of the sine-bridge
Gaussian path (docs/concepts/duality.md#forward-only-models); ``exact=False`` is the reference code's formula
(docs/concepts/interaction-fields.md#reference-code-field).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lightning_fm.fields.base import (
    DEFAULT_CHUNK,
    InteractionField,
    SuperposedField,
    check_points,
    normalize,
    work_dtype,
)
from lightning_fm.paths import GaussianPath, SineBridgePath
from lightning_fm.utils.tensors import pad_like


class ForwardOnlyField(InteractionField):
    """The map Phi (docs/concepts/duality.md#the-bijection): the field of a CFM path, ``E_c = p_t(x|c) (1, u_t(x|c)/L)``
    with ``t = z/L``.

    Works for any :mod:`lightning_fm.paths` path with ``sigma_t > 0`` at the evaluated slices (a zero-width path is
    a line current, singular: its density is a delta). Bridge paths (sigma = 0 at a plate) are defined on the open
    slab ``0 < z < L`` only.
    """

    forward_only = True

    def __init__(self, path: GaussianPath, L: float = 1.0) -> None:
        super().__init__(L)
        if not isinstance(path, GaussianPath):
            raise TypeError(f"ForwardOnlyField needs a lightning_fm.paths path, got {type(path).__name__}")
        self.path = path

    def pair_field(self, z, x, x0, x1):
        """``p_t(x_i|c_i) (1, u_t(x_i|c_i)/L)``; the density ``exp(log_prob)`` underflows in high D."""
        z = check_points(z, x, x0, x1)
        t = z / self.L
        density = torch.exp(self.path.log_prob(x, t, x0, x1))
        u = self.path.velocity(x, t, x0, x1)
        return density, pad_like(density, x) * u / self.L

    def superpose(self, z, x, x0, x1, chunk_size: int = DEFAULT_CHUNK) -> SuperposedField:
        """``E = p_t(x) (1, v/L)`` with ``v`` and ``log p_t(x)`` from :meth:`GaussianPath.posterior`."""
        z = check_points(z, x, x0, x1)
        post = self.path.posterior(x, z / self.L, x0, x1, chunk_size=chunk_size)
        work = work_dtype(x)
        w = post.velocity.flatten(1).to(work) / self.L
        log_norm, nz, nx = normalize(torch.ones_like(w[:, 0]), w)
        log_norm = log_norm + post.log_density.to(work)
        return SuperposedField(log_norm.to(x.dtype), nz.to(x.dtype), nx.reshape(x.shape).to(x.dtype))


class StrongInteractionField(InteractionField):
    """IFM's quark-antiquark ("string") field (docs/concepts/interaction-fields.md#strong-interaction-field): a tube of
    width ``sigma(z)`` around the segment from ``(0, x0)`` to ``(L, x1)``, ``sigma(z) = scale * sin(pi z / L)`` for the
    default ``ramp = 0.5`` (IFM's ``K = pi / L``), else rising/flat/falling with ``ramp = d / L = pi / (2 K L)``.

    * ``exact=True``: the exact space-time current of ``SineBridgePath(scale, ramp)``, i.e. identical to
      ``ForwardOnlyField(SineBridgePath(scale, ramp), L)`` (implemented by delegation). Divergence-free, unit flux.
    * ``exact=False``: the reference code's field (``field_type="Shifted"``), for reproducing the paper's numbers.
      For the pair ``c = (x0, x1)`` and ``rho = x - mu_c(z)``, ``r = ||rho||``, ``mu_c(z) = x0 + (z/L)(x1 - x0)``:

          direction  e = cos(a) n_pair + sin(a) (0, rho/r),   n_pair = (L, x1 - x0) / ||(L, x1 - x0)||,
          tan(a) = r sigma'(z)/sigma(z),
          magnitude  m = exp(-r^2 / (2 sigma^2)) / ((cos(a) + 1e-8) (sigma/scale)^D + 1e-2),

      summed over the pairs (the code sums, it does not average). Log domain: ``log m = -r^2/(2 sigma^2) -
      logaddexp(log(cos a + 1e-8) + D log(sigma/scale), log 1e-2)`` is computed exactly, so the superposition is
      exact in the log domain. What the ``+1e-2`` regulariser prevents is a *common* factor: because of it the
      magnitude is not ``Gaussian x (function of z)``, so pairs do not share the ``1/sigma^D`` normaliser and the
      weights depend on ``cos(a)``; in high D, where ``(sigma/scale)^D`` underflows in the code, the regulariser
      dominates and our log-domain values agree with the code's. Where the code's numerator ``exp(-r^2/2 sigma^2)``
      underflows for every pair (points far from all tubes), the code's target is ``0 / (0 + 1e-5) = 0``, ours is
      the direction of the nearest tube. Omitted code details: the ``+1e-5`` in ``tan(K z) + 1e-5`` of the rising
      part (we use the exact ``sigma'/sigma``) and the ``+1e-11`` in ``rho / (r + 1e-11)`` (we use
      ``sin(a)/r = cos(a) sigma'/sigma``, exact at r = 0). Its direction deviates from the exact current by
      ``O((|x1 - x0|/L)^2)`` (docs/concepts/interaction-fields.md#reference-code-field, docs/concepts/checks.md#c11).

    Both variants are forward-only and defined on the open slab ``0 < z < L`` (sigma = 0 on the plates).
    """

    forward_only = True

    def __init__(self, L: float = 1.0, scale: float = 1.0, exact: bool = True, ramp: float | None = None) -> None:
        super().__init__(L)
        if not (math.isfinite(float(scale)) and scale > 0):
            raise ValueError(f"StrongInteractionField.scale must be > 0 and finite (the tube width), got {scale}")
        self.path = SineBridgePath(scale, 0.5 if ramp is None else ramp)
        self.scale = self.path.scale
        self.exact = bool(exact)
        self._current = ForwardOnlyField(self.path, L)

    # -- shared geometry of the code formula -------------------------------------------------------------------
    def _slices(self, z: Tensor, work: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
        """``t = z/L``, ``sigma(z)`` and ``sigma'(z)/sigma(z)`` in the working dtype."""
        t = (z / self.L).to(work)
        sigma = self.path.sigma(t)
        if bool((sigma <= 0).any()) or bool(((t <= 0) | (t >= 1)).any()):
            raise ValueError("StrongInteractionField(exact=False) is defined between the plates, 0 < z < L")
        return t, sigma, self.path.log_sigma_rate(t) / self.L

    def pair_field(self, z, x, x0, x1):
        if self.exact:
            return self._current.pair_field(z, x, x0, x1)
        z = check_points(z, x, x0, x1)
        if x.shape != x0.shape:
            raise ValueError(f"pair_field takes one pair per point: x {tuple(x.shape)} vs pairs {tuple(x0.shape)}")
        work = work_dtype(x)
        X, X0, X1 = (v.flatten(1).to(work) for v in (x, x0, x1))
        dim = X.shape[1]
        t, sigma, rate = self._slices(z, work)
        delta = X1 - X0
        rho = X - X0 - t[:, None] * delta
        r = rho.norm(dim=1)
        cos_a = torch.rsqrt(1 + (r * rate).square())
        n_norm = torch.sqrt(self.L**2 + delta.square().sum(1))
        magnitude = torch.exp(-r.square() / (2 * sigma.square())) / (
            (cos_a + 1e-8) * (sigma / self.scale) ** dim + 1e-2
        )
        ez = magnitude * cos_a * self.L / n_norm
        ex = magnitude[:, None] * (cos_a[:, None] * delta / n_norm[:, None] + (rate * cos_a)[:, None] * rho)
        return ez.to(x.dtype), ex.reshape(x.shape).to(x.dtype)

    def superpose(self, z, x, x0, x1, chunk_size: int = DEFAULT_CHUNK) -> SuperposedField:
        if self.exact:
            return self._current.superpose(z, x, x0, x1, chunk_size)
        z = check_points(z, x, x0, x1)
        work = work_dtype(x)
        X0, X1 = x0.flatten(1).to(work), x1.flatten(1).to(work)
        center = 0.5 * (X0.mean(0) + X1.mean(0))  # translation invariance in x: smaller norms, less cancellation
        X0, X1 = X0 - center, X1 - center
        dim = X0.shape[1]
        delta = X1 - X0
        n_norm = torch.sqrt(self.L**2 + delta.square().sum(1))  # (B,)
        nz_pair, nx_pair = self.L / n_norm, delta / n_norm[:, None]
        n0, n1, c01 = X0.square().sum(1), X1.square().sum(1), (X0 * X1).sum(1)
        log_reg = math.log(1e-2)
        out = []
        for start in range(0, x.shape[0], chunk_size):
            xi = x[start : start + chunk_size].flatten(1).to(work) - center
            t, sigma, rate = (v[:, None] for v in self._slices(z[start : start + chunk_size], work))
            a, b = 1 - t, t
            r2 = (
                xi.square().sum(1, keepdim=True)
                + a**2 * n0
                + b**2 * n1
                + 2 * a * b * c01
                - 2 * a * (xi @ X0.T)
                - 2 * b * (xi @ X1.T)
            ).clamp_min(0)  # ||x_i - mu_j(z_i)||^2, (b, B)
            cos_a = torch.rsqrt(1 + r2 * rate.square())
            log_den = torch.logaddexp(
                torch.log(cos_a + 1e-8) + dim * torch.log(sigma / self.scale), torch.full_like(cos_a, log_reg)
            )
            log_m = -r2 / (2 * sigma.square()) - log_den
            shift = log_m.amax(1, keepdim=True)
            c = torch.exp(log_m - shift) * cos_a  # weight times cos(a), (b, B)
            ez = c @ nz_pair
            # sum_j c_ij sin(a_ij) rho_ij / r_ij = rate_i sum_j c_ij (x_i - a_i x0_j - b_i x1_j)
            ex = c @ nx_pair + rate * (xi * c.sum(1, keepdim=True) - a * (c @ X0) - b * (c @ X1))
            log_norm, nz, nx = normalize(ez, ex)
            out.append((log_norm + shift[:, 0], nz, nx))
        log_norm, nz, nx = (torch.cat(v) for v in zip(*out))
        return SuperposedField(log_norm.to(x.dtype), nz.to(x.dtype), nx.reshape(x.shape).to(x.dtype))
