"""Electrostatic Field Matching: the Coulomb capacitor in R^{D+1} (docs/concepts/interaction-fields.md#efm-field,
docs/concepts/interaction-fields.md#efm-target).

Source charges +1 at ``(0, x0_j)``, target charges -1 at ``(L, x1_j)``; with the Coulomb kernel of R^{D+1}

    K(u) = u / (S_D ||u||^{D+1}),    S_D = 2 pi^{(D+1)/2} / Gamma((D+1)/2)   (area of the unit sphere S^D),

the field of B pairs is ``E(x~) = (1/B) sum_j [K(x~ - (0, x0_j)) - K(x~ - (L, x1_j))]``. Gauss's law: the flux of
``K`` through any closed surface around its charge is 1. The field is not forward-only: behind the plates
(``z < 0``, ``z > L``) near the charges ``E_z < 0`` (docs/concepts/duality.md#forward-only-models,
docs/concepts/checks.md#c9), lines leave the slab and come back.
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
    pairwise_sq_dist,
    work_dtype,
)


def log_sphere_area(D: int) -> float:
    """``log S_D``, the log-area of the unit sphere S^D in R^{D+1}."""
    return math.log(2) + 0.5 * (D + 1) * math.log(math.pi) - math.lgamma(0.5 * (D + 1))


class CoulombField(InteractionField):
    """The EFM capacitor field (not forward-only).

    Superposition (docs/concepts/interaction-fields.md#efm-target): with ``a_ij = -(D+1) log||x~_i - (0, x0_j)||`` and
    ``b_ij = -(D+1) log||x~_i - (L, x1_j)||``, one shared shift ``M_i = max(max_j a_ij, max_j b_ij)`` over *both*
    charge signs, ``E_i ~ sum_j e^{a_ij - M_i} (x~_i - (0, x0_j)) - sum_j e^{b_ij - M_i} (x~_i - (L, x1_j))``
    (exactly proportional to the Coulomb sum), normalised once.

    Args:
        L: plate distance.
        separate_normalization: reproduce the reference EFM code instead: each sign is self-normalised on its own
            (softmax of a, softmax of b), ``e_+ = sum_j softmax(a)_j (x~ - (0, x0_j))`` and
            ``e_- = -sum_j softmax(b)_j (x~ - (L, x1_j))``, and the field is
            ``e_+ / (||e_+|| + gamma) + e_- / (||e_-|| + gamma)``. It changes the relative weight of the two plates,
            so it is an approximation of the Coulomb direction (docs/concepts/interaction-fields.md#efm-target);
            ``gamma = inf`` gives the un-normalised sum ``e_+ + e_-`` of the IFM repository's EFM code.
        gamma: the regulariser of ``separate_normalization`` (EFM code: 5 on the final target; 0 = unit parts).
            With ``separate_normalization`` the ``log_norm`` of :meth:`superpose` is the log-norm of that
            dimensionless vector, not of a physical field.

    Precision: squared distances are expanded into matrix products (after centring the data); in float32 the
    direction near a charge has an error of about ``1e-7 ||x|| / dist(x~, charge)``. Use float64 within ~1e-3 of
    a charge. Exactly on a charge the direction is 0.
    """

    forward_only = False

    def __init__(self, L: float = 1.0, separate_normalization: bool = False, gamma: float = 0.0) -> None:
        super().__init__(L)
        gamma = float(gamma)
        if not gamma >= 0:
            raise ValueError(f"CoulombField.gamma must be >= 0 (inf allowed), got {gamma}")
        self.separate_normalization = bool(separate_normalization)
        self.gamma = gamma

    def kernel(self, uz: Tensor, ux: Tensor) -> tuple[Tensor, Tensor]:
        """``K(u) = u / (S_D ||u||^{D+1})`` for ``u = (uz (n,), ux (n, *dims))``; exact values (under/overflow)."""
        dim = ux[0].numel()
        sq = uz.square() + ux.flatten(1).square().sum(1)
        coef = torch.exp(-log_sphere_area(dim) - 0.5 * (dim + 1) * torch.log(sq))
        return coef * uz, coef.reshape(-1, *([1] * (ux.dim() - 1))) * ux

    def pair_field(self, z, x, x0, x1):
        """``K(x~_i - (0, x0_i)) - K(x~_i - (L, x1_i))``: the two charges of pair i, at point i."""
        z = check_points(z, x, x0, x1)
        pz, px = self.kernel(z, x - x0)
        qz, qx = self.kernel(z - self.L, x - x1)
        return pz - qz, px - qx

    def superpose(self, z, x, x0, x1, chunk_size: int = DEFAULT_CHUNK) -> SuperposedField:
        z = check_points(z, x, x0, x1)
        work = work_dtype(x)
        X0, X1 = x0.flatten(1).to(work), x1.flatten(1).to(work)
        center = 0.5 * (X0.mean(0) + X1.mean(0))  # translation invariance in x: smaller norms, less cancellation
        X0, X1 = X0 - center, X1 - center
        dim, n_pairs = X0.shape[1], X0.shape[0]
        n0, n1 = X0.square().sum(1), X1.square().sum(1)
        power = 0.5 * (dim + 1)
        tiny = torch.finfo(work).tiny
        out = []
        for start in range(0, x.shape[0], chunk_size):
            xi = x[start : start + chunk_size].flatten(1).to(work) - center
            zi = z[start : start + chunk_size].to(work)[:, None]
            a = -power * torch.log((zi.square() + pairwise_sq_dist(xi, X0, n0)).clamp_min(tiny))
            b = -power * torch.log(((zi - self.L).square() + pairwise_sq_dist(xi, X1, n1)).clamp_min(tiny))
            if self.separate_normalization:
                out.append(self._separate(zi, xi, a, b, X0, X1))
                continue
            shift = torch.maximum(a.amax(1, keepdim=True), b.amax(1, keepdim=True))
            wa, wb = torch.exp(a - shift), torch.exp(b - shift)
            sa, sb = wa.sum(1, keepdim=True), wb.sum(1, keepdim=True)
            # sum_j wa_j (x~ - (0, x0_j)) - sum_j wb_j (x~ - (L, x1_j))
            ez = zi * (sa - sb) + self.L * sb
            ex = xi * (sa - sb) - wa @ X0 + wb @ X1
            log_norm, nz, nx = normalize(ez[:, 0], ex)
            out.append((log_norm + shift[:, 0] - log_sphere_area(dim) - math.log(n_pairs), nz, nx))
        log_norm, nz, nx = (torch.cat(v) for v in zip(*out))
        return SuperposedField(log_norm.to(x.dtype), nz.to(x.dtype), nx.reshape(x.shape).to(x.dtype))

    def _separate(self, zi, xi, a, b, X0, X1):
        """Reference-code variant: each sign self-normalised, ``e/(||e|| + gamma)`` each, summed."""
        wa, wb = torch.softmax(a, dim=1), torch.softmax(b, dim=1)
        plus_z, plus_x = zi[:, 0], xi - wa @ X0
        minus_z, minus_x = -(zi[:, 0] - self.L), -(xi - wb @ X1)
        if math.isinf(self.gamma):
            ez, ex = plus_z + minus_z, plus_x + minus_x
        else:
            norm_p = torch.sqrt(plus_z.square() + plus_x.square().sum(1)) + self.gamma
            norm_m = torch.sqrt(minus_z.square() + minus_x.square().sum(1)) + self.gamma
            norm_p, norm_m = norm_p.clamp_min(torch.finfo(a.dtype).tiny), norm_m.clamp_min(torch.finfo(a.dtype).tiny)
            ez = plus_z / norm_p + minus_z / norm_m
            ex = plus_x / norm_p[:, None] + minus_x / norm_m[:, None]
        return normalize(ez, ex)
