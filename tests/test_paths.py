"""Gaussian CFM paths against the closed forms of docs/concepts/flow-matching.md#path-catalogue, written out again here,
in float64."""

import math

import pytest
import torch

from lightning_fm.paths import (
    PATHS,
    BrownianBridgePath,
    GaussianPath,
    LinearPath,
    LipmanPath,
    SineBridgePath,
    TrigPath,
)
from lightning_fm.utils.spec import build, to_spec

F64 = torch.float64
PI = math.pi


# -- closed forms: (a, b, a', b', sigma, sigma') with mu_t = a x0 + b x1, u_t(x) = a' x0 + b' x1 + sigma'/sigma (x - mu)
def linear_sigma(sigma):
    def form(t):
        one = torch.ones_like(t)
        return 1 - t, t, -one, one, sigma * one, 0 * one

    return form


def bridge(sigma):
    def form(t):
        one = torch.ones_like(t)
        s = sigma * torch.sqrt(t * (1 - t))
        ds = sigma * (1 - 2 * t) / (2 * torch.sqrt(t * (1 - t)))
        return 1 - t, t, -one, one, s, ds

    return form


def trig(sigma):
    def form(t):
        h = PI / 2
        c, s = torch.cos(h * t), torch.sin(h * t)
        return c, s, -h * s, h * c, sigma * torch.ones_like(t), torch.zeros_like(t)

    return form


def lipman(sigma_min):
    def form(t):
        zero, one = torch.zeros_like(t), torch.ones_like(t)
        return zero, t, zero, one, 1 - (1 - sigma_min) * t, -(1 - sigma_min) * one

    return form


def sine_bridge(scale, ramp=0.5):
    def form(t):
        one = torch.ones_like(t)
        k = PI / (2 * ramp)
        s = torch.where(
            t < ramp,
            scale * torch.sin(k * t),
            torch.where(t > 1 - ramp, scale * torch.cos(k * (t - 1 + ramp)), scale * one),
        )
        ds = torch.where(
            t < ramp,
            scale * k * torch.cos(k * t),
            torch.where(t > 1 - ramp, -scale * k * torch.sin(k * (t - 1 + ramp)), 0 * one),
        )
        return 1 - t, t, -one, one, s, ds

    return form


CASES = {
    "linear-0.3": (lambda: LinearPath(sigma=0.3), linear_sigma(0.3)),
    "linear-0": (lambda: LinearPath(sigma=0.0), linear_sigma(0.0)),
    "bridge-0.5": (lambda: BrownianBridgePath(0.5), bridge(0.5)),
    "trig-0.2": (lambda: TrigPath(0.2), trig(0.2)),
    "lipman-1e-3": (lambda: LipmanPath(1e-3), lipman(1e-3)),
    "sine-0.7": (lambda: SineBridgePath(0.7), sine_bridge(0.7)),
    "sine-0.7-ramp-0.2": (lambda: SineBridgePath(0.7, ramp=0.2), sine_bridge(0.7, 0.2)),
}
NOISY = [name for name in CASES if name != "linear-0"]


def gen(seed):
    return torch.Generator().manual_seed(seed)


def data(shape=(2,), n=64, seed=0, t_range=(0.02, 0.98)):
    g = gen(seed)
    x0 = torch.randn(n, *shape, generator=g, dtype=F64)
    x1 = 0.5 * torch.randn(n, *shape, generator=g, dtype=F64) + 1.5
    t = t_range[0] + (t_range[1] - t_range[0]) * torch.rand(n, generator=g, dtype=F64)
    noise = torch.randn(n, *shape, generator=g, dtype=F64)
    return x0, x1, t, noise


def pad(v, x):
    return v.reshape(-1, *([1] * (x.dim() - 1)))


def closed(form, x0, x1, t):
    a, b, da, db, s, ds = (pad(v, x0) for v in form(t))
    mu = a * x0 + b * x1
    dmu = da * x0 + db * x1
    return mu, dmu, s, ds


def closed_velocity(form, x, x0, x1, t):
    mu, dmu, s, ds = closed(form, x0, x1, t)
    return dmu + ds / s * (x - mu)


def close(actual, expected, tol=1e-12):
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol)


