"""Time samplers of CFM (docs/concepts/flow-matching.md#time-sampling): each against its density, the time/volume
duality ``t = z / L`` both ways, the default reproducing the old ``torch.rand`` training bit for bit, training with
each, and the loss-gap identity (C8) under each time density.

The exact duality checks (C1, C2, C4, C5, C9, C12: ``run_exact_checks``) evaluate the maps at their own points and
never draw training times, so they do not involve the time sampler and are not repeated here; C8 (the CFM/FM loss
gap does not depend on theta) is the identity that involves the training times, checked below with each density.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from lightning_fm.duality import default_toy
from lightning_fm.fields import PathVolume, PFGMMixing, SlabAndBeyondVolume, TimeDensityVolume, UniformVolume
from lightning_fm.fields.volume import GaussianMixing
from lightning_fm.modules import CFMModule, FlowMatchingModule
from lightning_fm.objectives import Pairs, VelocityObjective
from lightning_fm.paths import BrownianBridgePath, LinearPath
from lightning_fm.sampling import ODESampler
from lightning_fm.time_samplers import BetaTime, LogitNormalTime, TimeSampler, UniformTime, VolumeTime
from lightning_fm.utils.spec import allowed_prefixes, build, untrusted_class_paths

N = 20000
LEGACY = __import__("pathlib").Path(__file__).parent / "data" / "legacy"
# the loss of tests/data/legacy/cfm.ckpt on _batch() after torch.manual_seed(1234), computed by the code before time
# samplers existed (t = torch.rand(...) in VelocityObjective.regression)
LEGACY_CFM_LOSS = 9.849767684936523


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _samples(sampler: TimeSampler, seed: int = 0) -> np.ndarray:
    t = sampler.sample(N, gen(seed), "cpu", torch.float64)
    assert t.shape == (N,) and t.dtype == torch.float64 and bool(((t >= 0) & (t <= 1)).all())
    return t.numpy()


CLOSED_FORM = [
    (UniformTime(), stats.uniform(0, 1)),
    (LogitNormalTime(), stats.norm(0, 1)),
    (LogitNormalTime(-0.5, 1.6), stats.norm(-0.5, 1.6)),
    (BetaTime(2.0, 5.0), stats.beta(2.0, 5.0)),
    (BetaTime(0.5, 0.7), stats.beta(0.5, 0.7)),
    (BetaTime(1.0, 1.0), stats.beta(1.0, 1.0)),
]


@pytest.mark.parametrize("sampler, law", CLOSED_FORM, ids=[repr(s) for s, _ in CLOSED_FORM])
def test_samples_follow_the_density(sampler, law):
    t = _samples(sampler)
    x = np.log(t) - np.log1p(-t) if isinstance(sampler, LogitNormalTime) else t  # logit t ~ N(m, s^2)
    assert stats.kstest(x, law.cdf).pvalue > 0.01
    # log_prob is the density of the same law (on the t scale)
    grid = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    if isinstance(sampler, LogitNormalTime):
        y = np.log(grid.numpy()) - np.log1p(-grid.numpy())
        expected = law.logpdf(y) - np.log(grid.numpy() * (1 - grid.numpy()))
    else:
        expected = law.logpdf(grid.numpy())
    assert np.allclose(sampler.log_prob(grid).numpy(), expected, atol=1e-10)
    assert torch.isneginf(sampler.log_prob(torch.tensor([-0.1, 1.1], dtype=torch.float64))).all()


def test_samplers_are_reproducible_from_their_generator_and_respect_dtype():
    for sampler in (UniformTime(), LogitNormalTime(), BetaTime(2, 3), VolumeTime(PFGMMixing(), 2.0)):
        a, b = sampler.sample(100, gen(3), "cpu", torch.float32), sampler.sample(100, gen(3), "cpu", torch.float32)
        assert torch.equal(a, b) and a.dtype == torch.float32
        with pytest.raises(NotImplementedError) if isinstance(sampler, VolumeTime) else _nothing():
            sampler.log_prob(a)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_uniform_time_is_the_old_torch_rand_draw():
    for dtype in (torch.float32, torch.float64):
        torch.manual_seed(7)
        old = torch.rand(33, device="cpu", dtype=dtype)
        torch.manual_seed(7)
        assert torch.equal(UniformTime().sample(33, None, "cpu", dtype), old)
    assert torch.equal(UniformTime().sample(33, gen(2)), torch.rand(33, generator=gen(2)))


# -- the duality t = z / L: volume -> time and time -> volume ------------------------------------------------------
@pytest.mark.parametrize(
    "volume, law",
    [
        (UniformVolume(eps=0.0), stats.uniform(0, 1)),
        (UniformVolume(eps=0.1), stats.uniform(0.05, 0.9)),  # L = 2: z ~ U(0.1, 1.9)
        (PathVolume(LinearPath(0.1), eps=0.05), stats.uniform(0.05, 0.9)),
        (SlabAndBeyondVolume(eps=0.1, beyond=0.6), stats.uniform(0.05, 0.9)),  # behind the plate: rejected
    ],
    ids=["uniform", "uniform-eps", "path", "slab-and-beyond"],
)
def test_volume_time_of_a_uniform_slab_is_uniform(volume, law):
    assert stats.kstest(_samples(VolumeTime(volume, 2.0)), law.cdf).pvalue > 0.01


@pytest.mark.parametrize(
    "sampler, law",
    [(BetaTime(2.0, 5.0), stats.beta(2.0, 5.0)), (UniformTime(), stats.uniform(0, 1))],
    ids=["beta", "uniform"],
)
@pytest.mark.parametrize("path", [None, BrownianBridgePath(0.5)], ids=["segment", "path"])
def test_time_density_to_volume_to_time_density(sampler, law, path):
    volume = TimeDensityVolume(sampler, path, eps=0.0)
    t = _samples(VolumeTime(volume, 3.0))
    assert stats.kstest(t, law.cdf).pvalue > 0.01


@pytest.mark.parametrize(
    "volume",
    [PFGMMixing(), PFGMMixing(sigma_end=0.1, M=191, near="source"), GaussianMixing(), UniformVolume(eps=0.01)],
    ids=["pfgm-target", "pfgm-source", "gaussian-mixing", "uniform"],
)
def test_volume_to_time_density_to_volume(volume):
    """The z-marginal of ``TimeDensityVolume(VolumeTime(v, L))`` is v's (two-sample KS, independent draws)."""
    L = 2.0
    x0, x1 = torch.randn(N, 2, generator=gen(1), dtype=torch.float64), torch.randn(N, 2, generator=gen(2)).double()
    z_v, _ = volume(x0, x1, L, gen(3))
    z_back, x_back = TimeDensityVolume(VolumeTime(volume, L), eps=0.0)(x0, x1, L, gen(4))
    assert stats.ks_2samp(z_v.numpy(), z_back.numpy()).pvalue > 0.01
    s = (z_back / L)[:, None]  # without a path: on the pair's segment, as UniformVolume
    assert torch.allclose(x_back, (1 - s) * x0 + s * x1, atol=1e-12)


