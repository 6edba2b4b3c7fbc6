"""The published 2-D toy constructions: lightning_fm's samplers against independent numpy transcriptions.

Every toy whose docstring cites a publication (torchcfm: ``8gaussians``, ``moons``; FFJORD ``lib/toy_data.py``:
``circles``, ``checkerboard``, ``swissroll``, ``spirals`` (= ``2spirals``), ``pinwheel``, ``rings``) is compared
with a reference written below in plain numpy from the cited code (torchcfm ``utils.py`` + torchdyn
``generate_moons``; FFJORD ``inf_train_gen``; for FFJORD's two scikit-learn calls, ``make_circles`` and
``make_swiss_roll``, their scikit-learn bodies). The references never call lightning_fm's samplers; they are
seeded with numpy ``RandomState`` objects (FFJORD's ``2spirals`` / ``checkerboard`` use the global
``np.random``; the same calls on a seeded ``RandomState`` give the same distribution).

What is checked, per toy: moments (means, covariance, per-label means) within Monte-Carlo standard errors of the
construction at the same n; support (bounding box within the reference's, plus coverage); exact structure where the
construction is exact (moons' arcs + diagonal jitter, rings' radii and counts, the spiral arms' mirror symmetry,
the checkerboard's cells, the swiss roll's curve); the exact W2 against the reference's own noise floor (with a
negative control: scikit-learn's noisy moons must fail the moons check); label sets and counts; determinism.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

from lightning_fm.data import TOY_DISTRIBUTIONS, sample_toy
from lightning_fm.metrics import wasserstein2

SQ = 1.0 / np.sqrt(2.0)
#: torchcfm ``eight_normal_sample``'s centre list, in its order (label = index)
TORCHCFM_CENTRES = np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (SQ, SQ), (SQ, -SQ), (-SQ, SQ), (-SQ, -SQ)], float)
TORCHCFM_STD = 0.1**0.25  # MultivariateNormal(0, covariance_matrix=sqrt(var) * I) with var=0.1


# -- independent references, transcribed from the cited code -------------------------------------------------------
def ref_8gaussians(n, rs):
    """torchcfm ``sample_8gaussians(n)`` = ``eight_normal_sample(n, 2, scale=5, var=0.1)``: ``centers[multi[i]] +
    noise[i]`` with ``multi = multinomial(ones(8), n, replacement=True)``, noise ~ N(0, sqrt(0.1) I)."""
    noise = rs.normal(size=(n, 2)) * math.sqrt(math.sqrt(0.1))
    multi = rs.randint(0, 8, size=n)
    return 5.0 * TORCHCFM_CENTRES[multi] + noise, multi


def ref_moons(n, rs):
    """torchcfm ``sample_moons(n)`` = torchdyn ``generate_moons(n, noise=0.2)`` then ``x0 * 3 - 1``."""
    n_out, n_in = n // 2, n - n // 2
    outer_x = np.cos(np.linspace(0, np.pi, n_out))
    outer_y = np.sin(np.linspace(0, np.pi, n_out))
    inner_x = 1 - np.cos(np.linspace(0, np.pi, n_in))
    inner_y = 1 - np.sin(np.linspace(0, np.pi, n_in)) - 0.5
    X = np.vstack([np.append(outer_x, inner_x), np.append(outer_y, inner_y)]).T
    y = np.hstack([np.zeros(n_out, dtype=np.intp), np.ones(n_in, dtype=np.intp)])
    X += rs.rand(n, 1) * 0.2  # torchdyn: ONE uniform per point, added to both coordinates
    return X * 3 - 1, y


def ref_circles(n, rs):
    """FFJORD ``circles``: ``make_circles(n, factor=.5, noise=0.08)[0] * 3`` (scikit-learn's body transcribed)."""
    n_out, n_in = n // 2, n - n // 2
    lin_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    lin_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
    X = np.vstack(
        [np.append(np.cos(lin_out), np.cos(lin_in) * 0.5), np.append(np.sin(lin_out), np.sin(lin_in) * 0.5)]
    ).T
    y = np.hstack([np.zeros(n_out, dtype=np.intp), np.ones(n_in, dtype=np.intp)])
    order = rs.permutation(n)
    X, y = X[order], y[order]
    X = X + rs.normal(scale=0.08, size=X.shape)
    return X * 3, y


def ref_checkerboard(n, rs):
    """FFJORD ``checkerboard`` (no labels)."""
    x1 = rs.rand(n) * 4 - 2
    x2_ = rs.rand(n) - rs.randint(0, 2, n) * 2
    x2 = x2_ + (np.floor(x1) % 2)
    return np.concatenate([x1[:, None], x2[:, None]], 1) * 2, None


def ref_swissroll(n, rs):
    """FFJORD ``swissroll``: ``make_swiss_roll(n, noise=1.0)[0][:, [0, 2]] / 5`` (scikit-learn's body)."""
    t = 1.5 * np.pi * (1 + 2 * rs.uniform(size=n))
    height = 21 * rs.uniform(size=n)
    X = np.vstack((t * np.cos(t), height, t * np.sin(t)))
    X = X + 1.0 * rs.standard_normal(size=(3, n))
    return X.T[:, [0, 2]] / 5, np.zeros(n, dtype=np.intp)


def ref_spirals(n, rs):
    """FFJORD ``2spirals`` (n // 2 points per arm; label = arm, 0 for d1, 1 for -d1)."""
    m = n // 2
    s = np.sqrt(rs.rand(m, 1)) * 540 * (2 * np.pi) / 360
    d1x = -np.cos(s) * s + rs.rand(m, 1) * 0.5
    d1y = np.sin(s) * s + rs.rand(m, 1) * 0.5
    x = np.vstack((np.hstack((d1x, d1y)), np.hstack((-d1x, -d1y)))) / 3
    x += rs.randn(*x.shape) * 0.1
    return x, np.repeat([0, 1], m)


def ref_pinwheel(n, rs):
    """FFJORD ``pinwheel`` (5 * (n // 5) points; FFJORD permutes the points and drops the labels, here the labels
    are permuted along)."""
    radial_std, tangential_std, num_classes, rate = 0.3, 0.1, 5, 0.25
    num_per_class = n // 5
    rads = np.linspace(0, 2 * np.pi, num_classes, endpoint=False)
    features = rs.randn(num_classes * num_per_class, 2) * np.array([radial_std, tangential_std])
    features[:, 0] += 1.0
    labels = np.repeat(np.arange(num_classes), num_per_class)
    angles = rads[labels] + rate * np.exp(features[:, 0])
    rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)])
    rotations = np.reshape(rotations.T, (-1, 2, 2))
    order = rs.permutation(len(labels))
    return 2 * np.einsum("ti,tij->tj", features, rotations)[order], labels[order]


