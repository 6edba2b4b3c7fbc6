"""Numbers for lightning_fm.fields: brute-force sums, Gauss's law, divergence, flux, C9, C11, high D
(docs/concepts/checks.md#checks)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightning_fm.fields import CoulombField, ForwardOnlyField, StrongInteractionField
from lightning_fm.fields.volume import UniformVolume
from lightning_fm.paths import BrownianBridgePath, LinearPath, LipmanPath, SineBridgePath, TrigPath
from lightning_fm.utils.spec import build, to_spec

F64 = torch.float64
PATHS = [
    LinearPath(0.5),
    BrownianBridgePath(1.0),
    TrigPath(0.4),
    LipmanPath(0.05),
    SineBridgePath(0.7),
    SineBridgePath(0.7, ramp=0.2),
]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, g, scale=1.0, shift=0.0):
    return torch.randn(*shape, generator=g, dtype=F64) * scale + shift


def cosine(a, b):
    """Cosine between augmented vectors given as (z, x) pairs."""
    dot = a[0] * b[0] + (a[1] * b[1]).flatten(1).sum(1)
    na = torch.sqrt(a[0] ** 2 + a[1].flatten(1).pow(2).sum(1))
    nb = torch.sqrt(b[0] ** 2 + b[1].flatten(1).pow(2).sum(1))
    return dot / (na * nb)


# -- EFM: Coulomb capacitor -------------------------------------------------------------------------------------
def coulomb_brute_force(z, x, x0, x1, L):
    """Independent float64 loop over the 2B charges: (1/B) sum_j K(x~ - (0, x0_j)) - K(x~ - (L, x1_j))."""
    D = x.shape[1]
    area = 2 * math.pi ** ((D + 1) / 2) / math.gamma((D + 1) / 2)
    total = torch.zeros(x.shape[0], D + 1, dtype=F64)
    for j in range(x0.shape[0]):
        for sign, zc, xc in ((1.0, 0.0, x0[j]), (-1.0, L, x1[j])):
            u = torch.cat([(z - zc)[:, None], x - xc], 1)
            total += sign * u / (area * u.norm(dim=1, keepdim=True) ** (D + 1))
    return total / x0.shape[0]


@pytest.mark.parametrize("D", [2, 64])
def test_coulomb_superposition_matches_brute_force(D):
    g, L = gen(D), 1.5
    x0, x1 = randn(7, D, g=g, scale=0.5), randn(7, D, g=g, shift=0.3)
    z = torch.tensor([-0.4, 0.05, 0.3, 0.75, 1.2, 1.45, 1.9, 2.5, 0.7], dtype=F64)  # inside and behind the plates
    x = randn(9, D, g=g, scale=0.6)
    ref = coulomb_brute_force(z, x, x0, x1, L)
    field = CoulombField(L)
    ez, ex = field.field(z, x, x0, x1)
    got = torch.cat([ez[:, None], ex], 1)
    rel = (got - ref).norm(dim=1) / ref.norm(dim=1)
    assert rel.max() < 1e-5
    nz, nx = field.direction(z, x, x0, x1)
    unit = ref / ref.norm(dim=1, keepdim=True)
    assert (torch.cat([nz[:, None], nx], 1) - unit).abs().max() < 1e-5
    # the pair field is the two charges of one pair
    pz, px = field.pair_field(z[:7], x[:7], x0, x1)
    for i in range(7):
        one = coulomb_brute_force(z[i : i + 1], x[i : i + 1], x0[i : i + 1], x1[i : i + 1], L)[0]
        assert torch.allclose(torch.cat([pz[i : i + 1], px[i]]), one, rtol=1e-10, atol=0)


def test_coulomb_separate_normalization_matches_reference_formula():
    """The reference code's variant: (min d / d)^(D+1) weights, each sign normalised with +gamma, then summed."""
    g, L, D, gamma = gen(1), 2.0, 5, 5.0
    x0, x1, x = randn(11, D, g=g), randn(11, D, g=g, shift=1.0), randn(6, D, g=g, scale=0.5)
    z = torch.linspace(0.2, 1.8, 6, dtype=F64)
    pts = torch.cat([z[:, None], x], 1)
    P = torch.cat([torch.zeros(11, 1, dtype=F64), x0], 1)
    Q = torch.cat([torch.full((11, 1), L, dtype=F64), x1], 1)
    parts = []
    for charges in (P, Q):
        dist = (pts[:, None] - charges[None]).norm(dim=-1)
        w = (dist.min(1, keepdim=True).values / dist) ** (D + 1)
        w = w / w.sum(1, keepdim=True)
        e = (w[:, :, None] * (pts[:, None] - charges[None])).sum(1)
        parts.append(e / (e.norm(dim=1, keepdim=True) + gamma))
    ref = parts[0] - parts[1]
    ref = ref / ref.norm(dim=1, keepdim=True)
    nz, nx = CoulombField(L, separate_normalization=True, gamma=gamma).direction(z, x, x0, x1)
    assert (torch.cat([nz[:, None], nx], 1) - ref).abs().max() < 1e-12
    exact = CoulombField(L).direction(z, x, x0, x1)
    assert (1 - cosine((nz, nx), exact)).max() > 1e-4  # the two variants genuinely differ


