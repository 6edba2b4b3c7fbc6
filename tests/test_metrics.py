"""W2 and MMD against closed forms."""

import math

import pytest
import torch

from lightning_fm.metrics import mmd_rbf, wasserstein2


def test_w2_of_a_translation_is_the_shift():
    # W2(mu, mu + c) = |c| exactly for any empirical measure mu: the identity matching is optimal.
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    shift = torch.tensor([3.0, -4.0], dtype=torch.float64)
    assert wasserstein2(x, x + shift) == pytest.approx(5.0, abs=1e-9)


def test_w2_of_permuted_sets_is_zero_and_handles_image_shapes():
    x = torch.randn(200, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    assert wasserstein2(x, x[torch.randperm(200)]) == pytest.approx(0.0, abs=1e-9)


def test_w2_between_point_masses():
    # all mass at a vs all mass at b: W2 = |a - b|
    a, b = torch.zeros(10, 3), torch.full((7, 3), 2.0)
    assert wasserstein2(a, b) == pytest.approx(2.0 * math.sqrt(3), abs=1e-9)


def test_w2_dimension_mismatch_raises():
    with pytest.raises(ValueError, match="dimensions differ"):
        wasserstein2(torch.zeros(4, 2), torch.zeros(4, 3))


def test_mmd_zero_for_same_distribution_and_positive_for_shift():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(400, 2, generator=g), torch.randn(400, 2, generator=g)
    same, shifted = mmd_rbf(x, y), mmd_rbf(x, y + 2.0)
    assert abs(same) < 0.02  # unbiased estimator: mean 0, s.e. ~ 1/n
    assert shifted > 0.5


def test_w2_is_nan_for_non_finite_samples():
    x = torch.randn(10, 2)
    x[3, 0] = float("inf")
    assert math.isnan(wasserstein2(x, torch.randn(10, 2)))


def test_streaming_w2_over_batches_equals_the_w2_of_the_whole_sets():
    from lightning_fm.metrics import SampleW2

    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g) + 1
    metric = SampleW2(max_samples=1000)
    for s in (0, 120, 250):  # uneven batches, in an order different from the sets'
        metric.update(x[s : s + 120] if s != 250 else x[240:], y[s : s + 120] if s != 250 else y[240:])
    assert float(metric.compute()) == pytest.approx(wasserstein2(x, y), abs=1e-9)
    capped = SampleW2(max_samples=100)
    capped.update(x[:80], y[:80])
    capped.update(x[80:], y[80:])  # keeps only the first 100 of each side
    assert float(capped.compute()) == pytest.approx(wasserstein2(x[:100], y[:100]), abs=1e-9)
    with pytest.raises(ValueError, match="max_samples"):
        SampleW2(max_samples=1)