def ref_rings(n, rs):
    """FFJORD ``rings``; labels 0..3 = circ4 (radius 3), circ3, circ2, circ1 (radius 0.75)."""
    n4 = n3 = n2 = n // 4
    n1 = n - n4 - n3 - n2
    lin4, lin3, lin2, lin1 = (np.linspace(0, 2 * np.pi, k, endpoint=False) for k in (n4, n3, n2, n1))
    X = (
        np.vstack(
            [
                np.hstack([np.cos(lin4), np.cos(lin4) * 0.75, np.cos(lin2) * 0.5, np.cos(lin1) * 0.25]),
                np.hstack([np.sin(lin4), np.sin(lin3) * 0.75, np.sin(lin2) * 0.5, np.sin(lin1) * 0.25]),
            ]
        ).T
        * 3.0
    )
    y = np.repeat(np.arange(4), [n4, n3, n2, n1])
    order = rs.permutation(n)  # util_shuffle(X, random_state=rng)
    X, y = X[order], y[order]
    return X + rs.normal(scale=0.08, size=X.shape), y


REFERENCES = {
    "8gaussians": ref_8gaussians,
    "moons": ref_moons,
    "circles": ref_circles,
    "checkerboard": ref_checkerboard,
    "swissroll": ref_swissroll,
    "spirals": ref_spirals,
    "pinwheel": ref_pinwheel,
    "rings": ref_rings,
}
CITED = list(REFERENCES)


# -- helpers ---------------------------------------------------------------------------------------------------------
N = 4000  # ours, for moments / support / structure / labels
K_REF = 40  # independent reference draws of the construction at the same n
N_W2 = 2000  # exact EMD size
Z = 4.0  # standard errors: a two-sided normal tail of 6e-5 per comparison