def test_time_density_volume_with_uniform_time_is_the_path_volume():
    path, L = BrownianBridgePath(0.5), 2.5
    x0, x1 = torch.randn(50, 3, generator=gen(1)), torch.randn(50, 3, generator=gen(2))
    z_a, x_a = PathVolume(path, eps=0.0)(x0, x1, L, gen(5))
    z_b, x_b = TimeDensityVolume(UniformTime(), path, eps=0.0)(x0, x1, L, gen(5))
    assert torch.equal(z_a, z_b) and torch.allclose(x_a, x_b, atol=1e-6)
    z_c, _ = TimeDensityVolume(BetaTime(0.3, 0.3), path, eps=0.01)(x0, x1, L, gen(5))
    assert (
        float(z_c.min()) >= 0.01 - 1e-6 and float(z_c.max()) <= L - 0.01 + 1e-6
    )  # eps keeps the points off the plates


def test_time_samplers_and_time_density_volume_are_stored_as_specs():
    sampler = VolumeTime(TimeDensityVolume(LogitNormalTime(0.2, 0.8), LinearPath(0.1)), 2.0)
    module = CFMModule(time_sampler=sampler)
    spec = module.hparams["time_sampler"]
    assert spec["class_path"] == "lightning_fm.time_samplers.VolumeTime"
    assert untrusted_class_paths(spec, allowed_prefixes()) == []  # a checkpoint may name them
    rebuilt = build(spec)
    assert repr(rebuilt) == repr(sampler)
    assert torch.equal(rebuilt.sample(20, gen(1)), sampler.sample(20, gen(1)))
    assert CFMModule().hparams["time_sampler"] == {
        "class_path": "lightning_fm.time_samplers.UniformTime",
        "init_args": {},
    }
    with pytest.raises(ValueError, match="time_sampler"):
        CFMModule(time_sampler=UniformVolume())  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        TimeDensityVolume(UniformVolume())  # type: ignore[arg-type]