def test_gauss_law_2d_square():
    """D = 1: flux of the pair field through squares in the (z, x) plane = enclosed charge."""
    nodes, weights = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(60))
    field = CoulombField(L=1.0)
    x0, x1 = torch.tensor([[0.2]], dtype=F64), torch.tensor([[-0.3]], dtype=F64)

    def flux(zlo, zhi, xlo, xhi):
        total = 0.0
        for fixed, lo, hi, along_z, normal in (
            (xlo, zlo, zhi, True, -1),
            (xhi, zlo, zhi, True, 1),
            (zlo, xlo, xhi, False, -1),
            (zhi, xlo, xhi, False, 1),
        ):
            s = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
            if along_z:  # edge x = fixed, normal along x
                ez, ex = field.pair_field(s, torch.full((60, 1), fixed, dtype=F64), x0.expand(60, 1), x1.expand(60, 1))
                comp = ex[:, 0]
            else:  # edge z = fixed, normal along z
                ez, ex = field.pair_field(
                    torch.full((60,), fixed, dtype=F64), s[:, None], x0.expand(60, 1), x1.expand(60, 1)
                )
                comp = ez
            total += normal * 0.5 * (hi - lo) * float((weights * comp).sum())
        return total

    assert flux(-0.5, 0.5, -0.3, 0.7) == pytest.approx(1.0, abs=1e-9)  # around the source charge
    assert flux(0.6, 1.4, -0.9, 0.1) == pytest.approx(-1.0, abs=1e-9)  # around the target charge
    assert flux(-1.0, 2.0, -2.0, 2.0) == pytest.approx(0.0, abs=1e-9)  # around both
    assert flux(0.2, 0.8, -1.0, 1.0) == pytest.approx(0.0, abs=1e-9)  # around none


def test_gauss_law_3d_cube():
    """D = 2: flux of one charge's field through a cube around it = 1 (6 faces, tensor Gauss-Legendre)."""
    n = 40
    nodes, weights = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(n))
    a, b = torch.meshgrid(nodes, nodes, indexing="ij")
    a, b, w2 = a.reshape(-1), b.reshape(-1), (weights[:, None] * weights[None]).reshape(-1)
    field = CoulombField(L=10.0)  # target charge far outside the cube
    x0, x1 = torch.tensor([[0.1, -0.2]], dtype=F64), torch.tensor([[0.0, 0.0]], dtype=F64)
    c = torch.tensor([0.0, 0.1, -0.2], dtype=F64) + torch.tensor([0.15, -0.1, 0.05], dtype=F64)  # cube centre
    total = 0.0
    for axis in range(3):
        for side in (-1.0, 1.0):
            pts = torch.empty(n * n, 3, dtype=F64)
            others = [k for k in range(3) if k != axis]
            pts[:, axis] = c[axis] + side
            pts[:, others[0]], pts[:, others[1]] = c[others[0]] + a, c[others[1]] + b
            ez, ex = field.pair_field(pts[:, 0], pts[:, 1:], x0.expand(n * n, 2), x1.expand(n * n, 2))
            comp = torch.cat([ez[:, None], ex], 1)[:, axis]
            total += side * float((w2 * comp).sum())
    assert total == pytest.approx(1.0, abs=1e-8)