def ours(name, n=N, seed=0):
    x, y = sample_toy(name, n, torch.Generator().manual_seed(seed))
    return x.double().numpy(), y.numpy()


@functools.cache
def ref_draws(name, n=N, k=K_REF):
    """k independent draws of the reference construction at n (seeds 10_000 + i)."""
    return tuple(REFERENCES[name](n, np.random.RandomState(10_000 + i)) for i in range(k))


def ref_pool(name):
    return np.concatenate([x for x, _ in ref_draws(name)])


def ref_labels(name):
    y = ref_draws(name)[0][1]
    return None if y is None else np.unique(y)


def moment_stats(x, y, labels):
    """means, covariance (xx, xy, yy), then the mean of every label's points."""
    c = np.cov(x.T)
    stats = [x[:, 0].mean(), x[:, 1].mean(), c[0, 0], c[0, 1], c[1, 1]]
    names = ["mean_x", "mean_y", "cov_xx", "cov_xy", "cov_yy"]
    for label in [] if labels is None else labels:
        stats += list(x[y == label].mean(0))
        names += [f"mean_x[y={label}]", f"mean_y[y={label}]"]
    return np.array(stats), names


# -- the reference set is complete -------------------------------------------------------------------------------------
def test_every_toy_citing_a_publication_has_a_reference():
    # a sampler cites a publication when its docstring starts with the source ("torchcfm ``...``" / "FFJORD ``...``");
    # noisy_moons ("scikit-learn ...", "not its construction"), scurve and gaussian cite none
    cited = {
        name for name, fn in TOY_DISTRIBUTIONS.items() if fn.__doc__ and fn.__doc__.split()[0] in ("torchcfm", "FFJORD")
    }
    assert cited == set(CITED)


# -- 1. moments ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CITED)
def test_moments_match_the_reference(name):
    # Tolerance: the statistic's Monte-Carlo standard error AT THIS n UNDER THE CONSTRUCTION, measured as the standard
    # deviation over K_REF=40 independent reference draws of size N (this is right for the non-i.i.d. constructions
    # too: for moons only the jitter is random, so the SE of its means is ~3*0.058/sqrt(n) = 0.004, far below an
    # i.i.d. SE). The reference value is the mean over the draws, whose own error adds the factor sqrt(1 + 1/K).
    # Z=4 SEs; the SE itself is known to ~11% (K=40), so even a 25% underestimate leaves 3 SE (p=0.003).
    # The 1e-5 absolute term covers our float32 storage (relative 6e-8 of values <= 15).
    labels = ref_labels(name)
    ref = np.array([moment_stats(x, y, labels)[0] for x, y in ref_draws(name)])
    x, y = ours(name, seed=1)
    got, names = moment_stats(x, y, labels)
    se = ref.std(0, ddof=1)
    tol = Z * se * math.sqrt(1 + 1 / K_REF) + 1e-5
    err = np.abs(got - ref.mean(0))
    bad = [
        f"{k}: ours {g:.4f} ref {r:.4f} tol {t:.4f}"
        for k, g, r, t, e in zip(names, got, ref.mean(0), tol, err)
        if e > t
    ]
    assert not bad, f"{name}: " + "; ".join(bad)


# -- 2. support ------------------------------------------------------------------------------------------------------
#: the margin beyond the reference pool's bounding box: exact constructions (moons: arcs + jitter in [0, 0.6) after
#: the scale; checkerboard: [-4, 4)^2) get only float32 rounding (|x| <= 4: ulp 5e-7); Gaussian-noise ones get ONE
#: noise std (of the largest noise term): the pool (40 * 4000 = 160k points) reaches ~4.4 std into the noise tail,
#: ours (4000) would need a point beyond ~5.4 std to cross the margin: P ~ 4000 * 3e-8 ~ 1e-4.
SUPPORT_MARGIN = {
    "8gaussians": TORCHCFM_STD,
    "moons": 1e-5,
    "circles": 3 * 0.08,
    "checkerboard": 1e-5,
    "swissroll": 1.0 / 5,
    "spirals": 0.1,
    "pinwheel": 2 * 0.3,
    "rings": 0.08,
}


