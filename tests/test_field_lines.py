"""Numbers for lightning_fm.sampling.field_lines and lightning_fm.fields.volume
(docs/concepts/interaction-fields.md#stopping, docs/concepts/checks.md#c5,
docs/concepts/interaction-fields.md#samplers-and-stopping)."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_fm.fields import CoulombField, ForwardOnlyField
from lightning_fm.fields.volume import GaussianMixing, PathVolume, PFGMMixing, SlabAndBeyondVolume, UniformVolume
from lightning_fm.paths import BrownianBridgePath, LinearPath, LipmanPath, TrigPath
from lightning_fm.sampling.field_lines import integrate_field_lines
from lightning_fm.sampling.ode import step

F64 = torch.float64


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def gaussian_toy(seed=0, n_pairs=64, n_lines=100):
    """Gaussian -> Gaussian pairs (independent coupling) in 2-D, float64."""
    g = gen(seed)
    x0 = torch.randn(n_pairs, 2, generator=g, dtype=F64)
    x1 = torch.tensor([4.0, 1.0], dtype=F64) + 0.5 * torch.randn(n_pairs, 2, generator=g, dtype=F64)
    source = torch.randn(n_lines, 2, generator=g, dtype=F64)
    return x0, x1, source


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_z_stepping_on_forward_only_field_is_cfm_in_t(method):
    """C5: stepping dx/dz = E_x/E_z with dz on Phi(path) = stepping dx/dt = v with dt = dz/L (float precision)."""
    x0, x1, source = gaussian_toy()
    path, L, steps = LinearPath(0.3), 4.0, 50
    field = ForwardOnlyField(path, L)
    lines = integrate_field_lines(
        lambda z, x: field.direction(z, x, x0, x1), source, L, method=method, steps=steps, eps=0.0
    )

    def velocity(t, x):  # the minibatch marginal velocity of CFM, written in t
        return path.posterior(x, torch.full((x.shape[0],), t, dtype=F64), x0, x1).velocity

    x, dt = source, 1.0 / steps
    for k in range(steps):
        x = step(velocity, k * dt, x, dt, method)
    assert (lines.x - x).abs().max() < 1e-12
    stages = {"euler": 1, "rk4": 4}[method]
    assert lines.nfe == steps * stages and lines.info["backward"] == 0 and lines.info["crossing"] == 0
    assert bool(lines.returned.all()) and torch.equal(lines.end_z, torch.full((100,), L, dtype=F64))
    # and it transports the source Gaussian onto the target one (C6, coarse)
    assert (lines.x.mean(0) - torch.tensor([4.0, 1.0], dtype=F64)).abs().max() < 0.25


def test_euler_in_t_hand_checked_against_closed_form_steps():
    """One z-Euler step by hand: x + dz * (v/L) with v the posterior velocity at z = eps."""
    x0, x1, source = gaussian_toy(1, n_lines=5)
    field, L, eps = ForwardOnlyField(TrigPath(0.5), 2.0), 2.0, 0.1
    lines = integrate_field_lines(lambda z, x: field.direction(z, x, x0, x1), source, L, steps=1, eps=eps)
    v = field.path.posterior(source, torch.full((5,), eps / L, dtype=F64), x0, x1).velocity
    assert torch.allclose(lines.x, source + (L - eps) * v / L, rtol=0, atol=1e-13)


def efm_toy():
    """Three +1 charges on z = 0, three -1 charges on z = L = 1 (D = 1); lines leave each source charge at angles
    phi in (-1.3, 1.3) from the z axis, i.e. start at (eps, x0 + eps tan phi)."""
    x0 = torch.tensor([[-1.0], [0.0], [1.0]], dtype=F64)
    x1 = torch.tensor([[-0.5], [0.3], [0.7]], dtype=F64)
    eps = 1e-3
    phi = torch.linspace(-1.3, 1.3, 9, dtype=F64)
    source = (x0[:, None, :] + eps * torch.tan(phi)[None, :, None]).reshape(-1, 1)
    field = CoulombField(1.0)
    return (lambda z, x: field.direction(z, x, x0, x1)), source, x1, eps


def test_continue_outside_brings_efm_lines_back_to_the_target_plate():
    """Point charges: every line reaching z = L off a charge crosses the plate (E_z > 0 there); continued by
    arclength, they come back from behind and end on (or next to) a target charge; none is lost silently."""
    fn, source, x1, eps = efm_toy()
    plain = integrate_field_lines(fn, source, 1.0, steps=100, eps=eps)
    gap = (plain.x - x1.T).abs().min(1).values
    assert gap.max() > 0.3  # without phase 2 some lines stop between the charges
    lines = integrate_field_lines(
        fn, source, 1.0, steps=100, eps=eps, continue_outside=True, arc_step=0.02, max_arc_steps=1500
    )
    assert lines.info["backward"] == 0  # E_z > 0 everywhere inside the slab for EFM
    assert lines.info["crossing"] == 27 and lines.info["not_returned"] == 0 and bool(lines.returned.all())
    assert ((lines.end_z >= 1.0 - 1e-12) & (lines.end_z <= 1.05 + 1e-12)).all()
    assert (lines.x - x1.T).abs().min(1).values.max() < 0.06
    assert lines.info["absorbed"] > 0  # lines that converged onto a charge in phase 1 end there
    assert lines.nfe < 100 + 1 + 1500


def test_arc_step_cap_is_respected_and_reported():
    fn, source, x1, eps = efm_toy()
    lines = integrate_field_lines(
        fn, source, 1.0, steps=100, eps=eps, continue_outside=True, arc_step=0.02, max_arc_steps=2, record=True
    )
    assert lines.nfe == 100 + 1 + 2  # euler: one evaluation per step
    assert lines.info["not_returned"] > 0
    assert lines.info["not_returned"] == int((~lines.returned).sum())
    assert (lines.end_z[~lines.returned] > 1.0).all()
    assert lines.arcs.shape == (3, 27, 2)
    first = integrate_field_lines(
        fn, source, 1.0, steps=100, eps=eps, continue_outside=True, arc_step=0.02, max_arc_steps=2, record=5
    )
    assert first.trajectory.shape == (101, 5, 1) and torch.equal(first.arcs, lines.arcs[:, :5])
    heun = integrate_field_lines(
        fn, source, 1.0, method="heun", steps=10, eps=eps, continue_outside=True, arc_step=0.02, max_arc_steps=3
    )
    assert heun.nfe <= 10 * 2 + 1 + 3 * 2


def test_backward_evaluations_are_guarded_and_counted():
    """fz <= 0 cannot be followed in z: clamped to fz_min (finite steps), the lines are counted."""
    source = torch.linspace(-1, 1, 11, dtype=F64)[:, None]

    def field_fn(z, x):
        return x[:, 0], torch.ones_like(x)  # fz = x: backward where x <= 0

    lines = integrate_field_lines(field_fn, source, 1.0, steps=20, fz_min=0.5)
    assert lines.info["backward"] == int((source[:, 0] <= 0).sum()) == 6
    assert torch.isfinite(lines.x).all()


def test_relative_fz_floor_bounds_the_slope():
    """fz_min_rel = r clamps fz to at least r ||f||: with fz = -1, fx = 1 everywhere the slope is 1 / (r sqrt 2)
    (not 1 / fz_min), and every line is counted as backward."""
    source = torch.zeros(4, 1, dtype=F64)

    def field_fn(z, x):
        return -torch.ones_like(z), torch.ones_like(x)

    r, L = 0.05, 0.3
    lines = integrate_field_lines(field_fn, source, L, steps=30, eps=0.0, fz_min_rel=r)
    assert lines.info["backward"] == 4
    assert torch.allclose(lines.x, torch.full_like(source, L / (r * math.sqrt(2))), rtol=1e-12)
    plain = integrate_field_lines(field_fn, source, L, steps=30, eps=0.0)
    assert plain.x.abs().min() > 1e6  # the absolute floor fz_min = 1e-7 alone: steps of |fx| / 1e-7
    # a positive fz above the floor is untouched: the forward-only result is unchanged
    x0, x1, src = gaussian_toy(2, n_lines=20)
    field = ForwardOnlyField(LinearPath(0.3), 2.0)
    fn = lambda z, x: field.direction(z, x, x0, x1)  # noqa: E731
    a = integrate_field_lines(fn, src, 2.0, steps=20, eps=0.0)
    b = integrate_field_lines(fn, src, 2.0, steps=20, eps=0.0, fz_min_rel=1e-3)
    assert torch.equal(a.x, b.x)
    with pytest.raises(ValueError, match="fz_min_rel"):
        integrate_field_lines(fn, src, 2.0, fz_min_rel=1.0)


def test_cross_probe_decides_the_crossing_behind_the_plate():
    """A field that points up below z = L + 0.05 and down above it (a smoothed plate): probed on the plate every line
    crosses, goes up and comes back; probed at L + 0.1 none crosses and the lines end on the plate."""
    L = 1.0
    source = torch.linspace(-1, 1, 7, dtype=F64)[:, None]

    def field_fn(z, x):
        return torch.where(z < L + 0.05, 1.0, -1.0).to(F64), 0.2 * torch.ones_like(x)

    on_plate = integrate_field_lines(
        field_fn, source, L, steps=10, eps=0.0, continue_outside=True, arc_step=0.01, max_arc_steps=100
    )
    assert on_plate.info["crossing"] == 7 and on_plate.info["not_returned"] == 0
    assert (on_plate.x > source + 1.0 * 0.2).all()  # moved on during the excursion
    probed = integrate_field_lines(
        field_fn, source, L, steps=10, eps=0.0, continue_outside=True, arc_step=0.01, max_arc_steps=100, cross_probe=0.1
    )
    assert probed.info["crossing"] == 0 and probed.nfe == 10 + 1
    assert torch.allclose(probed.x, source + 0.2 * L) and torch.equal(probed.end_z, torch.full((7,), L, dtype=F64))
    with pytest.raises(ValueError, match="cross_probe"):
        integrate_field_lines(field_fn, source, L, continue_outside=True, cross_probe=-0.1)


def test_return_tol_ends_lines_on_the_raised_return_plane():
    """Exact EFM toy: lines that went above L + return_tol end on that plane, the others on z = L."""
    fn, source, x1, eps = efm_toy()
    lines = integrate_field_lines(
        fn,
        source,
        1.0,
        steps=100,
        eps=eps,
        continue_outside=True,
        arc_step=0.02,
        max_arc_steps=1500,
        return_tol=0.1,
        cross_probe=0.1,
    )
    assert lines.info["not_returned"] == 0
    assert ((lines.end_z >= 1.0 - 1e-12) & (lines.end_z <= 1.1 + 1e-12)).all()
    assert ((lines.end_z - 1.1).abs() < 1e-9).sum() > 0  # came back from above L + 0.1, through that plane


def test_record_shapes_and_validation():
    x0, x1, source = gaussian_toy(2, n_lines=7)
    field = ForwardOnlyField(BrownianBridgePath(1.0), 1.0)
    lines = integrate_field_lines(
        lambda z, x: field.direction(z, x, x0, x1),
        source,
        1.0,
        method="midpoint",
        steps=8,
        eps=0.01,
        z_end=0.99,
        record=True,
    )
    assert lines.trajectory.shape == (9, 7, 2) and lines.times.shape == (9,)
    assert torch.equal(lines.trajectory[0], source) and torch.equal(lines.trajectory[-1], lines.x)
    assert float(lines.times[0]) == pytest.approx(0.01) and float(lines.times[-1]) == pytest.approx(0.99)
    with pytest.raises(ValueError, match="unknown field-line method"):
        integrate_field_lines(lambda z, x: (z, x), source, 1.0, method="rk45")
    with pytest.raises(ValueError, match="leave z_end = L"):
        integrate_field_lines(lambda z, x: (z, x), source, 1.0, z_end=0.9, continue_outside=True)


def test_dopri5_through_the_ode_solver():
    pytest.importorskip("lightning_fm.sampling.ode")
    x0, x1, source = gaussian_toy(3, n_lines=20)
    field = ForwardOnlyField(LinearPath(0.3), 4.0)
    fn = lambda z, x: field.direction(z, x, x0, x1)  # noqa: E731
    adaptive = integrate_field_lines(fn, source, 4.0, method="dopri5", eps=0.0, steps=1000)
    fine = integrate_field_lines(fn, source, 4.0, method="rk4", eps=0.0, steps=200)
    assert (adaptive.x - fine.x).abs().max() < 1e-3 and adaptive.nfe > 0


# -- volume coverage ---------------------------------------------------------------------------------------------
def test_uniform_volume_on_the_segment():
    g, L, eps = gen(4), 3.0, 1e-3
    x0, x1 = torch.randn(500, 3, 4, 4, generator=g), torch.rand(500, 3, 4, 4, generator=g)
    z, x = UniformVolume(eps=eps)(x0, x1, L, generator=g)
    assert z.shape == (500,) and x.shape == x0.shape
    assert ((z > eps) & (z < L - eps)).all() and z.min() < 0.1 and z.max() > L - 0.1
    s = (z / L)[:, None, None, None]
    assert torch.allclose(x, (1 - s) * x0 + s * x1, atol=1e-6)
    z2, x2 = UniformVolume(eps=eps)(x0, x1, L, generator=gen(4).manual_seed(4))
    z3, x3 = UniformVolume(eps=eps)(x0, x1, L, generator=gen(4).manual_seed(4))
    assert torch.equal(z2, z3) and torch.equal(x2, x3)


def test_uniform_volume_tube_noise_profile():
    g, L, noise = gen(5), 2.0, 0.3
    x0, x1 = torch.randn(400, 5, generator=g, dtype=F64), torch.randn(400, 5, generator=g, dtype=F64)
    z, x = UniformVolume(tube_noise=noise)(x0, x1, L, generator=g)
    s = (z / L)[:, None]
    radius = (x - (1 - s) * x0 - s * x1).norm(dim=1)
    assert torch.allclose(radius, noise * (1 + torch.cos(2 * math.pi * (z - L / 2) / L)), atol=1e-12)
    assert radius.max() > 1.9 * noise  # about 2 * noise at mid-slab, 0 at the plates


@pytest.mark.parametrize("near", ["source", "target"])
def test_pfgm_mixing_z_distribution(near):
    g, L, eps = gen(6), 5.0, 1e-3
    x0, x1 = torch.randn(4000, 2, generator=g), torch.randn(4000, 2, generator=g)
    z, x = PFGMMixing(near=near)(x0, x1, L, generator=g)
    assert ((z >= eps - 1e-6) & (z <= L - eps + 1e-6)).all()
    d = z if near == "source" else L - z  # distance from the plate PFGM's charges sit on
    clamped = ((d - (L - eps)).abs() < 1e-5).float().mean()
    assert 0.1 < clamped < 0.6  # 1.03^m |N(0, 0.01^2)| reaches ~50: a good part piles up at the far plate
    assert (d < 0.1).float().mean() > 0.1  # and a good part sits near the plate
    # m ~ U[0, 291]: log(d / |N|) / log(1.03) is uniform; P(d < 0.1) = P(|N| 1.03^m < 0.1), checked by simulation
    m = torch.rand(400_000, generator=gen(60)) * 291
    reference = ((torch.randn(400_000, generator=gen(61)).abs() * 0.01 * 1.03**m) < 0.1).float().mean()
    assert abs((d < 0.1).float().mean() - reference) < 4 * (0.25 / 4000) ** 0.5
    s = (z / L)[:, None]
    assert torch.allclose(x, (1 - s) * x0 + s * x1, atol=1e-5)


def test_gaussian_mixing_is_a_pfgm_perturbation_of_the_data_charge():
    g, L, n = gen(8), 20.0, 20000
    x0, x1 = torch.randn(n, 1, 4, 4, generator=g, dtype=F64), torch.rand(n, 1, 4, 4, generator=g, dtype=F64)
    volume = GaussianMixing(sigma_end=0.1, tau=0.03, M=191, near="target")
    z, x = volume(x0, x1, L, generator=g)
    assert x.shape == x1.shape and ((z >= 1e-3 - 1e-9) & (z <= L - 1e-3 + 1e-9)).all()
    d, radius = L - z, (x - x1).flatten(1).norm(dim=1)
    # radius = ||N(0, 0.01 I_16)|| 1.03^m and height = |N(0, 0.01)| 1.03^m share the multiplier (unclamped points):
    # radius / height = ||g_16|| / |g_1|, independent of m; its median is ~ 4 / 0.674 (chi_16 over half-normal)
    free = (d > 1e-3 + 1e-9) & (d < L - 1e-3 - 1e-9)
    ratio = (radius / d)[free]
    reference = torch.randn(200_000, 16, generator=gen(80)).norm(dim=1) / torch.randn(200_000, generator=gen(81)).abs()
    assert abs(ratio.median().log() - reference.median().log()) < 0.05
    # m ~ 191 N(0, 1) (the reference code's draw, not U[0, M]): P(d < 0.1) = P(|N| 0.1 1.03^m < 0.1), by simulation
    m = torch.randn(400_000, generator=gen(82), dtype=F64) * 191
    reference = ((torch.randn(400_000, generator=gen(83), dtype=F64).abs() * 0.1 * 1.03**m) < 0.1).double().mean()
    assert abs((d < 0.1).double().mean() - reference) < 4 * (0.25 / n) ** 0.5
    # the same draws near the source plate: mirrored heights, the same perturbation around x0
    zs, xs = GaussianMixing(near="source")(x0, x1, L, generator=gen(9))
    zt, xt = volume(x0, x1, L, generator=gen(9))
    assert torch.allclose(zs, L - zt, atol=1e-12) and torch.allclose(xs - x0, xt - x1, atol=1e-12)


@pytest.mark.parametrize(
    "path", [LinearPath(0.2), BrownianBridgePath(1.0), LipmanPath(1e-3)], ids=lambda p: type(p).__name__
)
def test_path_volume_draws_from_the_path(path):
    g, L, n = gen(7), 4.0, 20000
    x0, x1 = torch.randn(n, 2, generator=g, dtype=F64), 3 + torch.randn(n, 2, generator=g, dtype=F64)
    z, x = PathVolume(path, eps=1e-3)(x0, x1, L, generator=g)
    t = z / L
    assert ((t > 1e-3) & (t < 1 - 1e-3)).all()
    if path.requires_gaussian_source:  # Lipman: x0 is the noise, x = t x1 + sigma_t x0
        assert torch.allclose(x, path.mean(x0, x1, t) + path.sigma(t)[:, None] * x0)
        return
    eps = (x - path.mean(x0, x1, t)) / path.sigma(t)[:, None]
    assert eps.mean().abs() < 0.03 and (eps.var() - 1).abs() < 0.03


def test_slab_and_beyond_volume_without_beyond_is_the_uniform_volume():
    g = gen(8)
    x0, x1 = torch.randn(300, 3, generator=g, dtype=F64), torch.randn(300, 3, generator=g, dtype=F64)
    z, x = SlabAndBeyondVolume(eps=0.01, tube_noise=0.2, beyond=0.0)(x0, x1, 2.0, generator=gen(9))
    zu, xu = UniformVolume(eps=0.01, tube_noise=0.2)(x0, x1, 2.0, generator=gen(9))
    assert torch.equal(z, zu) and torch.equal(x, xu)


def test_slab_and_beyond_volume_arcs_behind_the_plate():
    """beyond = 1, no noise: every point lies behind the plate, under the half-disc over the extended chord."""
    g, L, n = gen(10), 0.5, 4000
    x0, x1 = torch.randn(n, 2, generator=g, dtype=F64), 3 + torch.randn(n, 2, generator=g, dtype=F64)
    vol = SlabAndBeyondVolume(beyond=1.0, height=1.5, extend=0.5, power=1.0, beyond_noise=0.0, floor=0.0, gap=0.1)
    z, x = vol(x0, x1, L, generator=g)
    assert (z >= L + 0.1).all()
    d, delta = (x1 - x0).norm(dim=1), x1 - x0
    c = ((x - x0) * delta).sum(1) / d.square()  # position along the chord, 0 at x0, 1 at x1
    assert torch.allclose(x, x0 + c[:, None] * delta, atol=1e-10)  # on the chord's line
    assert (c >= -0.5 - 1e-12).all() and (c <= 1.5 + 1e-12).all() and c.min() < -0.45 and c.max() > 1.45
    s = (c + 0.5) / 2.0
    cap = 1.5 * 2.0 * d * torch.sqrt(s * (1 - s))
    assert (z - L - 0.1 <= cap + 1e-10).all()
    ratio = (z - L - 0.1) / cap  # = u, uniform on (0, 1) for power = 1
    assert (ratio.mean() - 0.5).abs() < 0.02
    zp, xp = SlabAndBeyondVolume(beyond=1.0, height=1.5, extend=0.5, power=3.0, beyond_noise=0.0, floor=0.0, gap=0.1)(
        x0, x1, L, generator=gen(11)
    )
    cp = ((xp - x0) * delta).sum(1) / d.square()
    sp = (cp + 0.5) / 2.0
    # heights are now u^3 times the cap: mean 1/4
    assert (((zp - L - 0.1) / (1.5 * 2.0 * d * torch.sqrt(sp * (1 - sp)))).mean() - 0.25).abs() < 0.02


def test_slab_and_beyond_volume_fraction_spread_and_validation():
    g, L, n = gen(12), 4.0, 20000
    x0, x1 = torch.randn(n, 2, generator=g, dtype=F64), torch.randn(n, 2, generator=g, dtype=F64)
    z, x = SlabAndBeyondVolume(eps=0.01, spread=2.0, beyond=0.3, floor=0.2)(x0, x1, L, generator=g)
    inside = z < L
    assert (inside.double().mean() - 0.7).abs() < 0.02 and (z[inside] > 0.01).all()
    assert (z[~inside] >= L + 0.01).all()  # gap defaults to eps
    s = (z[inside] / L)[:, None]
    noise = (x[inside] - (1 - s) * x0[inside] - s * x1[inside]) / (2.0 * torch.sin(math.pi * z[inside] / L))[:, None]
    assert noise.mean().abs() < 0.03 and (noise.var() - 1).abs() < 0.03  # spread * sin(pi z / L) * N(0, I)
    for bad in ({"beyond": 1.5}, {"extend": -1.0}, {"power": -1.0}, {"gap": -0.1}, {"spread": -1.0}):
        with pytest.raises(ValueError):
            SlabAndBeyondVolume(**bad)
    assert "SlabAndBeyondVolume(eps=" in repr(SlabAndBeyondVolume())


def test_ifm_module_samples_with_its_field_line_sampler():
    """IFMModule(sampler=FieldLineSampler(...)) samples exactly as integrate_field_lines with those options, stores
    them, and takes per-call overrides."""
    from lightning_fm.models import MLP, FieldHead
    from lightning_fm.modules import IFMModule
    from lightning_fm.sampling import FieldLineSampler

    torch.manual_seed(0)
    opts = {"return_tol": 0.2, "cross_probe": 0.2, "fz_min_rel": 0.05}
    sampler = FieldLineSampler(steps=100, arc_step=0.05, max_arc_steps=50, **opts)
    module = IFMModule(FieldHead(MLP(2, 16, 2)), CoulombField(0.3), sampler=sampler)
    assert {k: module.hparams["sampler"]["init_args"][k] for k in opts} == opts
    source = torch.randn(32, 2, generator=gen(13))
    got = module.sample(source, steps=20)
    ref = integrate_field_lines(
        module.field_output,
        source,
        0.3,
        steps=20,
        eps=0.0,
        continue_outside=True,
        arc_step=0.05,
        max_arc_steps=50,
        **opts,
    )
    assert torch.equal(got.x, ref.x) and got.nfe == ref.nfe
    assert got.info["not_returned"] == ref.info["not_returned"] and got.info["backward"] == ref.info["backward"]


def outward_forever(z, x):
    """A field whose lines leave the slab and never come back: ``f = (1, x)`` everywhere (up and radially out)."""
    return torch.ones_like(z), x


def test_max_radius_stops_and_flags_lines_that_leave_the_ball():
    """docs/concepts/interaction-fields.md#lines-astray: a continued line farther than max_radius from the origin is
    stopped there (within one arclength step of the sphere) and flagged, never handed back as a sample; without the
    bound the same lines run for the whole step budget."""
    source = torch.tensor([[0.5], [1.0], [-1.5]], dtype=F64)
    free = integrate_field_lines(
        outward_forever, source, 1.0, steps=10, continue_outside=True, arc_step=0.1, max_arc_steps=200
    )
    assert free.info["not_returned"] == 3 and "escaped" not in free.info and not free.returned.any()
    assert free.x.abs().min() > 10  # the lines wandered off for the whole budget
    bounded = integrate_field_lines(
        outward_forever, source, 1.0, steps=10, continue_outside=True, arc_step=0.1, max_arc_steps=200, max_radius=5.0
    )
    assert bounded.info["not_returned"] == bounded.info["escaped"] == 3 and not bounded.returned.any()
    assert (bounded.x.abs() <= 5.0).all() and (bounded.x.abs() > 5.0 - 0.1).all()
    assert bounded.nfe < free.nfe
    assert not bounded.kept().any() and free.kept().shape == (3,)


def test_max_radius_flags_phase_one_escapes_and_keeps_the_others():
    """A line already beyond max_radius at the target plate is flagged and not continued; the line inside the ball
    returns as before, bit for bit."""

    def field_fn(z, x):  # slope x in phase 1; behind the plate (z > 1) straight back down
        return torch.where(z > 1, -torch.ones_like(z), torch.ones_like(z)), torch.where(z[:, None] > 1, 0 * x, x)

    source = torch.tensor([[0.1], [3.0]], dtype=F64)
    options = dict(steps=50, continue_outside=True, arc_step=0.05, max_arc_steps=100, cross_probe=0.0)
    plain = integrate_field_lines(field_fn, source, 1.0, **options)
    bounded = integrate_field_lines(field_fn, source, 1.0, max_radius=1.0, **options)
    assert plain.returned.all() and plain.x[1, 0] > 1.0 > plain.x[0, 0]
    assert bounded.returned.tolist() == [True, False] and bounded.info["escaped"] == 1
    phase_one = integrate_field_lines(field_fn, source, 1.0, steps=50)
    assert torch.equal(bounded.x[0], plain.x[0]) and torch.equal(bounded.x[1], phase_one.x[1])  # stopped on the plate
    assert bounded.info["crossing"] == plain.info["crossing"] - 1
    with pytest.raises(ValueError, match="max_radius"):
        integrate_field_lines(field_fn, source, 1.0, max_radius=0.0)


def test_lines_that_did_not_return_are_left_out_of_w2_and_the_module_warns():
    """The evaluation scores only the lines that returned (their count is logged as not_returned), and
    ``module.sample`` says how many did not, naming ``result.kept()``."""
    from lightning_fm.metrics import wasserstein2
    from lightning_fm.models import MLP, FieldHead
    from lightning_fm.modules import IFMModule
    from lightning_fm.modules.evaluation import EvaluationMetrics
    from lightning_fm.sampling import FieldLineSampler, LinesNotReturnedWarning, SampleResult

    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [40.0, 0.0]])
    result = SampleResult(x=x, nfe=1, returned=torch.tensor([True, True, False]), info={"not_returned": 1.0})
    target = torch.tensor([[0.0, 0.5], [1.0, 0.5]])
    metrics = EvaluationMetrics(100)
    metrics.update(torch.tensor(0.0), {"x0": x, "x1": target}, result)
    values = metrics.compute()
    assert float(values["w2"]) == pytest.approx(wasserstein2(x[:2], target)) and float(values["w2"]) < 1
    assert metrics.info["not_returned"] == 1

    torch.manual_seed(0)
    module = IFMModule(FieldHead(MLP(2, 16, 2)), CoulombField(0.3), sampler=FieldLineSampler(steps=5, max_arc_steps=3))
    with pytest.warns(
        LinesNotReturnedWarning, match=r"of 64 field lines did not return .*result\.x\[result\.kept\(\)\]"
    ):
        lines = module.sample(torch.randn(64, 2, generator=gen(3)) * 3)
    assert 0 < int((~lines.kept()).sum()) == lines.info["not_returned"]
