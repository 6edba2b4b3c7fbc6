"""Couplings: exact minibatch OT reaches POT's optimum, Sinkhorn interpolates between OT and independent pairing."""

import warnings

import numpy as np
import ot
import pytest
import torch

from lightning_fm.couplings import COUPLINGS, Coupled, Coupling, IndependentCoupling, KeepPairs, OTCoupling
from lightning_fm.utils.spec import build, to_spec

F64 = torch.float64


def gen(seed):
    return torch.Generator().manual_seed(seed)


def batches(n0, n1=None, shape=(2,), seed=0, dtype=torch.float32):
    g = gen(seed)
    x0 = torch.randn(n0, *shape, generator=g, dtype=dtype)
    x1 = 0.5 * torch.randn(n1 or n0, *shape, generator=g, dtype=dtype) + 2.0
    return x0, x1


def sq_cost(a, b):
    """Independent squared distances of flattened samples, (n0, n1), float64."""
    a, b = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    return ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)


def pair_cost(x0, x1):
    return (x0 - x1).reshape(x0.shape[0], -1).double().pow(2).sum(1).mean().item()


def emd_cost(x0, x1):
    m = sq_cost(x0, x1).numpy()
    return ot.emd2(np.full(m.shape[0], 1 / m.shape[0]), np.full(m.shape[1], 1 / m.shape[1]), m)


def test_independent_coupling_is_the_identity():
    x0, x1 = batches(16)
    y0, y1 = torch.arange(16), torch.arange(16) + 100
    out = IndependentCoupling()(x0, x1, y0, y1)
    assert isinstance(out, Coupled) and isinstance(IndependentCoupling(), Coupling)
    assert out.x0 is x0 and out.x1 is x1 and out.y0 is y0 and out.y1 is y1
    x0_, x1_, ya, yb = IndependentCoupling()(x0, x1)
    assert ya is None and yb is None


@pytest.mark.parametrize("n, shape", [(64, (2,)), (256, (2,)), (64, (1, 8, 8))])
def test_exact_ot_reaches_the_pot_optimum_with_a_permutation(n, shape):
    x0, x1 = batches(n, shape=shape, seed=n)
    y0, y1 = torch.arange(n) + 1000, torch.arange(n)
    out = OTCoupling("exact")(x0, x1, y0, y1)
    optimum = emd_cost(x0, x1)
    assert abs(pair_cost(out.x0, out.x1) - optimum) < 1e-6 * max(1.0, optimum)
    assert pair_cost(out.x0, out.x1) < pair_cost(x0, x1)  # beats independent pairing
    # x0 and y0 stay in order, x1 is permuted (every row used once) and its labels follow
    assert out.x0 is x0 and out.y0 is y0
    assert torch.equal(torch.sort(out.y1).values, torch.arange(n))
    assert torch.equal(out.x1, x1[out.y1])
    assert out.x1.shape == x1.shape and out.x1.dtype == x1.dtype


def test_exact_ot_recovers_a_known_permutation():
    # x1 is a shuffled, slightly shifted copy of x0: the optimal plan undoes the shuffle
    x0 = torch.randn(50, 3, generator=gen(1), dtype=F64)
    perm = torch.randperm(50, generator=gen(2))
    x1 = x0[perm] + 1e-3
    out = OTCoupling("exact")(x0, x1, y1=perm)
    torch.testing.assert_close(out.x1, x0 + 1e-3)
    assert torch.equal(out.y1, torch.arange(50))


