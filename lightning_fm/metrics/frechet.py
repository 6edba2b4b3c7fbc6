"""Feature-space distances between two sample sets: the Fréchet distance (FD, FID with Inception features) and the
kernel (Inception) distance (KID), and :class:`FeatureStatistics`, the streaming, DDP-exact accumulator of the
mean and covariance that the FD needs. Pure torch + torchmetrics, no Lightning.

Fréchet distance between the Gaussians ``N(mu_a, S_a)`` and ``N(mu_b, S_b)`` fitted to two feature sets (Dowson &
Landau 1982; Heusel et al. 2017)::

    FD = ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^{1/2} S_b S_a^{1/2})^{1/2})

KID (Binkowski et al. 2018): the unbiased estimator of the squared MMD with the polynomial kernel
``k(x, y) = (gamma x.y + coef)^degree``, averaged over random subsets (the estimator of torch-fidelity and
torchmetrics).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric


def _as_features(features: Tensor, name: str) -> Tensor:
    """``(n, *dims)`` features as ``(n, d)`` float64 (detached), with at least two samples."""
    if features.dim() < 2:
        raise ValueError(f"{name}: features must be (n, d), got shape {tuple(features.shape)}")
    flat = features.detach().flatten(1).double()
    if flat.shape[0] < 2:
        raise ValueError(f"{name}: needs at least 2 samples for a covariance, got {flat.shape[0]}")
    return flat


def _check_dims(name: str, a: Tensor, b: Tensor) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{name}: feature dimensions differ, {a.shape[1]} vs {b.shape[1]}")


def mean_and_covariance(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean ``(d,)`` and unbiased covariance ``(d, d)`` (divisor ``n - 1``) of features ``(n, d)``, in float64."""
    x = _as_features(features, "mean_and_covariance")
    mu = x.mean(0)
    centred = x - mu
    return mu, centred.T @ centred / (x.shape[0] - 1)