def test_efm_backward_field_behind_the_plates():
    """C9: E_z < 0 just behind each plate near its charges; E_z > 0 everywhere between the plates."""
    g, L, D = gen(2), 1.0, 3
    x0, x1 = randn(16, D, g=g), randn(16, D, g=g, shift=0.5)
    field = CoulombField(L)
    behind_source = field.direction(torch.full((16,), -0.02, dtype=F64), x0 + 1e-3, x0, x1)[0]
    behind_target = field.direction(torch.full((16,), L + 0.02, dtype=F64), x1 + 1e-3, x0, x1)[0]
    assert (behind_source < 0).all() and (behind_target < 0).all()
    z = torch.rand(500, generator=g, dtype=F64) * L
    inside = field.direction(z, randn(500, D, g=g, scale=2.0), x0, x1)[0]
    assert (inside > 0).all()


# -- forward-only fields ----------------------------------------------------------------------------------------
def divergence(field, z, x, x0, x1):
    """``d_z E_z + div_x E_x`` of the pair field by autograd, and the sum of the absolute terms (a scale)."""
    z, x = z.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ez, ex = field.pair_field(z, x, x0, x1)
    terms = [torch.autograd.grad(ez.sum(), z, retain_graph=True)[0]]
    for d in range(x.shape[1]):
        terms.append(torch.autograd.grad(ex[:, d].sum(), x, retain_graph=True)[0][:, d])
    terms = torch.stack(terms)
    return terms.sum(0), terms.abs().sum(0)


FORWARD_FIELDS = [ForwardOnlyField(p, L=2.0) for p in PATHS] + [StrongInteractionField(2.0, 0.7)]


@pytest.mark.parametrize("field", FORWARD_FIELDS, ids=lambda f: repr(f))
def test_forward_only_pair_field_is_divergence_free(field):
    """C1 (autograd, float64): the pair current of every path is divergence-free between the plates."""
    g, D, n = gen(3), 2, 400
    x0, x1 = randn(n, D, g=g), randn(n, D, g=g, shift=1.0)
    z = 0.05 + 1.9 * torch.rand(n, generator=g, dtype=F64)
    t = z / field.L
    sigma = field.path.sigma(t)
    x = field.path.mean(x0, x1, t) + sigma[:, None] * randn(n, D, g=g, scale=1.5)
    div, scale = divergence(field, z, x, x0, x1)
    assert (div.abs() / scale).max() < 1e-10


@pytest.mark.parametrize("field", FORWARD_FIELDS, ids=lambda f: repr(f))
@pytest.mark.parametrize("D", [1, 2])
def test_forward_only_pair_field_unit_flux(field, D):
    """C2: int E_z(z, x) dx = 1 on every slice (trapezoid quadrature)."""
    x0, x1 = torch.full((1, D), 0.3, dtype=F64), torch.full((1, D), -0.8, dtype=F64)
    grid = torch.linspace(-9, 9, 1201 if D == 1 else 361, dtype=F64)
    h = float(grid[1] - grid[0])
    pts = grid[:, None] if D == 1 else torch.stack(torch.meshgrid(grid, grid, indexing="ij"), -1).reshape(-1, 2)
    for z in (0.2, 0.7, 1.0, 1.6, 1.8):
        ez, _ = field.pair_field(torch.full((pts.shape[0],), z, dtype=F64), pts, x0.expand_as(pts), x1.expand_as(pts))
        flux = float(ez.sum()) * h**D  # Gaussian tails are negligible at the edges: sum = trapezoid
        assert flux == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: type(p).__name__)
def test_forward_only_direction_matches_brute_force(path):
    """Superposed direction (posterior velocity) = normalised sum of the B exact pair fields, float64, low D."""
    g, D, B, b, L = gen(4), 3, 9, 13, 2.0
    x0, x1 = randn(B, D, g=g), randn(B, D, g=g, shift=0.7)
    z = 0.1 + 1.8 * torch.rand(b, generator=g, dtype=F64)
    x = randn(b, D, g=g, scale=0.8)
    field = ForwardOnlyField(path, L)
    ez, ex = torch.zeros(b, dtype=F64), torch.zeros(b, D, dtype=F64)
    for j in range(B):
        pz, px = field.pair_field(z, x, x0[j].expand(b, D), x1[j].expand(b, D))
        ez, ex = ez + pz / B, ex + px / B
    got = field.superpose(z, x, x0, x1, chunk_size=4)  # several chunks
    norm = torch.sqrt(ez**2 + ex.pow(2).sum(1))
    assert torch.allclose(got.nz, ez / norm, rtol=0, atol=1e-12)
    assert torch.allclose(got.nx, ex / norm[:, None], rtol=0, atol=1e-12)
    assert torch.allclose(got.log_norm, torch.log(norm), rtol=0, atol=1e-10)
    assert (got.nz > 0).all()