@pytest.mark.parametrize("name", CITED)
def test_support_within_the_reference_and_covering_it(name):
    pool = ref_pool(name)
    x, _ = ours(name, seed=2)
    margin = SUPPORT_MARGIN[name]
    assert (x.min(0) >= pool.min(0) - margin).all(), (name, x.min(0), pool.min(0))
    assert (x.max(0) <= pool.max(0) + margin).all(), (name, x.max(0), pool.max(0))
    # coverage: ours reaches the reference's 1% / 99% quantiles in every coordinate; for i.i.d. points all 4000 on
    # one side of a 1% quantile has probability 0.99^4000 ~ 3e-18 (the evenly spaced constructions are surer still)
    lo, hi = np.quantile(pool, 0.01, axis=0), np.quantile(pool, 0.99, axis=0)
    assert (x.min(0) <= lo).all() and (x.max(0) >= hi).all(), (name, x.min(0), lo, x.max(0), hi)


# -- 2'. exact structure ---------------------------------------------------------------------------------------------
def moons_on_arcs(x, y, tol=1e-4):
    """Per point: is (x + 1) / 3 = arc(a) + u (1, 1) for some a in [0, pi], u in [0, 0.2], with the arc of its label
    (0: (cos a, sin a), 1: (1 - cos a, 1 - sin a - 0.5))? Solves |v + s u (1, 1)| = 1 for u (two roots)."""
    q = (x + 1) / 3
    # label 0: cos a = qx - u, sin a = qy - u;  label 1: cos a = 1 - qx + u, sin a = 0.5 - qy + u
    sign = np.where(y == 0, -1.0, 1.0)
    v = np.where((y == 0)[:, None], q, np.stack([1 - q[:, 0], 0.5 - q[:, 1]], 1))
    b = sign * v.sum(1)  # |v + s u 1|^2 = 1  <=>  2u^2 + 2 b u + |v|^2 - 1 = 0
    disc = np.maximum(b * b - 2 * ((v * v).sum(1) - 1), 0.0)  # clamped: rounding at the tangent point a = 3pi/4
    ok = np.zeros(len(x), bool)
    for root in (-1.0, 1.0):
        u = (-b + root * np.sqrt(disc)) / 2
        c = v + sign[:, None] * u[:, None]  # (cos a, sin a)
        ok |= (u >= -tol) & (u <= 0.2 + tol) & (c[:, 1] >= -tol) & (np.abs(np.hypot(c[:, 0], c[:, 1]) - 1) <= tol)
    return ok


def test_moons_every_point_is_an_arc_point_plus_diagonal_jitter():
    # tol 1e-4 (unit coordinates): ~100x the float32 rounding of ours (~1e-6 after the (x+1)/3 map) and of torch's
    # float32 cos/sin/linspace, and 2000x below the jitter's range 0.2 (Gaussian noise of std 0.2, as in
    # noisy_moons, leaves most points off the band: see the last assertion)
    x_ref, y_ref = ref_draws("moons")[0]
    assert moons_on_arcs(x_ref, y_ref).all()  # the check itself accepts the published construction
    x, y = ours("moons", seed=3)
    on = moons_on_arcs(x, y)
    assert on.all(), f"{(~on).sum()} of {len(x)} points are off their arc + u(1,1), u in [0, 0.2]"
    # teeth: scikit-learn's Gaussian-noise moons (noisy_moons) are mostly off the band
    xn, yn = ours("noisy_moons", seed=3)
    assert moons_on_arcs(xn, yn).mean() < 0.5


