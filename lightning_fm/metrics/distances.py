"""Distances between two sample sets: exact W2 (POT's EMD) and MMD (pure torch + POT)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def wasserstein2(x: Tensor, y: Tensor, max_iter: int = 10_000_000) -> float:
    """Exact W2 between the empirical measures of ``x`` (n, *dims) and ``y`` (m, *dims):
    ``W2 = sqrt(min_pi sum_ij pi_ij ||x_i - y_j||^2)`` by exact EMD (POT) in float64. NaN if a sample is not
    finite (e.g. a diverged sampler): such a set has no W2, and reporting one would hide it."""
    a = x.detach().flatten(1).double().cpu()
    b = y.detach().flatten(1).double().cpu()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"wasserstein2: sample dimensions differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        return float("nan")
    cost = torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").pow(2).numpy()
    wa, wb = np.full(len(a), 1.0 / len(a)), np.full(len(b), 1.0 / len(b))
    import ot  # POT: imported where it is used, it is slow to import

    return float(np.sqrt(max(ot.emd2(wa, wb, cost, numItermax=max_iter), 0.0)))


def mmd_rbf(x: Tensor, y: Tensor, bandwidths: tuple[float, ...] = (0.1, 0.5, 1.0, 2.0, 5.0)) -> float:
    """Unbiased squared MMD with a sum of RBF kernels ``exp(-||a-b||^2 / (2 h^2))`` over ``bandwidths``."""
    a, b = x.detach().flatten(1).double(), y.detach().flatten(1).double()
    n, m = len(a), len(b)

    def kernel(p: Tensor, q: Tensor) -> Tensor:
        d2 = torch.cdist(p, q).pow(2)
        total = torch.zeros_like(d2)
        for h in bandwidths:
            total = total + torch.exp(-d2 / (2 * h * h))
        return total

    kxx, kyy, kxy = kernel(a, a), kernel(b, b), kernel(a, b)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(sxx + syy - 2 * kxy.mean())


def sliced_wasserstein2(
    x: Tensor, y: Tensor, projections: int = 256, generator: torch.Generator | None = None
) -> float:
    """Sliced W2 between the empirical measures of ``x`` (n, *dims) and ``y`` (m, *dims):
    ``SW2 = sqrt(E_theta W2^2(theta . x, theta . y))`` over ``projections`` directions ``theta`` uniform on the
    unit sphere; each 1-D W2^2 is the mean squared difference of quantiles (sorted values, linearly interpolated
    onto a common grid when n != m). Cheap in high dimension where exact W2 is not."""
    a, b = x.detach().flatten(1).double().cpu(), y.detach().flatten(1).double().cpu()
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"sliced_wasserstein2: sample dimensions differ, {tuple(x.shape)} vs {tuple(y.shape)}")
    theta = torch.randn(a.shape[1], projections, generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    grid = torch.linspace(0, 1, max(len(a), len(b)), dtype=torch.float64) if len(a) != len(b) else None
    total = 0.0
    for chunk in theta.split(64, dim=1):  # bounded memory: (n + m) x 64 projections at a time
        pa, pb = (a @ chunk).sort(dim=0).values, (b @ chunk).sort(dim=0).values
        if grid is not None:
            pa, pb = _quantiles(pa, grid), _quantiles(pb, grid)
        total += float((pa - pb).pow(2).mean(0).sum())
    return math.sqrt(total / projections)


def _quantiles(sorted_values: Tensor, grid: Tensor) -> Tensor:
    """Linear interpolation of sorted columns ``(n, k)`` at the probabilities ``grid`` (in [0, 1])."""
    position = grid * (len(sorted_values) - 1)
    low = position.floor().long().clamp(max=len(sorted_values) - 1)
    high = (low + 1).clamp(max=len(sorted_values) - 1)
    weight = (position - low)[:, None]
    return sorted_values[low] * (1 - weight) + sorted_values[high] * weight