def test_strong_exact_is_the_sine_bridge_current():
    g, D, L = gen(5), 4, 3.0
    x0, x1 = randn(32, D, g=g), randn(32, D, g=g, shift=1.0)
    z, x = UniformVolume(tube_noise=0.3)(x0[:16], x1[:16], L, generator=g)
    for ramp in (None, 0.2):
        strong = StrongInteractionField(L, scale=0.8, ramp=ramp)
        dual = ForwardOnlyField(SineBridgePath(0.8, 0.5 if ramp is None else ramp), L)
        for a, b in zip(strong.direction(z, x, x0, x1), dual.direction(z, x, x0, x1)):
            assert torch.equal(a, b)
        for a, b in zip(strong.pair_field(z, x, x0[:16], x1[:16]), dual.pair_field(z, x, x0[:16], x1[:16])):
            assert torch.equal(a, b)
    assert strong.forward_only and StrongInteractionField(L, 0.8, exact=False).forward_only


def code_field(z, x, x0, x1, L, S):
    """The IFM reference code's 'Shifted' field of one pair (K = pi/L, d = L/2), written out with arctan/cos/sin."""
    D = x.shape[1]
    K, d = math.pi / L, L / 2
    q = torch.cat([torch.zeros(1, dtype=F64), x0])
    dist = torch.cat([torch.full((1,), L, dtype=F64), x1 - x0])
    n_pair = dist / dist.norm()
    p = torch.cat([z[:, None], x], 1)
    rho = (p - q) - dist * (z[:, None] / L)
    r = rho.norm(dim=1, keepdim=True)
    rising = z[:, None] < d
    scale = torch.where(rising, S * torch.sin(K * z[:, None]), S * torch.cos(K * (z[:, None] - L + d)))
    alpha = torch.where(
        rising,
        torch.arctan(r * K / torch.tan(K * z[:, None])),
        torch.arctan(r * K * torch.tan(math.pi - K * (z[:, None] - L + d))),
    )
    direction = torch.cos(alpha) * n_pair + torch.sin(alpha) * rho / r
    return direction * torch.exp(-(r**2) / (2 * scale**2)) / ((torch.cos(alpha) + 1e-8) * (scale / S) ** D + 1e-2)


def test_strong_code_variant_matches_reference_loop():
    """exact=False: the log-domain superposition equals the reference code's per-pair sum (float64, low D)."""
    g, D, B, b, L, S = gen(6), 3, 10, 8, 2.0, 0.6
    x0, x1 = randn(B, D, g=g), randn(B, D, g=g, shift=0.5)
    z, x = UniformVolume(tube_noise=0.4)(x0[:b], x1[:b], L, generator=g)
    total = sum(code_field(z, x, x0[j], x1[j], L, S) for j in range(B))
    field = StrongInteractionField(L, S, exact=False)
    got = field.superpose(z, x, x0, x1, chunk_size=5)
    norm = total.norm(dim=1)
    assert torch.allclose(got.nz, total[:, 0] / norm, rtol=0, atol=1e-12)
    assert torch.allclose(got.nx, total[:, 1:] / norm[:, None], rtol=0, atol=1e-12)
    assert torch.allclose(got.log_norm, torch.log(norm), rtol=0, atol=1e-10)
    ez, ex = field.pair_field(z, x, x0[:b], x1[:b])
    own = torch.stack([code_field(z[i : i + 1], x[i : i + 1], x0[i], x1[i], L, S)[0] for i in range(b)])
    assert torch.allclose(torch.cat([ez[:, None], ex], 1), own, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="between the plates"):
        field.direction(torch.zeros(b, dtype=F64), x, x0, x1)


@pytest.mark.parametrize("ratio, low, high", [(0.05, 1e-8, 1e-6), (0.5, 1e-4, 1e-2), (1.5, 1e-2, 1e-1)])
def test_strong_code_variant_deviation_c11(ratio, low, high):
    """C11: mean 1-cos between the code direction and the exact current is O((|x1-x0|/L)^2):
    about 1e-7 at 0.05, 1e-3 at 0.5, 4e-2 at 1.5 (D = 4, L = 2, S = 0.5, points from the tube)."""
    g, D, L, S, n = gen(7), 4, 2.0, 0.5, 4000
    x0 = torch.zeros(1, D, dtype=F64)
    x1 = torch.full((1, D), ratio * L / 2, dtype=F64)  # |x1 - x0| = ratio * L
    z = 0.1 + 1.8 * torch.rand(n, generator=g, dtype=F64)
    x = x0 + (z / L)[:, None] * (x1 - x0) + randn(n, D, g=g) * (S * torch.sin(math.pi * z / L))[:, None]
    exact = StrongInteractionField(L, S).direction(z, x, x0, x1)
    code = StrongInteractionField(L, S, exact=False).direction(z, x, x0, x1)
    gap = float((1 - cosine(exact, code)).mean())
    assert low < gap < high