# -- values ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2,), (3, 4, 4)], ids=["2d", "image"])
@pytest.mark.parametrize("name", list(CASES))
def test_mean_std_sample_velocity_against_closed_forms(name, shape):
    make, form = CASES[name]
    path = make()
    assert isinstance(path, GaussianPath)
    x0, x1, t, noise = data(shape)
    mu, dmu, s, ds = closed(form, x0, x1, t)
    close(path.mean(x0, x1, t), mu)
    close(path.mean_velocity(x0, x1, t), dmu)
    close(path.std(t), s.flatten())
    sample = path.sample(x0, x1, t, noise=noise)
    close(sample.t, t)
    close(sample.xt, mu + s * noise)
    close(sample.ut, dmu + ds * noise)
    if float(s.min()) > 0:
        close(sample.ut, closed_velocity(form, sample.xt, x0, x1, t), 1e-10)
    close(path.velocity(sample.xt, t, x0, x1), sample.ut, 1e-10)
    # the conditional velocity at arbitrary points, not only at samples
    x = torch.randn(x0.shape, generator=gen(1), dtype=F64)
    if float(s.min()) > 0:
        close(path.velocity(x, t, x0, x1), closed_velocity(form, x, x0, x1, t), 1e-10)


def test_closed_form_velocities_of_the_catalogue():
    """The table of docs/concepts/flow-matching.md#path-catalogue, velocity column, for each path (not through (a, b,
    sigma) this time)."""
    x0, x1, t, _ = data(n=32, seed=2)
    x = torch.randn(x0.shape, generator=gen(3), dtype=F64)
    tt = t[:, None]
    mu = (1 - tt) * x0 + tt * x1
    close(LinearPath(0.3).velocity(x, t, x0, x1), x1 - x0)
    close(BrownianBridgePath(0.5).velocity(x, t, x0, x1), (1 - 2 * tt) / (2 * tt * (1 - tt)) * (x - mu) + x1 - x0)
    close(TrigPath(0.2).velocity(x, t, x0, x1), PI / 2 * (torch.cos(PI * tt / 2) * x1 - torch.sin(PI * tt / 2) * x0))
    close(LipmanPath(1e-3).velocity(x, t, x0, x1), (x1 - (1 - 1e-3) * x) / (1 - (1 - 1e-3) * tt))
    close(SineBridgePath(0.7).velocity(x, t, x0, x1), x1 - x0 + PI / torch.tan(PI * tt) * (x - mu), 1e-10)
    # the scalar-time form broadcasts
    close(LinearPath(0.3).mean(x0, x1, 0.25), 0.75 * x0 + 0.25 * x1)
    assert float(BrownianBridgePath(0.5).std(0.25)) == pytest.approx(0.5 * math.sqrt(0.25 * 0.75), rel=1e-6)


def test_endpoints():
    x0, x1, _, noise = data(n=8, seed=4)
    for path in (LinearPath(0.0), BrownianBridgePath(0.5), SineBridgePath(0.7), SineBridgePath(0.7, ramp=0.2)):
        for t, end in ((0.0, x0), (1.0, x1)):
            sample = path.sample(x0, x1, t, noise=noise)
            close(sample.xt, end)
            assert torch.isfinite(sample.ut).all()
    lipman = LipmanPath(1e-3)
    close(lipman.sample(x0, x1, 0.0).xt, x0)  # the source samples are the noise: trajectories start at x0
    close(lipman.sample(x0, x1, 1.0, noise=noise).xt, x1 + 1e-3 * noise)
    assert lipman.requires_gaussian_source and not LinearPath().requires_gaussian_source


def test_lipman_uses_the_source_as_noise():
    x0, x1, t, _ = data(seed=5)
    path = LipmanPath(1e-3)
    a, b = path.sample(x0, x1, t), path.sample(x0, x1, t, noise=x0)
    close(a.xt, b.xt, 0)
    close(a.ut, b.ut, 0)


@pytest.mark.parametrize("shape", [(2,), (3, 4, 4)], ids=["2d", "image"])
@pytest.mark.parametrize("name", NOISY)
def test_log_prob_is_an_isotropic_normal(name, shape):
    make, form = CASES[name]
    path = make()
    x0, x1, t, noise = data(shape, seed=6)
    mu, _, s, _ = closed(form, x0, x1, t)
    x = mu + 1.3 * s * noise
    expected = torch.distributions.Normal(mu, s.expand_as(mu)).log_prob(x).flatten(1).sum(1)
    close(path.log_prob(x, t, x0, x1), expected, 1e-10)


