"""Fréchet distance, KID and the streaming feature statistics against closed forms and independent computations."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from lightning_fm.metrics import (
    FeatureStatistics,
    frechet_distance,
    frechet_distance_from_stats,
    kernel_inception_distance,
)
from lightning_fm.metrics.frechet import mean_and_covariance, polynomial_mmd2

D64 = torch.float64


def _spd(d, seed, scale=1.0):
    """A random symmetric positive definite matrix with eigenvalues in [0.1, 4.1] * scale."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=D64))
    return scale * (q * (0.1 + 4 * torch.rand(d, generator=g, dtype=D64))) @ q.T


def _scipy_fd(m1, s1, m2, s2):
    """Independent FD: ``||m1 - m2||^2 + tr(S1 + S2 - 2 sqrtm(S1 S2))`` with scipy's general (Schur) sqrtm."""
    s1, s2 = s1.numpy(), s2.numpy()
    root = scipy.linalg.sqrtm(s1 @ s2)
    return float(((m1 - m2) ** 2).sum()) + float(np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def test_fd_of_diagonal_covariances_is_the_closed_form():
    # commuting (diagonal) covariances: FD = ||m1 - m2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2
    m1, m2 = torch.tensor([0.0, 1.0, -2.0], dtype=D64), torch.tensor([3.0, 1.0, 2.0], dtype=D64)
    a, b = torch.tensor([1.0, 4.0, 0.25], dtype=D64), torch.tensor([9.0, 1.0, 0.25], dtype=D64)
    expected = 9 + 0 + 16 + (1 - 3) ** 2 + (2 - 1) ** 2 + 0
    assert frechet_distance_from_stats(m1, torch.diag(a), m2, torch.diag(b)) == pytest.approx(expected, abs=1e-10)


def _sqrtm(s):
    values, vectors = torch.linalg.eigh(s)
    return (vectors * values.sqrt()) @ vectors.T


def test_fd_of_non_commuting_covariances_matches_scipy_sqrtm():
    # elongated covariances whose axes differ by 60 degrees: S_a S_b != S_b S_a
    c, s = math.cos(math.pi / 3), math.sin(math.pi / 3)
    q = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=D64)
    a = torch.diag(torch.tensor([9.0, 0.04, 1.0], dtype=D64))
    b = q @ torch.diag(torch.tensor([9.0, 0.04, 4.0], dtype=D64)) @ q.T
    m1, m2 = torch.zeros(3, dtype=D64), torch.tensor([1.0, 0.0, -1.0], dtype=D64)
    expected = _scipy_fd(m1, a, m2, b)
    assert frechet_distance_from_stats(m1, a, m2, b) == pytest.approx(expected, rel=1e-10, abs=1e-10)
    commuting_formula = float(
        ((m1 - m2) ** 2).sum() + torch.trace(a) + torch.trace(b) - 2 * torch.trace(_sqrtm(a) @ _sqrtm(b))
    )
    assert abs(commuting_formula - expected) > 1.0  # the check above tells the right formula from this one
    # random 5-D pairs as well
    for seed in range(3):
        a, b = _spd(5, 2 * seed), _spd(5, 2 * seed + 1, scale=3.0)
        m2 = torch.linspace(-1, 1, 5, dtype=D64)
        expected = _scipy_fd(torch.zeros(5, dtype=D64), a, m2, b)
        assert frechet_distance_from_stats(torch.zeros(5), a, m2, b) == pytest.approx(expected, rel=1e-10)


def test_fd_is_symmetric_zero_for_identical_statistics_and_rotation_invariant():
    a, b = _spd(6, 2), _spd(6, 3, scale=0.5)
    m1, m2 = torch.randn(6, dtype=D64), torch.randn(6, dtype=D64)
    forward, backward = frechet_distance_from_stats(m1, a, m2, b), frechet_distance_from_stats(m2, b, m1, a)
    assert forward == pytest.approx(backward, rel=1e-12)
    assert abs(frechet_distance_from_stats(m1, a, m1, a)) < 1e-10
    # a rank-deficient covariance (rank 2 in 6 dimensions): still 0 for identical statistics
    low = torch.randn(6, 2, generator=torch.Generator().manual_seed(4), dtype=D64)
    assert abs(frechet_distance_from_stats(m1, low @ low.T, m1, low @ low.T)) < 1e-10
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(5), dtype=D64))
    rotated = frechet_distance_from_stats(q @ m1, q @ a @ q.T, q @ m2, q @ b @ q.T)
    assert rotated == pytest.approx(forward, rel=1e-10)