def test_forward_only_fields_point_forward_inside_the_slab():
    g, D, L = gen(8), 2, 1.0
    x0, x1 = randn(64, D, g=g), randn(64, D, g=g, scale=3.0, shift=2.0)
    z = 0.01 + 0.98 * torch.rand(2000, generator=g, dtype=F64)
    x = randn(2000, D, g=g, scale=4.0)
    fields = [ForwardOnlyField(p, L) for p in PATHS] + [StrongInteractionField(L, 0.5, exact=False)]
    for field in fields:
        assert field.forward_only
        assert (field.direction(z, x, x0, x1)[0] > 0).all()
        assert (field.pair_field(z[:64], x[:64], x0, x1)[0] >= 0).all()
    assert not CoulombField(L).forward_only


# -- image dimension ----------------------------------------------------------------------------------------------
ALL_FIELDS = [
    CoulombField(20.0),
    CoulombField(20.0, separate_normalization=True, gamma=5.0),
    StrongInteractionField(20.0, 1.0),
    StrongInteractionField(20.0, 1.0, exact=False),
    ForwardOnlyField(LinearPath(0.1), 20.0),
    ForwardOnlyField(BrownianBridgePath(1.0), 20.0),
    ForwardOnlyField(TrigPath(0.1), 20.0),
    ForwardOnlyField(LipmanPath(1e-3), 20.0),
]


def test_high_dimension_directions_are_finite_unit_vectors():
    """D = 3072 (3x32x32), 256 pairs, 64 points, float32: every field's direction is finite and unit-norm, and
    points on a pair's segment get that pair's direction (weights collapse onto it; raw exp would give 0/0)."""
    g = gen(9)
    x0 = torch.rand(256, 3, 32, 32, generator=g)  # "images" in [0, 1] at z = 0
    x1 = torch.randn(256, 3, 32, 32, generator=g)  # noise at z = L
    z, x = UniformVolume()(x0[:64], x1[:64], 20.0, generator=g)
    own = torch.cat([torch.full((64, 1), 20.0), (x1[:64] - x0[:64]).flatten(1)], 1)
    own = own / own.norm(dim=1, keepdim=True)
    for field in ALL_FIELDS:
        nz, nx = field.direction(z, x, x0, x1)
        assert nx.shape == x.shape and nz.dtype == torch.float32
        assert torch.isfinite(nz).all() and torch.isfinite(nx).all()
        norm = torch.sqrt(nz.double() ** 2 + nx.double().flatten(1).pow(2).sum(1))
        assert (norm - 1).abs().max() < 1e-5
        # the separately normalised EFM variant is excluded: its source part is the direction from the nearest
        # source charge whatever the distance to the target plate, often another pair's
        # (docs/concepts/interaction-fields.md#efm-target)
        collapses = not getattr(field, "separate_normalization", False) and (
            not isinstance(field, ForwardOnlyField) or isinstance(field.path, (LinearPath, BrownianBridgePath))
        )
        if collapses:
            cos = nz * own[:, 0] + (nx.flatten(1) * own[:, 1:]).sum(1)
            assert cos.min() > 0.999, field
        tz, tx = field.target(z, x, x0, x1)
        assert torch.allclose(tz, math.sqrt(3073) * nz)


def test_spec_round_trip_and_validation():
    for field in ALL_FIELDS:
        rebuilt = build(to_spec(field))
        assert type(rebuilt) is type(field) and repr(rebuilt) == repr(field)
    assert StrongInteractionField(3.0).t_of_z(1.5) == 0.5 and StrongInteractionField(3.0).z_of_t(0.5) == 1.5
    with pytest.raises(ValueError, match="L must be > 0"):
        CoulombField(0.0)
    with pytest.raises(ValueError, match="share the data shape"):
        CoulombField(1.0).direction(torch.ones(2), torch.zeros(2, 3), torch.zeros(4, 2), torch.zeros(4, 2))