# -- the default trains exactly as before ----------------------------------------------------------------------------
def _batch() -> dict[str, torch.Tensor]:
    g = gen(0)
    return {"x0": torch.randn(64, 2, generator=g), "x1": torch.randn(64, 2, generator=g) + 3}


@pytest.mark.parametrize("velocity_target", ["single", "multi"])
def test_default_regression_is_bitwise_the_old_one(velocity_target):
    path, sampler = LinearPath(0.1), ODESampler()
    x0, x1 = _batch().values()
    pairs = Pairs(x0, x1, None, None, x0, x1)

    def no_drop(labels):
        return labels

    def old():  # VelocityObjective.regression before time samplers: t = torch.rand(n, device, dtype)
        torch.manual_seed(11)
        t = torch.rand(x0.shape[0], device=x0.device, dtype=x0.dtype)
        return (t, *VelocityObjective(path, sampler, velocity_target).regression_target(pairs, t))

    reference = old()
    for time_sampler in (None, UniformTime()):
        torch.manual_seed(11)
        problem = VelocityObjective(path, sampler, velocity_target, None, time_sampler).regression(pairs, no_drop, 0)
        assert torch.equal(problem.time, reference[0])
        assert torch.equal(problem.x, reference[1]) and torch.equal(problem.target, reference[2])


def test_legacy_checkpoint_loss_is_unchanged_with_the_default_and_with_uniform_time():
    module = FlowMatchingModule.load_from_checkpoint(LEGACY / "cfm.ckpt", map_location="cpu")
    assert isinstance(module.time_sampler, UniformTime)  # the checkpoint names none: the default
    torch.manual_seed(1234)
    loss = module.loss(_batch(), distributed=False).detach()
    assert math.isclose(float(loss), LEGACY_CFM_LOSS, rel_tol=1e-6, abs_tol=0)  # bitwise on the machine that pinned it
    explicit = FlowMatchingModule.load_from_checkpoint(
        LEGACY / "cfm.ckpt", map_location="cpu", time_sampler=UniformTime()
    )
    torch.manual_seed(1234)
    assert torch.equal(explicit.loss(_batch(), distributed=False).detach(), loss)


@pytest.mark.parametrize(
    "time_sampler",
    [None, UniformTime(), LogitNormalTime(), BetaTime(0.7, 1.3), VolumeTime(PFGMMixing(), 2.0)],
    ids=["none", "uniform", "logit-normal", "beta", "volume"],
)
def test_cfm_module_trains_with_each_time_sampler(time_sampler):
    torch.manual_seed(0)
    module = CFMModule(time_sampler=time_sampler)
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = module.loss(_batch(), distributed=False)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    assert all(math.isfinite(v) for v in losses), losses


# -- C8 under each time density: the gap L_CFM^w - L_FM^w does not depend on theta ----------------------------------
@pytest.mark.parametrize(
    "time_sampler",
    [UniformTime(), LogitNormalTime(), BetaTime(0.5, 2.0), VolumeTime(PFGMMixing(sigma_end=0.1, M=191), 1.0)],
    ids=["uniform", "logit-normal", "beta", "volume"],
)
def test_loss_gap_is_independent_of_theta_under_each_time_density(time_sampler):
    """C8 (docs/concepts/checks.md#c8) with ``t ~ time_sampler``: with common random numbers the difference of the two
    models' gaps has mean 0, because the marginal velocity is the conditional mean of the target at every t."""
    toy = default_toy(LinearPath(0.3))
    g = gen(10)
    x0, x1 = toy.sample_pairs(N, g)
    t = time_sampler.sample(N, g, "cpu", x0.dtype).clamp(0.01, 0.99)
    noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    s = toy.path.sample(x0, x1, t, noise=noise)
    u_marg = toy.velocity(s.xt, t)
    va, vb = torch.zeros_like(s.xt), 0.7 * s.xt - t[:, None]
    diff = -2 * ((va - vb) * (s.ut - u_marg)).sum(1)
    gap = ((va - s.ut).square().sum(1) - (va - u_marg).square().sum(1)).mean()
    assert float(diff.mean().abs()) < 3 * float(diff.std()) / math.sqrt(N)
    assert float(gap) > 0.01  # a real gap (the conditional variance of the target)