def test_fd_of_samples_converges_to_the_population_fd():
    d, n = 4, 200_000
    a, b = _spd(d, 6), _spd(d, 7, scale=2.0)
    m1, m2 = torch.zeros(d, dtype=D64), torch.tensor([1.0, -0.5, 0.0, 0.5], dtype=D64)
    g = torch.Generator().manual_seed(8)
    x = m1 + torch.randn(n, d, generator=g, dtype=D64) @ torch.linalg.cholesky(a).T
    y = m2 + torch.randn(n, d, generator=g, dtype=D64) @ torch.linalg.cholesky(b).T
    exact = _scipy_fd(m1, a, m2, b)
    # Tolerance from a first-order expansion of FD around the population statistics (errors are O(n^{-1/2})):
    # * mean term ||dm + e||^2, e = mean errors ~ N(0, (A + B)/n): bias tr(A + B)/n, variance 4 dm^T (A + B) dm / n;
    # * covariance terms: dFD/dA = G_A = I - T (T = A^{-1/2} (A^{1/2} B A^{1/2})^{1/2} A^{-1/2}, the OT map from
    #   N(0, A) to N(0, B)) and dFD/dB = G_B = I - T^{-1}; for Gaussian samples (n - 1) A_hat ~ Wishart(A, n - 1),
    #   so Var tr(G_A A_hat) = 2 tr((G_A A)^2)/n, likewise for B;
    # * sample means and covariances of Gaussians are independent, so the variances add. Five standard
    #   deviations plus the bias leave a false-failure chance below 1e-6 (O(1/n) second-order terms are ~1e-4).
    dm = m2 - m1
    root = _sqrtm(a)
    t = torch.linalg.inv(root) @ _sqrtm(root @ b @ root) @ torch.linalg.inv(root)
    g_a, g_b = torch.eye(d, dtype=D64) - t, torch.eye(d, dtype=D64) - torch.linalg.inv(t)
    variance = (4 * dm @ (a + b) @ dm + 2 * torch.trace(g_a @ a @ g_a @ a) + 2 * torch.trace(g_b @ b @ g_b @ b)) / n
    tol = float(torch.trace(a + b) / n + 5 * variance.sqrt())
    assert tol < 0.02 * exact  # the check is not vacuous
    assert frechet_distance(x, y) == pytest.approx(exact, abs=tol)


def test_fd_checks_its_inputs_and_is_nan_for_non_finite_features():
    with pytest.raises(ValueError, match="feature dimensions differ"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(torch.randn(1, 3), torch.randn(10, 3))
    with pytest.raises(ValueError, match="cov_b must be"):
        frechet_distance_from_stats(torch.zeros(3), torch.eye(3), torch.zeros(3), torch.eye(2))
    bad = torch.randn(10, 3)
    bad[2, 1] = float("nan")
    assert math.isnan(frechet_distance(bad, torch.randn(10, 3)))


# -- KID -----------------------------------------------------------------------------------------------------------
def _loop_mmd2(x, y, degree=3, gamma=None, coef=1.0):
    """The unbiased polynomial-kernel MMD^2, term by term."""
    m, d = x.shape
    gamma = 1.0 / d if gamma is None else gamma

    def k(u, v):
        return (gamma * float(u @ v) + coef) ** degree

    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    across = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return within / (m * (m - 1)) - 2 * across / (m * m)


def test_polynomial_mmd2_matches_a_term_by_term_sum_and_torch_fidelity():
    from torch_fidelity.metric_kid import kernel_poly, mmd2

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 5, generator=g, dtype=D64), torch.randn(12, 5, generator=g, dtype=D64) + 0.4
    assert float(polynomial_mmd2(x, y)) == pytest.approx(_loop_mmd2(x, y), rel=1e-12)
    assert float(polynomial_mmd2(x, y, 2, 0.3, 0.5)) == pytest.approx(_loop_mmd2(x, y, 2, 0.3, 0.5), rel=1e-12)
    options = {"kid_kernel_poly_degree": 3, "kid_kernel_poly_gamma": None, "kid_kernel_poly_coef0": 1.0}
    kxx, kyy, kxy = (kernel_poly(p.numpy(), q.numpy(), **options) for p, q in ((x, x), (y, y), (x, y)))
    assert float(polynomial_mmd2(x, y)) == pytest.approx(float(mmd2(kxx, kxy, kyy)), rel=1e-12)