@pytest.mark.parametrize("name, radii, noise", [("rings", (3.0, 2.25, 1.5, 0.75), 0.08), ("circles", (3.0, 1.5), 0.24)])
def test_ring_radii_counts_and_noise(name, radii, noise):
    radii = np.array(radii)
    # exact counts of the construction (rings: n//4 on each of the first three, the rest on radius 0.75;
    # circles: n//2 outer, the rest inner)
    expected = [N // 4] * 3 + [N - 3 * (N // 4)] if name == "rings" else [N // 2, N - N // 2]
    # the same checks on the reference validate them
    for who, (x, y) in (("ours", ours(name, seed=4)), ("reference", REFERENCES[name](N, np.random.RandomState(7)))):
        assert np.bincount(y, minlength=len(radii)).tolist() == expected, who
        r = np.hypot(x[:, 0], x[:, 1])
        # the nearest radius is the label: misassignment needs a radial noise beyond half the gap (rings 0.375 =
        # 4.7 std: P 1e-6; circles 0.75 = 3.1 std: P 1e-3, ~4 points) -> allow 0.1% resp. 1%
        nearest = np.abs(r[:, None] - radii[None]).argmin(1)
        assert (nearest != y).mean() <= (0.001 if name == "rings" else 0.01), who
        for k, radius in enumerate(radii):
            rk = r[y == k]
            # mean radius of radius + N(0, s^2 I): radius + s^2 / (2 radius) + O(s^4 / radius^3) (Rice; the O term
            # is < 1e-3, the absolute slack); SE s / sqrt(m)
            bias = noise**2 / (2 * radius)
            assert abs(rk.mean() - radius - bias) <= Z * noise / math.sqrt(len(rk)) + 1e-3, (who, k, rk.mean())
            # radial std = s up to O(s^2 / radius); SE of a std ~ s / sqrt(2 m) (1.8% for rings, 1.6% for
            # circles): 10% is > 5 SE
            assert abs(rk.std() / noise - 1) <= 0.10, (who, k, rk.std())


@pytest.mark.parametrize("n", [N, N + 1])
def test_spiral_arms_mirror_each_other(n):
    x, y = ours("spirals", n, seed=5)
    a0, a1 = x[y == 0], x[y == 1]
    # arm 1 is exactly -(arm 0) before the N(0, 0.1^2) noise: mean(arm0) + mean(arm1) is the mean of the noise only,
    # standard error 0.1 * sqrt(1/m0 + 1/m1) per coordinate (~0.0022); an independently drawn arm 1 would add
    # the arm's own sampling error, sd(arm) / 3 / sqrt(m) ~ 0.04
    s = a0.mean(0) + a1.mean(0)
    assert (np.abs(s) <= Z * 0.1 * math.sqrt(1 / len(a0) + 1 / len(a1))).all(), s


def _mirror_w2(x, y):
    return wasserstein2(torch.as_tensor(x[y == 0]), torch.as_tensor(-x[y == 1]))


def test_spiral_arms_mirror_each_other_in_w2():
    x, y = ours("spirals", N_W2, seed=6)
    w = _mirror_w2(x, y)
    # pairing each arm-0 point with its own mirror image costs |e0 + e1|^2 with e ~ N(0, 0.1^2 I): mean 4 * 0.01,
    # so W2(arm0, -arm1) <= ~0.2; the mean over m=1000 pairs has relative sd 1/sqrt(m) (chi2_2), 1.6% in W2:
    # 0.2 * 1.1 is > 6 SE. Two independent arms are ~0.3 apart (measured), the exact mirror ~0.08.
    assert w <= 0.2 * 1.1, w
    # the mirror W2 measures the noise: the same statistic on 8 reference draws (~0.078 +- 0.002 measured; noise
    # std 0.122 instead of 0.1 gives 0.088); Z SEs of the draws' spread, sqrt(1 + 1/8) for their mean's error
    ref = np.array([_mirror_w2(*ref_spirals(N_W2, np.random.RandomState(30 + i))) for i in range(8)])
    assert abs(w - ref.mean()) <= Z * ref.std(ddof=1) * math.sqrt(1 + 1 / len(ref)), (w, ref.mean(), ref.std())


def test_checkerboard_cells():
    x, y = ours("checkerboard", seed=9)
    assert (x >= -4).all() and (x < 4).all()
    cells = np.floor(x / 2).astype(int) + 2  # column, row in 0..3
    # FFJORD: floor(x1) % 2 lifts x2 into the other row parity, so only cells with column + row even are used
    assert ((cells.sum(1) % 2) == 0).all()
    assert (y == 2 * cells[:, 0] + cells[:, 1] // 2).all()  # the documented label of the cell
    # i.i.d. uniform over 8 cells: binomial(n, 1/8) counts, SE sqrt(n p (1-p)) ~ 21
    counts = np.bincount(y, minlength=8)
    assert len(counts) == 8 and (np.abs(counts - N / 8) <= Z * math.sqrt(N / 8 * 7 / 8)).all(), counts
    # uniform within its cell: the position inside the cell is U[0, 2)^2, mean 1, SE (2/sqrt(12))/sqrt(n)
    inside = x / 2 - np.floor(x / 2)
    assert (np.abs(inside.mean(0) - 0.5) <= Z * (1 / math.sqrt(12)) / math.sqrt(N)).all()


def _distance_to_swiss_roll_curve(x):
    """distance of each point to the noiseless curve (t cos t, t sin t) / 5, t in [1.5 pi, 4.5 pi]."""
    # grid step 4.7e-3 in t, <= 0.014 along the curve: the distance is overestimated by <= 0.007, the same bias
    # for ours and the reference
    t = np.linspace(1.5 * np.pi, 4.5 * np.pi, 2000)
    curve = np.stack([t * np.cos(t), t * np.sin(t)], 1) / 5
    d2 = (x * x).sum(1)[:, None] + (curve * curve).sum(1)[None] - 2 * x @ curve.T
    return np.sqrt(np.maximum(d2.min(1), 0.0))


def test_swissroll_lies_on_its_curve():
    # the swiss roll is the curve plus N(0, 0.2^2 I): the squared distance to the curve is ~ the normal component's
    # square, mean ~0.04 (a little less where the noise crosses half the arm gap, 1.26 / 2 = 3 std, or passes an end);
    # compared with the reference's, tolerance Z SE of a mean of n squared distances.
    x, y = ours("swissroll", 2000, seed=10)
    assert (y == 0).all()
    x_ref, _ = ref_swissroll(2000, np.random.RandomState(11))
    d, d_ref = _distance_to_swiss_roll_curve(x) ** 2, _distance_to_swiss_roll_curve(x_ref) ** 2
    se = d_ref.std() * math.sqrt(2 / len(d))
    assert abs(d.mean() - d_ref.mean()) <= Z * se, (d.mean(), d_ref.mean())
    assert 0.03 <= d_ref.mean() <= 0.045  # the reference is the curve + 0.2 noise (the check is meaningful)


# -- 3. distribution: exact W2 against the reference's noise floor -------------------------------------------------
#: W2(ours, R0) <= margin * W2(R1, R0), R0 and R1 independent reference samples of N_W2 points. If ours has the
#: reference's distribution, W2(ours, R0) and W2(R1, R0) are exchangeable, and their ratio is the test statistic.
#: Its spread was measured offline over 30 (moons, ...: 30 + 14) triples of independent reference samples at
#: N_W2 = 2000: sd of log(ratio) 0.017 (rings), 0.033 (circles), 0.037 (moons): the counts per component are fixed,
#: only the noise is random; 0.13 (pinwheel); 0.16-0.25 (spirals, swissroll, checkerboard, 8gaussians: the number of
#: points per mode / region is multinomial and moving the excess between modes dominates W2, so the floor itself
#: varies by ~20%). margin = exp(4 sd of log(ratio)), rounded up (moons, circles, rings: >= 5 sd).
W2_MARGIN = {
    "rings": 1.1,
    "circles": 1.2,
    "moons": 1.25,
    "pinwheel": 1.7,
    "spirals": 2.0,
    "swissroll": 2.0,
    "checkerboard": 2.4,
    "8gaussians": 2.75,
}


@functools.cache
def w2_floor(name):
    r0, r1 = (torch.as_tensor(REFERENCES[name](N_W2, np.random.RandomState(s))[0]) for s in (20, 21))
    return r0, wasserstein2(r1, r0)


@pytest.mark.parametrize("name", CITED)
def test_w2_to_the_reference_is_at_the_noise_floor(name):
    r0, floor = w2_floor(name)
    x, _ = sample_toy(name, N_W2, torch.Generator().manual_seed(12))
    w = wasserstein2(x, r0)
    assert w <= W2_MARGIN[name] * floor, f"{name}: W2 {w:.4f} > {W2_MARGIN[name]} x floor {floor:.4f}"


def test_noisy_moons_fail_the_moons_w2_check():
    # the W2 check has teeth: scikit-learn's make_moons(noise=0.2) * 3 - 1 (Gaussian noise of std 0.6 after the
    # scale) is far from torchcfm's moons (uniform diagonal jitter in [0, 0.6)): ~0.6 against a floor ~0.075
    r0, floor = w2_floor("moons")
    x, _ = sample_toy("noisy_moons", N_W2, torch.Generator().manual_seed(12))
    w = wasserstein2(x, r0)
    assert w > 2 * W2_MARGIN["moons"] * floor, (w, floor)


def ffjord_8gaussians(n, rs):
    """FFJORD's own ``8gaussians`` (scale 4, noise std 0.5, all divided by 1.414): NOT torchcfm's."""
    centers = 4.0 * TORCHCFM_CENTRES
    return (rs.randn(n, 2) * 0.5 + centers[rs.randint(8, size=n)]) / 1.414


def test_ffjords_8gaussians_fail_the_torchcfm_8gaussians_w2_check():
    # teeth of the widest margin (2.75): the same-named FFJORD toy (radius 2.83, std 0.35 instead of 5 and 0.56)
    r0, floor = w2_floor("8gaussians")
    w = wasserstein2(torch.as_tensor(ffjord_8gaussians(N_W2, np.random.RandomState(22))), r0)
    assert w > W2_MARGIN["8gaussians"] * floor, (w, floor)


# -- 4. labels -------------------------------------------------------------------------------------------------------
DETERMINISTIC_COUNTS = ["moons", "circles", "rings", "pinwheel", "spirals"]


@pytest.mark.parametrize("n", [N, N + 1, N + 3])
@pytest.mark.parametrize("name", DETERMINISTIC_COUNTS)
def test_label_counts_are_the_constructions(name, n):
    x, y = ours(name, n, seed=13)
    assert x.shape == (n, 2) and y.shape == (n,)
    _, y_ref = REFERENCES[name](n, np.random.RandomState(14))
    expected = np.bincount(y_ref)
    # where FFJORD returns fewer than n points (pinwheel: 5 (n // 5); 2spirals: 2 (n // 2)), ours still returns n;
    # documented: pinwheel's labels are sort(arange(n) % 5) (the first n % 5 arms get one more), spirals put
    # ceil(n / 2) points on arm 0
    extra = n - len(y_ref)
    expected = expected + (np.arange(len(expected)) < extra)
    assert np.bincount(y, minlength=len(expected)).tolist() == expected.tolist(), name
    if name == "moons":
        assert expected.tolist() == [n // 2, n - n // 2]


@pytest.mark.parametrize("name", CITED)
def test_label_values(name):
    _, y = ours(name, seed=15)
    values = {"checkerboard": set(range(8)), "swissroll": {0}}.get(name)
    assert set(np.unique(y).tolist()) == (values or set(ref_labels(name).tolist()))


def test_8gaussians_labels_index_torchcfms_centres():
    x, y = ours("8gaussians", seed=16)
    counts = np.bincount(y, minlength=8)
    # multinomial(ones(8)): binomial(n, 1/8) counts, SE sqrt(n p (1 - p)) ~ 21
    assert len(counts) == 8 and (np.abs(counts - N / 8) <= Z * math.sqrt(N / 8 * 7 / 8)).all(), counts
    for k, centre in enumerate(TORCHCFM_CENTRES):
        xk = x[y == k]
        # each label's mean is 5 * centre (torchcfm's order), SE std / sqrt(m) ~ 0.025 per coordinate;
        # the nearest other centre is 3.8 away
        assert (np.abs(xk.mean(0) - 5 * centre) <= Z * TORCHCFM_STD / math.sqrt(len(xk))).all(), (k, xk.mean(0))
        # per-coordinate std 0.1 ** 0.25 = 0.562; SE of a Gaussian sample std: std / sqrt(2 m) ~ 0.018
        assert (np.abs(xk.std(0) - TORCHCFM_STD) <= Z * TORCHCFM_STD / math.sqrt(2 * len(xk))).all(), (k, xk.std(0))


# -- 5. determinism --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CITED)
def test_determinism(name):
    a = sample_toy(name, 300, torch.Generator().manual_seed(17))
    b = TOY_DISTRIBUTIONS[name](300, torch.Generator().manual_seed(17))
    c = sample_toy(name, 300, torch.Generator().manual_seed(18))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