def test_log_prob_needs_positive_sigma():
    x0, x1, t, _ = data(seed=7)
    with pytest.raises(ValueError, match="sigma_t > 0"):
        LinearPath(0.0).log_prob(x0, t, x0, x1)
    with pytest.raises(ValueError, match="sigma_t > 0"):
        BrownianBridgePath(0.5).log_prob(x0, 0.0, x0, x1)


# -- continuity equation (docs/concepts/flow-matching.md#cfm-loss and check C1, here in t) -----------------------------
@pytest.mark.parametrize("name", NOISY)
def test_continuity_equation_with_autograd(name):
    """``d p_t(x|c)/dt + div_x(p_t(x|c) u_t(x|c)) = 0`` exactly, at random (t, x) in 2-D."""
    path = CASES[name][0]()
    x0, x1, t, noise = data(n=128, seed=8, t_range=(0.05, 0.95))
    mu, _, s, _ = closed(CASES[name][1], x0, x1, t)
    x = (mu + 1.5 * s * noise).requires_grad_(True)
    t = t.clone().requires_grad_(True)
    p = path.log_prob(x, t, x0, x1).exp()
    flux = p[:, None] * path.velocity(x, t, x0, x1)
    (dp_dt,) = torch.autograd.grad(p.sum(), t, retain_graph=True)
    div = sum(torch.autograd.grad(flux[:, k].sum(), x, retain_graph=True)[0][:, k] for k in range(2))
    scale = dp_dt.abs() + div.abs()
    assert (scale > 0).all()
    rel = ((dp_dt + div).abs() / scale).max().item()
    assert rel < 1e-8, rel


def test_continuity_fails_for_a_wrong_velocity():
    """The check has teeth: dropping the sigma'/sigma term of the bridge breaks it."""
    path = BrownianBridgePath(0.5)
    x0, x1, t, noise = data(n=64, seed=9, t_range=(0.1, 0.4))
    x = ((1 - t[:, None]) * x0 + t[:, None] * x1 + noise).requires_grad_(True)
    t = t.clone().requires_grad_(True)
    p = path.log_prob(x, t, x0, x1).exp()
    flux = p[:, None] * (x1 - x0)
    (dp_dt,) = torch.autograd.grad(p.sum(), t, retain_graph=True)
    div = sum(torch.autograd.grad(flux[:, k].sum(), x, retain_graph=True)[0][:, k] for k in range(2))
    assert ((dp_dt + div).abs() / (dp_dt.abs() + div.abs())).max() > 1e-2


# -- posterior (superposition of all pairs) ------------------------------------------------------------------------
def brute_force_posterior(form, x, t, x0, x1):
    """Per-point, per-pair loop: log-sum-exp weights of N(x_i; mu_{t_i}(c_j), sigma_{t_i}^2 I)."""
    velocities, log_densities = [], []
    dim = x[0].numel()
    for i in range(x.shape[0]):
        ti = t[i : i + 1]
        logps, us = [], []
        for j in range(x0.shape[0]):
            mu, dmu, s, ds = closed(form, x0[j : j + 1], x1[j : j + 1], ti)
            sq = (x[i : i + 1] - mu).pow(2).sum()
            si = s.flatten()[0]
            logps.append(-0.5 * sq / si**2 - dim * torch.log(si) - 0.5 * dim * math.log(2 * PI))
            us.append((dmu + ds / s * (x[i : i + 1] - mu))[0])
        logps = torch.stack(logps)
        w = torch.exp(logps - torch.logsumexp(logps, 0))
        velocities.append(sum(wj * uj for wj, uj in zip(w, us)))
        log_densities.append(torch.logsumexp(logps, 0) - math.log(x0.shape[0]))
    return torch.stack(velocities), torch.stack(log_densities)


@pytest.mark.parametrize("name", NOISY)
def test_posterior_against_a_brute_force_loop(name):
    make, form = CASES[name]
    path = make()
    x0, x1, _, _ = data((3, 2, 2), n=9, seed=10)
    _, _, t, noise = data((3, 2, 2), n=6, seed=11, t_range=(0.05, 0.95))
    mu, _, s, _ = closed(form, x0[:6], x1[:6], t)
    x = mu + 0.8 * s * noise  # near their own pair, with other pairs contributing
    post = path.posterior(x, t, x0, x1, chunk_size=4)  # also exercises chunking
    velocity, log_density = brute_force_posterior(form, x, t, x0, x1)
    assert post.velocity.shape == x.shape and post.log_density.shape == (6,)
    close(post.velocity, velocity, 1e-10)
    close(post.log_density, log_density, 1e-10)