def test_exact_ot_unequal_batch_sizes():
    x0, x1 = batches(40, 80, seed=3, dtype=F64)
    y1 = torch.arange(80)
    coupling = OTCoupling("exact")
    out = coupling(x0, x1, y1=y1, generator=gen(4))
    assert out.x0 is x0 and out.x1.shape == (40, 2) and out.y1.shape == (40,)
    assert torch.equal(out.x1, x1[out.y1])
    plan = coupling.plan(coupling.cost_matrix(x0, x1))
    assert (plan[torch.arange(40), out.y1] > 0).all()  # partners drawn from the support of each row
    torch.testing.assert_close(plan.sum(1), torch.full((40,), 1 / 40, dtype=F64))
    torch.testing.assert_close(plan.sum(0), torch.full((80,), 1 / 80, dtype=F64))
    # expected cost of the drawn pairs = <P*, M> = the POT optimum; the draw stays close to it
    draws = [pair_cost(x0, coupling(x0, x1, generator=gen(s)).x1) for s in range(20)]
    assert abs(np.mean(draws) - emd_cost(x0, x1)) < 0.05 * emd_cost(x0, x1)
    assert np.mean(draws) < sq_cost(x0, x1).mean().item()
    # more source than target rows
    small = coupling(x1, x0, generator=gen(5))
    assert small.x1.shape == (80, 2)


def test_generator_makes_draws_reproducible():
    x0, x1 = batches(64, seed=6)
    s = OTCoupling("sinkhorn", reg=0.5)
    a, b = s(x0, x1, generator=gen(7)), s(x0, x1, generator=gen(7))
    assert torch.equal(a.x1, b.x1)


def test_sinkhorn_interpolates_between_exact_and_independent():
    x0, x1 = batches(256, seed=8, dtype=F64)
    y1 = torch.arange(256)
    exact = emd_cost(x0, x1)
    independent = sq_cost(x0, x1).mean().item()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the log-domain solver converges without warnings here
        sharp = OTCoupling("sinkhorn", reg=0.05)
        out = sharp(x0, x1, y1=y1, generator=gen(9))
    assert torch.equal(out.x1, x1[out.y1]) and out.x0 is x0
    plan = sharp.plan(sharp.cost_matrix(x0, x1))
    assert torch.isfinite(plan).all() and abs(plan.sum().item() - 1) < 1e-9
    assert (plan * sharp.cost_matrix(x0, x1)).sum().item() == pytest.approx(exact, rel=0.01)
    assert pair_cost(x0, out.x1) == pytest.approx(exact, rel=0.03)
    blurred = OTCoupling("sinkhorn", reg=1e4)
    costs = [pair_cost(x0, blurred(x0, x1, generator=gen(s)).x1) for s in range(10)]
    assert np.mean(costs) == pytest.approx(independent, rel=0.03)
    # the plan's expected cost lies strictly between (one draw with replacement may fall below the exact cost)
    assert exact < (plan * sharp.cost_matrix(x0, x1)).sum().item() < np.mean(costs)


def test_sinkhorn_normalized_cost_and_image_shapes():
    x0, x1 = batches(64, shape=(1, 8, 8), seed=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = OTCoupling("sinkhorn", reg=2e-3, normalize_cost=True)(x0, x1, generator=gen(11))
    assert out.x1.shape == x1.shape and out.x1.dtype == torch.float32
    # in 64-D independent pairs cost only ~5% more than OT: the sharp plan must be within 1%
    assert pair_cost(x0, out.x1) == pytest.approx(emd_cost(x0, x1), rel=0.01)
    assert pair_cost(x0, out.x1) < pair_cost(x0, x1)


def test_errors():
    with pytest.raises(ValueError, match=r"method.*\['exact', 'sinkhorn'\].*'greedy'"):
        OTCoupling("greedy")
    for reg in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="reg"):
            OTCoupling("sinkhorn", reg=reg)
    OTCoupling("exact", reg=0.0)  # reg is unused by the exact plan
    x0, x1 = torch.zeros(4, 2), torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"\(4, 2\).*\(4, 3\)"):
        OTCoupling()(x0, x1)
    with pytest.raises(ValueError, match="y1"):
        OTCoupling()(torch.zeros(4, 2), torch.zeros(4, 2), y1=torch.arange(3))


def test_spec_round_trip_and_registry():
    for coupling in (OTCoupling("sinkhorn", reg=0.5, normalize_cost=True), OTCoupling(), IndependentCoupling()):
        spec = to_spec(coupling)
        rebuilt = build(spec)
        assert type(rebuilt) is type(coupling) and rebuilt.init_args == coupling.init_args
    assert to_spec(OTCoupling("sinkhorn", reg=0.5))["init_args"]["reg"] == 0.5
    assert to_spec(IndependentCoupling()) == {
        "class_path": "lightning_fm.couplings.IndependentCoupling",
        "init_args": {},
    }
    assert COUPLINGS == {"independent": IndependentCoupling, "ot": OTCoupling, "keep": KeepPairs}