@pytest.mark.filterwarnings("ignore:Metric `Kernel Inception Distance` will save")
def test_kid_equals_torchmetrics_on_the_same_subsets():
    from torchmetrics.image.kid import KernelInceptionDistance

    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(300, 8, generator=g, dtype=D64), torch.randn(250, 8, generator=g, dtype=D64) + 0.3
    torch.manual_seed(7)  # torchmetrics draws its subsets from the global generator, real side first
    reference = KernelInceptionDistance(feature=torch.nn.Identity(), subsets=5, subset_size=50)
    reference.update(a, real=True)
    reference.update(b, real=False)
    expected = [float(v) for v in reference.compute()]
    mean, std = kernel_inception_distance(a, b, subsets=5, subset_size=50, generator=torch.Generator().manual_seed(7))
    assert mean == pytest.approx(expected[0], rel=1e-12)
    assert std == pytest.approx(expected[1], rel=1e-12)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(2000, 16, generator=g), torch.randn(2000, 16, generator=g)
    same = kernel_inception_distance(x, y, subsets=50, subset_size=500, generator=g)
    shifted = kernel_inception_distance(x, y + 0.5, subsets=50, subset_size=500, generator=g)
    assert abs(same[0]) < 3 * same[1]  # unbiased: mean 0, within the spread of single-subset estimates
    assert shifted[0] > 10 * shifted[1] > 0


def test_kid_needs_enough_samples_on_each_side():
    with pytest.raises(ValueError, match="subset_size=100 needs at least that many samples"):
        kernel_inception_distance(torch.randn(200, 4), torch.randn(99, 4), subset_size=100)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        kernel_inception_distance(torch.randn(20, 4), torch.randn(20, 5), subset_size=10)


# -- streaming statistics ------------------------------------------------------------------------------------------
def test_feature_statistics_are_batching_invariant_and_equal_the_one_shot_statistics():
    g = torch.Generator().manual_seed(3)
    x = 3.0 + torch.randn(1000, 6, generator=g, dtype=D64) @ torch.randn(6, 6, generator=g, dtype=D64)
    whole = FeatureStatistics(6)
    whole.update(x)
    mu, cov = whole.compute()
    assert torch.allclose(mu, x.mean(0), rtol=1e-12, atol=0)
    assert torch.allclose(cov, torch.cov(x.T), rtol=1e-10, atol=0)  # unbiased, n - 1
    batched = FeatureStatistics(6)
    for part in torch.split(x, [1, 300, 17, 682]):
        batched.update(part)
    mu_b, cov_b = batched.compute()
    assert torch.allclose(mu_b, mu, rtol=1e-10, atol=0) and torch.allclose(cov_b, cov, rtol=1e-10, atol=0)
    # two processes' states summed (what dist_reduce_fx="sum" does under DDP) give the same statistics
    rank0, rank1 = FeatureStatistics(6), FeatureStatistics(6)
    rank0.update(x[:400])
    rank1.update(x[400:])
    rank0.merge_state(rank1)
    mu_m, cov_m = rank0.compute()
    assert torch.allclose(mu_m, mu, rtol=1e-10, atol=0) and torch.allclose(cov_m, cov, rtol=1e-10, atol=0)
    assert torch.allclose(mean_and_covariance(x)[1], cov, rtol=1e-10, atol=0)


@pytest.mark.filterwarnings("ignore:The ``compute`` method")
def test_feature_statistics_feed_the_fd_and_check_shapes():
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(500, 3, generator=g), torch.randn(400, 3, generator=g) + 1
    sx, sy = FeatureStatistics(3), FeatureStatistics(3)
    for part in x.split(128):
        sx.update(part)
    sy.update(y)
    assert frechet_distance_from_stats(*sx.compute(), *sy.compute()) == pytest.approx(frechet_distance(x, y), rel=1e-9)
    with pytest.raises(ValueError, match=r"expected features \(n, 3\)"):
        sx.update(torch.randn(4, 5))
    with pytest.raises(ValueError, match="at least 2 samples"):
        FeatureStatistics(3).compute()