def test_posterior_of_one_pair_is_the_conditional_velocity():
    path = BrownianBridgePath(0.5)
    x0, x1, t, noise = data(n=5, seed=12, t_range=(0.1, 0.9))
    x = path.sample(x0, x1, t, noise=noise).xt
    for i in range(5):
        post = path.posterior(x[i : i + 1], t[i : i + 1], x0[i : i + 1], x1[i : i + 1])
        close(post.velocity, path.velocity(x[i : i + 1], t[i : i + 1], x0[i : i + 1], x1[i : i + 1]), 1e-10)
        close(post.log_density, path.log_prob(x[i : i + 1], t[i : i + 1], x0[i : i + 1], x1[i : i + 1]), 1e-10)


def test_posterior_errors():
    x0, x1, t, _ = data(n=4, seed=13)
    with pytest.raises(ValueError, match="sigma_t > 0"):
        LinearPath(0.0).posterior(x0, t, x0, x1)
    with pytest.raises(ValueError, match="data shape"):
        LinearPath(0.3).posterior(torch.zeros(4, 3, dtype=F64), t, x0, x1)


# -- validation and specs ------------------------------------------------------------------------------------------
def test_parameter_errors():
    with pytest.raises(ValueError, match="LinearPath.sigma"):
        LinearPath(-0.1)
    with pytest.raises(ValueError, match="TrigPath.sigma"):
        TrigPath(-1.0)
    with pytest.raises(ValueError, match="BrownianBridgePath.sigma"):
        BrownianBridgePath(0.0)
    with pytest.raises(ValueError, match="BrownianBridgePath.sigma"):
        BrownianBridgePath(-0.5)
    with pytest.raises(ValueError, match="LipmanPath.sigma_min"):
        LipmanPath(-1e-3)
    with pytest.raises(ValueError, match="LipmanPath.sigma_min"):
        LipmanPath(1.0)
    with pytest.raises(ValueError, match="SineBridgePath.scale"):
        SineBridgePath(0.0)
    for ramp in (0.0, 0.6, -0.1):
        with pytest.raises(ValueError, match="SineBridgePath.ramp"):
            SineBridgePath(0.7, ramp=ramp)
    with pytest.raises(ValueError, match="sigma"):
        LinearPath(float("nan"))


def test_shape_errors():
    path = LinearPath(0.3)
    x0, x1 = torch.zeros(4, 2), torch.zeros(4, 3)
    t = torch.rand(4)
    for call in (
        lambda: path.mean(x0, x1, t),
        lambda: path.sample(x0, x1, t),
        lambda: path.velocity(x0, t, x0, x1),
        lambda: path.log_prob(x0, t, x0, x1),
    ):
        with pytest.raises(ValueError, match=r"x0 \(4, 2\).*x1 \(4, 3\)"):
            call()
    with pytest.raises(ValueError, match="t must have shape"):
        path.mean(x0, x0, torch.rand(3))


@pytest.mark.parametrize("name", list(CASES))
def test_spec_round_trip(name):
    path = CASES[name][0]()
    spec = to_spec(path)
    assert spec["class_path"].startswith("lightning_fm.paths.")
    rebuilt = build(spec)
    assert type(rebuilt) is type(path) and rebuilt.init_args == path.init_args
    x0, x1, t, noise = data(seed=14)
    a, b = path.sample(x0, x1, t, noise=noise), rebuilt.sample(x0, x1, t, noise=noise)
    assert torch.equal(a.xt, b.xt) and torch.equal(a.ut, b.ut)


def test_registry_and_float32():
    assert set(PATHS) == {"linear", "brownian_bridge", "trig", "lipman", "sine_bridge"}
    x0, x1, t, noise = (v.float() for v in data(seed=15))
    sample = SineBridgePath(0.7).sample(x0, x1, t, noise=noise)
    assert sample.xt.dtype == sample.ut.dtype == torch.float32
    assert BrownianBridgePath(0.5).posterior(sample.xt, t, x0, x1).velocity.dtype == torch.float32