def _classes(n, k, seed):
    return torch.randint(0, k, (n,), generator=gen(seed))


@pytest.mark.parametrize("method", ["exact", "sinkhorn"])
def test_within_class_plan_never_pairs_different_classes(method):
    x0, x1 = batches(120, seed=3)
    y1 = _classes(120, 4, 5)
    y0 = y1[torch.randperm(120, generator=gen(6))]  # the same class counts on both sides, in another order
    coupling = OTCoupling(method, reg=0.5, within_class=True)
    out = coupling(x0, x1, y0, y1, generator=gen(7))
    assert torch.equal(out.y1, y0) and out.x0 is x0 and out.y0 is y0  # every pair inside one class
    assert torch.equal(out.x1, x1[torch.cdist(out.x1, x1).argmin(1)])  # partners are rows of x1 with their labels
    if method == "exact":  # each class's pairs are that class's own optimal transport
        for c in range(4):
            rows, cols = (y0 == c).nonzero().squeeze(1), (y1 == c).nonzero().squeeze(1)
            assert abs(pair_cost(out.x0[rows], out.x1[rows]) - emd_cost(x0[rows], x1[cols])) < 1e-6
        assert len(set(torch.cdist(out.x1, x1).argmin(1).tolist())) == 120  # a permutation


def test_within_class_plan_with_unequal_counts_still_stays_in_class():
    x0, x1 = batches(90, 60, seed=8)
    y0, y1 = _classes(90, 3, 9), _classes(60, 3, 10)
    out = OTCoupling("exact", within_class=True)(x0, x1, y0, y1, generator=gen(11))
    assert torch.equal(out.y1, y0)


def test_within_class_plan_of_a_source_without_classes_gives_each_class_its_share_of_the_noise():
    x0, x1 = batches(100, seed=12)
    y1 = _classes(100, 5, 13)
    out = OTCoupling("exact", within_class=True)(x0, x1, None, y1)
    assert out.y0 is None and torch.equal(out.y1, torch.sort(y1).values)  # consecutive blocks of source rows
    for c in range(5):  # each block is optimally transported to its class
        rows, cols = (out.y1 == c).nonzero().squeeze(1), (y1 == c).nonzero().squeeze(1)
        assert abs(pair_cost(x0[rows], out.x1[rows]) - emd_cost(x0[rows], x1[cols])) < 1e-6


def test_within_class_errors_name_the_problem():
    x0, x1 = batches(10, seed=14)
    with pytest.raises(ValueError, match="needs the target labels y1"):
        OTCoupling(within_class=True)(x0, x1)
    with pytest.raises(ValueError, match="class 2 has 3 source samples but no target sample"):
        OTCoupling(within_class=True)(x0, x1, torch.tensor([0] * 7 + [2] * 3), torch.zeros(10, dtype=torch.long))


def test_plan_draws_follow_the_rows_of_the_plan():
    """Each row's partner is drawn with probability plan[i, j] / sum_j plan[i, j] (never a zero-mass column)."""
    plan = torch.tensor([[0.5, 0.0, 0.25, 0.25], [0.0, 0.0, 1.0, 0.0], [0.0, 0.1, 0.0, 0.0]], dtype=F64)
    draws = torch.stack([OTCoupling("sinkhorn")._draw(plan, gen(s)) for s in range(4000)])
    for i, row in enumerate(plan):
        freq = torch.bincount(draws[:, i], minlength=4).to(F64) / len(draws)
        expected = row / row.sum()
        assert torch.all(freq[expected == 0] == 0)
        # binomial standard error sqrt(p(1-p)/n) <= 0.008 at n = 4000: 4 standard errors
        assert torch.allclose(freq, expected, atol=0.032)