def psd_sqrt(matrix: Tensor) -> Tensor:
    """The symmetric PSD square root ``V diag(sqrt(max(l, 0))) V^T`` of a symmetric matrix (its symmetric part),
    by eigendecomposition; eigenvalues below 0 (round-off of a PSD matrix) are clamped to 0."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp_min(0).sqrt()) @ vectors.T


def frechet_distance_from_stats(mu_a: Tensor, cov_a: Tensor, mu_b: Tensor, cov_b: Tensor) -> float:
    """FD between ``N(mu_a, cov_a)`` and ``N(mu_b, cov_b)`` in float64 (see the module docstring); NaN if a
    statistic is not finite (e.g. features of diverged samples).

    The trace term ``tr (S_a^{1/2} S_b S_a^{1/2})^{1/2}`` is the sum of the square roots of the eigenvalues of the
    symmetric PSD matrix ``M = S_a^{1/2} S_b S_a^{1/2}``. It equals the usual ``tr sqrtm(S_a S_b)``: ``S_a S_b =
    S_a^{1/2} (S_a^{1/2} S_b)`` and ``M = (S_a^{1/2} S_b) S_a^{1/2}`` are products of the same two matrices in
    both orders, which have the same non-zero eigenvalues with multiplicities, all >= 0 here (those of ``M``); the
    principal square root of ``S_a S_b`` has their square roots as eigenvalues, so both traces are
    ``sum_i sqrt(lambda_i)``. The eigenvalues of ``M = A A^T`` with ``A = S_a^{1/2} S_b^{1/2}`` are the squared
    singular values of ``A``, so the sum is computed as the nuclear norm ``sum_i sigma_i(A)``: the same number,
    without squaring and then rooting small eigenvalues (which would turn round-off ``eps`` into ``sqrt(eps)``).
    """
    mu_a, mu_b = (torch.as_tensor(v).detach().double().flatten() for v in (mu_a, mu_b))
    cov_a, cov_b = (torch.as_tensor(v).detach().double() for v in (cov_a, cov_b))
    d = mu_a.shape[0]
    if mu_b.shape[0] != d:
        raise ValueError(f"frechet_distance: feature dimensions differ, {d} vs {mu_b.shape[0]}")
    for name, cov in (("cov_a", cov_a), ("cov_b", cov_b)):
        if tuple(cov.shape) != (d, d):
            raise ValueError(
                f"frechet_distance: {name} must be ({d}, {d}) for {d}-dimensional means, got {tuple(cov.shape)}"
            )
    cov_b = cov_b.to(cov_a.device)
    mu_b = mu_b.to(mu_a.device)
    if not all(bool(torch.isfinite(v).all()) for v in (mu_a, mu_b, cov_a, cov_b)):
        return float("nan")
    root_a, root_b = psd_sqrt(cov_a), psd_sqrt(cov_b)
    trace_sqrt = torch.linalg.svdvals(root_a @ root_b).sum()
    value = (mu_a - mu_b).pow(2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * trace_sqrt
    return float(value)


def frechet_distance(features_a: Tensor, features_b: Tensor) -> float:
    """FD between the Gaussians fitted (mean, unbiased covariance) to features ``(n_a, d)`` and ``(n_b, d)``;
    see :func:`frechet_distance_from_stats`."""
    a, b = _as_features(features_a, "frechet_distance"), _as_features(features_b, "frechet_distance")
    _check_dims("frechet_distance", a, b)
    return frechet_distance_from_stats(*mean_and_covariance(a), *mean_and_covariance(b))


def polynomial_mmd2(x: Tensor, y: Tensor, degree: int = 3, gamma: float | None = None, coef: float = 1.0) -> Tensor:
    """Unbiased MMD^2 of two equally large samples ``(m, d)`` with ``k(u, v) = (gamma u.v + coef)^degree``
    (``gamma = 1/d`` if None)::

        MMD^2 = sum_{i != j} [k(x_i, x_j) + k(y_i, y_j)] / (m (m - 1)) - 2 sum_{i, j} k(x_i, y_j) / m^2
    """
    m = x.shape[0]
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    kxx, kyy, kxy = ((p @ q.T * gamma + coef) ** degree for p, q in ((x, x), (y, y), (x, y)))
    within = kxx.sum() - kxx.diagonal().sum() + kyy.sum() - kyy.diagonal().sum()
    return within / (m * (m - 1)) - 2 * kxy.sum() / (m * m)


def kernel_inception_distance(
    features_a: Tensor,
    features_b: Tensor,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """KID: mean and (population, ``ddof=0``) standard deviation over ``subsets`` random subsets of
    :func:`polynomial_mmd2` between ``subset_size`` features of each side, drawn without replacement.

    Subset ``s`` takes ``randperm(n_a)[:subset_size]`` of ``a`` and then ``randperm(n_b)[:subset_size]`` of ``b``
    from ``generator`` (None: torch's global generator), the draws of torchmetrics' ``KernelInceptionDistance``.
    The kernel sums are computed in float64 on the features' device.
    """
    a, b = _as_features(features_a, "kernel_inception_distance"), _as_features(features_b, "kernel_inception_distance")
    _check_dims("kernel_inception_distance", a, b)
    if isinstance(subsets, bool) or int(subsets) != subsets or subsets < 1:
        raise ValueError(f"kernel_inception_distance: subsets must be an integer >= 1, got {subsets!r}")
    if isinstance(subset_size, bool) or int(subset_size) != subset_size or subset_size < 2:
        raise ValueError(f"kernel_inception_distance: subset_size must be an integer >= 2, got {subset_size!r}")
    if min(len(a), len(b)) < subset_size:
        raise ValueError(
            f"kernel_inception_distance: subset_size={subset_size} needs at least that many samples on "
            f"each side, got {len(a)} and {len(b)}; lower subset_size or evaluate more samples"
        )
    values = []
    for _ in range(int(subsets)):
        pick_a = torch.randperm(len(a), generator=generator)[:subset_size].to(a.device)
        pick_b = torch.randperm(len(b), generator=generator)[:subset_size].to(b.device)
        values.append(polynomial_mmd2(a[pick_a], b[pick_b], degree, gamma, coef))
    stacked = torch.stack(values)
    return float(stacked.mean()), float(stacked.std(unbiased=False))


class FeatureStatistics(Metric):
    """Streaming mean and unbiased covariance of ``(n, d)`` features over batches and processes.

    States (float64, summed over processes): ``sum = sum_i f_i`` ``(d,)``, ``outer = sum_i f_i f_i^T`` ``(d, d)``,
    ``count = n``. :meth:`compute` returns ``mu = sum / n`` and ``cov = (outer - n mu mu^T) / (n - 1)``: sums are
    exact under any batching and number of processes up to float64 round-off (relative ``~eps * |mu|^2 / var``).
    Pass the result to :func:`frechet_distance_from_stats`.
    """

    full_state_update = False
    higher_is_better = False
    # the states (add_state)
    sum: Tensor
    outer: Tensor
    count: Tensor

    def __init__(self, num_features: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if isinstance(num_features, bool) or int(num_features) != num_features or num_features < 1:
            raise ValueError(f"FeatureStatistics.num_features must be an integer >= 1, got {num_features!r}")
        d = self.num_features = int(num_features)
        self.add_state("sum", default=torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("outer", default=torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, features: Tensor) -> None:
        x = features.detach().flatten(1).double() if features.dim() > 1 else None
        if x is None or x.shape[1] != self.num_features:
            raise ValueError(
                f"FeatureStatistics: expected features (n, {self.num_features}), got shape {tuple(features.shape)}"
            )
        self.sum += x.sum(0)
        self.outer += x.T @ x
        self.count += x.shape[0]

    def compute(self) -> tuple[Tensor, Tensor]:
        n = float(self.count)
        if n < 2:
            raise ValueError(f"FeatureStatistics: needs at least 2 samples for a covariance, got {int(n)}")
        mu = self.sum / n
        cov = (self.outer - n * torch.outer(mu, mu)) / (n - 1)
        return mu, (cov + cov.T) / 2
