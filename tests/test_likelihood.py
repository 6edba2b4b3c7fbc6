"""Likelihoods (docs/concepts/likelihoods.md#change-of-variables): the change of variables against closed forms,
Hutchinson's unbiasedness, forward-only IFM through the duality, EFM's refusal, bits/dim, and the callback's logged
values against a direct computation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch import Trainer
from torch import nn

from lightning_fm.callbacks import HeldOutLikelihood
from lightning_fm.data import DigitsDataModule, DigitsImages, ToyDataModule, TransferDataModule
from lightning_fm.data.sources import eight_gaussians_log_prob, source_record
from lightning_fm.duality import GaussianToy
from lightning_fm.duality.maps import field_target_from_velocity
from lightning_fm.fields import CoulombField, ForwardOnlyField
from lightning_fm.likelihood import (
    bits_per_dim,
    dequantize,
    grid_spacing,
    log_likelihood,
    standard_normal_log_prob,
)
from lightning_fm.models import MLP, FieldHead, UNet
from lightning_fm.modules import CFMModule, ForwardOnlyIFMModule, IFMModule
from lightning_fm.paths import LinearPath
from lightning_fm.sampling import ODESampler
from lightning_fm.utils.seeding import make_generator

TIGHT = {"atol": 1e-7, "rtol": 1e-7}  # dopri5's error control is an RMS over the batch: tighten it for per-point 1e-4


@pytest.mark.parametrize("dim", [2, 16])
def test_gaussian_to_gaussian_matches_the_closed_form_density(dim):
    """N(0, I) -> N(m, 0.5^2 I), independent coupling, linear path with sigma = 0: the marginal is N(m_t, s_t^2 I) with
    s_t^2 = (1 - t)^2 + t^2 / 4, and the exact marginal velocity carries log N(.; 0, I) to log N(.; m, 0.25 I)."""
    toy = GaussianToy(LinearPath(0.0), m0=0.0, s0=1.0, m1=torch.linspace(-1.0, 2.0, dim), s1=0.5, dim=dim)
    x = toy.sample_target(64, torch.Generator().manual_seed(0))
    result = log_likelihood(
        toy.velocity, x, lambda y: toy.log_prob(y, 0.0), method="dopri5", divergence="exact", **TIGHT
    )
    expected = toy.log_prob(x, 1.0)
    assert (result.log_prob - expected).abs().max() < 1e-4
    # the parts: x(0) is the inverse flow map (an affine map of x here), log_det = D log(s_0 / s_1) = D log 2
    mean_1 = toy.mean(1.0)[0]
    assert torch.allclose(result.x0, (x - mean_1) / 0.5, atol=1e-5)
    assert torch.allclose(result.log_det, torch.full_like(result.log_det, dim * math.log(2.0)), atol=1e-5)
    assert result.nfe > 0 and result.info["backward_passes"] == result.nfe * dim


def random_velocity(dim: int) -> MLP:
    torch.manual_seed(3)
    return MLP(data_shape=[dim], width=32, depth=2).double().eval()


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_estimates_are_unbiased(probe):
    """v = MLP(x, t) + A x in D = 4 with A = -2 I + 0.5 R (R Gaussian): a full, non-symmetric Jacobian (Rademacher
    probes have variance too) and a large log-det (about 6, so a relative bias of a few percent shows). One point
    repeated 4000 times, each row with its own probe: the mean of the estimates lies within three standard errors
    of the exact-divergence value on the same RK4 grid (x(t) does not depend on the probes)."""
    net, dim, n = random_velocity(4), 4, 4000
    a = -2 * torch.eye(dim, dtype=torch.float64) + 0.5 * torch.randn(
        dim, dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64
    )

    def velocity(x, t):
        return net(x, t) + x @ a.T

    x = torch.tensor([[0.3, -0.8, 1.1, 0.2]], dtype=torch.float64)
    options = {"method": "rk4", "steps": 10}
    with torch.no_grad():
        exact = log_likelihood(velocity, x, standard_normal_log_prob, divergence="exact", **options)
        estimate = log_likelihood(
            velocity,
            x.expand(n, dim),
            standard_normal_log_prob,
            divergence="hutchinson",
            probe=probe,
            generator=torch.Generator().manual_seed(1),
            **options,
        )
    assert torch.allclose(estimate.x0, exact.x0.expand(n, dim), atol=1e-12, rtol=0)
    assert exact.log_det.abs() > 5
    values = estimate.log_prob
    standard_error = values.std() / math.sqrt(n)
    assert standard_error > 0.01  # a real spread
    assert (values.mean() - exact.log_prob[0]).abs() < 3 * standard_error
    assert estimate.info["backward_passes"] == estimate.nfe  # one vector-Jacobian product per evaluation


class ExactPairsField(FieldHead):
    """The exact field of ``ForwardOnlyField(LinearPath(sigma), L)`` superposed over fixed pairs: the current
    ``(p_t(x), p_t(x) v(x) / L)`` itself (``value``) or the regression target ``sqrt(D+1) (1, v/L) / norm``."""

    def __init__(self, sigma: float, L: float, x0: list, x1: list, value: bool) -> None:
        nn.Module.__init__(self)
        self.field, self.L, self.value = ForwardOnlyField(LinearPath(sigma), L), L, value
        self.register_buffer("x0", torch.tensor(x0, dtype=torch.float64))
        self.register_buffer("x1", torch.tensor(x1, dtype=torch.float64))

    def forward(self, x, t, y=None):
        z = t * self.L
        if self.value:
            return self.field.field(z, x, self.x0, self.x1)
        return self.field.target(z, x, self.x0, self.x1)


PAIRS_X0 = [[-2.0, 0.0], [0.0, 2.0], [1.0, -1.0]]
PAIRS_X1 = [[2.0, 1.0], [3.0, -1.0], [-1.0, 2.0]]


@pytest.mark.parametrize("value", [True, False], ids=["current", "normalised"])
def test_forward_only_ifm_module_of_an_exact_field_gives_the_paths_density(value):
    """A ForwardOnlyIFMModule whose network is the exact field of a path (three pairs, linear path, sigma = 0.5):
    its likelihood through v = L f_x / f_z is the path's closed-form marginal at t = 1, the mixture
    (1/3) sum_j N(x; x1_j, sigma^2 I), from the source mixture (1/3) sum_j N(x; x0_j, sigma^2 I). The normalised
    field, which has lost the density E_z = p_t, gives it back through the divergence."""
    sigma, L = 0.5, 5.0
    path = LinearPath(sigma)
    x0, x1 = torch.tensor(PAIRS_X0, dtype=torch.float64), torch.tensor(PAIRS_X1, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = x1[torch.randint(0, 3, (48,), generator=g)] + sigma * torch.randn(48, 2, generator=g, dtype=torch.float64)

    def mixture(t: float):
        return lambda y: path.posterior(y, torch.full((len(y),), t, dtype=y.dtype), x0, x1).log_density

    module = ForwardOnlyIFMModule(ExactPairsField(sigma, L, PAIRS_X0, PAIRS_X1, value), path=path, L=L).double()
    result = module.log_likelihood(x, mixture(0.0), **TIGHT)
    assert (result.log_prob - mixture(1.0)(x)).abs().max() < 1e-4
    assert not result.guarded.any() and result.info["guarded_evaluations"] == 0
    assert result.info["evaluations"] == result.nfe * len(x)


class VelocityField(FieldHead):
    """Phi on a network: the field target ``sqrt(D+1) (1, v/L) / norm`` of a velocity network ``v``."""

    def __init__(self, velocity: nn.Module, L: float) -> None:
        nn.Module.__init__(self)
        self.velocity, self.L = velocity, L

    def forward(self, x, t, y=None):
        return field_target_from_velocity(self.velocity(x, t), self.L)


def test_a_cfm_model_and_its_dual_field_model_have_the_same_likelihood():
    """CFMModule(v) and ForwardOnlyIFMModule(Phi(v)): the duality gives back v = L f_x / f_z to rounding, so dopri5
    takes the same steps and the two log-likelihoods agree to rounding (the CFM one is the function applied to v)."""
    net = random_velocity(2)
    cfm = CFMModule(backbone=net, path=LinearPath(0.1)).double().eval()
    ifm = ForwardOnlyIFMModule(VelocityField(net, 5.0), path=LinearPath(0.1), L=5.0).double().eval()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a, b = cfm.log_likelihood(x), ifm.log_likelihood(x)
    direct = log_likelihood(net, x, standard_normal_log_prob)
    assert torch.equal(a.log_prob, direct.log_prob)
    assert a.nfe == b.nfe and (a.log_prob - b.log_prob).abs().max() < 1e-10 and not b.guarded.any()


def test_efm_has_no_likelihood_and_says_why():
    module = IFMModule(field=CoulombField(1.0))
    with pytest.raises(ValueError, match="not forward-only.*z is not a time"):
        module.log_likelihood(torch.randn(4, 2))
    callback = HeldOutLikelihood(on_unsupported="raise")
    trainer = SimpleNamespace(datamodule=ToyDataModule(source="gaussian"))
    with pytest.raises(ValueError, match="CoulombField is not forward-only"):
        callback.setup(trainer, module, "fit")
    cfm = CFMModule()  # a source without a closed-form density
    with pytest.raises(ValueError, match="data.source='moons' has no closed-form density"):
        callback.setup(SimpleNamespace(datamodule=ToyDataModule(source="moons", target="8gaussians")), cfm, "fit")
    with pytest.warns(UserWarning, match="no likelihood is logged"):
        HeldOutLikelihood().setup(trainer, module, "fit")


class HalfPlaneField(FieldHead):
    """A (bad) learned field whose f_z = x_1 is <= 0 on the left half-plane: there z is not a time."""

    def __init__(self) -> None:
        nn.Module.__init__(self)

    def forward(self, x, t, y=None):
        return x[:, 0], torch.stack([torch.ones_like(x[:, 0]), x[:, 1]], 1)


def test_lines_through_non_positive_f_z_are_counted_not_nan():
    """v = L f_x / f_z = (1, x_2) / x_1 (L = 1): d(x_1^2)/dt = 2, so going back from t = 1 to 0 the lines of
    x_1 < sqrt(2) reach f_z = x_1 <= 0 and are guarded, those of x_1 > sqrt(2) never are. No NaN anywhere."""
    module = ForwardOnlyIFMModule(HalfPlaneField(), path=LinearPath(0.1), L=1.0)
    x = torch.tensor([[0.5, 0.1], [0.8, -0.3], [1.6, 0.2], [2.5, -1.0]])
    result = module.log_likelihood(x, method="rk4", steps=20)
    assert result.guarded.tolist() == [True, True, False, False]
    assert torch.isfinite(result.log_prob).all() and result.info["guarded_evaluations"] > 0


@pytest.mark.parametrize("levels", [17, 256])
def test_bits_per_dim_convention(levels):
    """Dequantised values stay in the cell centred on their grid value; a density uniform on the union of the cells,
    (levels * delta)^-D, scores exactly log2(levels) bits/dim (the bound is tight for it)."""
    delta, dim = grid_spacing(levels), 64
    grid = torch.randint(0, levels, (500, dim), generator=torch.Generator().manual_seed(0)) * delta - 1
    y = dequantize(grid, levels, torch.Generator().manual_seed(1))
    assert ((y - grid).abs() <= delta / 2).all() and torch.equal(torch.round((y + 1) / delta) * delta - 1, grid)
    uniform = torch.full((3,), -dim * math.log(levels * delta))
    assert torch.allclose(bits_per_dim(uniform, dim, levels), torch.full((3,), math.log2(levels)), atol=1e-6)
    assert abs(-math.log2(delta) - {17: 3.0, 256: math.log2(127.5)}[levels]) < 1e-12


def quiet_trainer(callbacks, **kwargs) -> Trainer:
    return Trainer(
        logger=False,
        callbacks=callbacks,
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


@pytest.mark.slow
def test_callback_logs_the_toy_nll_at_validation_and_test():
    """``val/nll`` at every second validation (K = 2) and ``test/nll``, each equal to the mean of -log p of the
    first n_points held-out targets computed directly with the model's log_likelihood and the 8-Gaussian source."""
    torch.manual_seed(0)
    callback = HeldOutLikelihood(every_n_validations=2, n_points=150)
    datamodule = ToyDataModule(steps_per_epoch=10, n_val=200, n_test=200, batch_size=128, eval_batch_size=100)
    module = CFMModule(path=LinearPath(0.1))
    trainer = quiet_trainer([callback], max_steps=40, num_sanity_val_steps=1)
    trainer.fit(module, datamodule=datamodule)
    assert callback.validations == 4 and "val/nll" in trainer.callback_metrics
    logged = float(trainer.callback_metrics["val/nll"])
    source = callback._source
    heldout = datamodule.eval_set("val")["x1"][:150]
    module.eval()
    direct = -torch.cat([module.log_likelihood(part, source).log_prob for part in heldout.split(100)]).mean()
    assert abs(logged - float(direct)) < 1e-4 * abs(float(direct))
    metrics = trainer.test(module, datamodule=datamodule, verbose=False)[0]
    assert metrics["test/nll"] > 0 and metrics["test/likelihood_nfe"] > 0 and metrics["test/likelihood_nonfinite"] == 0


def test_callback_logs_the_digits_bits_per_dim():
    """``val/bpd`` of the digits (17 levels, Hutchinson in D = 64) equals the formula applied to the model's
    log-likelihood of the same dequantised images with the same probes."""
    torch.manual_seed(0)
    unet = UNet(
        data_shape=[1, 8, 8],
        model_channels=8,
        channel_mult=[1, 2],
        num_res_blocks=1,
        attention_resolutions=[],
        num_heads=1,
        norm_groups=4,
    )
    module = CFMModule(backbone=unet, path=LinearPath(0.0), sampler=ODESampler("euler", 2))
    callback = HeldOutLikelihood(n_points=6, method="rk4", steps=4)
    datamodule = DigitsDataModule(batch_size=16, val_fraction=0.2, seed=0, eval_batch_size=8)
    trainer = quiet_trainer([callback], max_steps=1, num_sanity_val_steps=0, limit_train_batches=1, limit_val_batches=1)
    trainer.fit(module, datamodule=datamodule)
    assert callback._image_levels == 17 and callback.divergence_for(64) == "hutchinson"
    images = datamodule.splits["val"][0]
    batch = next(iter(datamodule.val_dataloader()))
    assert torch.equal(batch["x1"][:6], images[:6])
    generator = make_generator(0, 0, 0, 0)
    y = dequantize(images[:6], 17, generator)
    module.eval()
    result = module.log_likelihood(y, method="rk4", steps=4, divergence="hutchinson", generator=generator)
    expected = bits_per_dim(result.log_prob, 64, 17).mean()
    assert abs(float(trainer.callback_metrics["val/bpd"]) - float(expected)) < 1e-4


@pytest.mark.slow  # the default job through the CLI
def test_the_default_toy_job_logs_val_nll_and_the_test_command_reports_test_nll(tmp_path, monkeypatch):
    """The CLI's default callbacks (every toy config without its own list) include HeldOutLikelihood: ``fit`` logs
    ``val/nll`` and ``test --ckpt_path`` reports ``test/nll`` (in-process, tiny budgets)."""
    from lightning_fm.cli import main

    monkeypatch.chdir(tmp_path)
    small = [
        "--data.init_args.steps_per_epoch=20",
        "--data.init_args.n_val=100",
        "--data.init_args.n_test=100",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    cli = main(["fit", "--trainer.max_steps=20", *small])
    assert math.isfinite(float(cli.trainer.callback_metrics["val/nll"]))
    [checkpoint] = tmp_path.glob("runs/*/version_*/checkpoints/last.ckpt")
    cli = main(["test", f"--ckpt_path={checkpoint}", *small])
    test_nll = float(cli.trainer.callback_metrics["test/nll"])
    assert math.isfinite(test_nll)
    assert cli.trainer.callback_metrics["test/likelihood_nonfinite"] == 0
    # the docs' Python route gives the same number: the checkpoint recorded the source (the 8-Gaussian mixture), and
    # log_likelihood(x) with the callback's settings (exact divergence in 2-D, dopri5 1e-5) on the same batch (the
    # n_test = 100 held-out targets: dopri5's steps depend on the batch) gives the same per-point values. Only the
    # mean's rounding differs: float32 sums of n values (at most n u mean|v|, u = 2^-24), then the logged float32.
    model = CFMModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    assert model.source_density == {"density": "8gaussians", "source": "data.source='8gaussians'"}
    x = cli.datamodule.eval_set("test")["x1"]
    values = -model.log_likelihood(x, divergence="exact", method="dopri5", atol=1e-5, rtol=1e-5).log_prob
    u = 2.0**-24
    assert abs(float(values.double().mean()) - test_nll) <= len(x) * u * float(values.abs().mean()) + u * abs(test_nll)
    assumed_normal = -model.log_likelihood(x, standard_normal_log_prob).log_prob.mean()
    assert float(assumed_normal) > test_nll + 1.0  # what log_likelihood(x) assumed before: a much worse density


def test_log_likelihood_uses_the_fits_source_and_refuses_a_source_without_a_density(tmp_path):
    """A fit records the data's source and the checkpoint keeps it: ``log_likelihood(x)`` uses its density (N(0, I),
    the 8-Gaussian mixture) and raises, naming it, for a source without a closed-form density (the toy ``moons``, a
    transfer's images); an explicit ``source_log_prob`` still overrides; a module never fit assumes N(0, I)."""
    torch.manual_seed(0)
    x, options = torch.randn(8, 2), {"method": "euler", "steps": 4}

    def fit(source: str, target: str = "moons") -> tuple[CFMModule, Trainer]:
        module = CFMModule(MLP(2, 16, 2))
        data = ToyDataModule(source=source, target=target, steps_per_epoch=2, batch_size=16, n_val=8, n_test=8)
        trainer = quiet_trainer([], max_steps=2, limit_val_batches=0)
        trainer.fit(module, datamodule=data)
        return module.eval(), trainer

    for source, density in (("8gaussians", eight_gaussians_log_prob()), ("gaussian", standard_normal_log_prob)):
        module, _ = fit(source)
        default = module.log_likelihood(x, **options).log_prob
        assert torch.equal(default, module.log_likelihood(x, density, **options).log_prob)
    module, trainer = fit("moons", "8gaussians")
    assert module.source_density == {"density": None, "source": "data.source='moons'"}
    with pytest.raises(ValueError, match=r"CFMModule.log_likelihood: .*data.source='moons' has no closed-form density"):
        module.log_likelihood(x, **options)
    assert torch.isfinite(module.log_likelihood(x, standard_normal_log_prob, **options).log_prob).all()
    trainer.save_checkpoint(tmp_path / "moons.ckpt")
    loaded = CFMModule.load_from_checkpoint(tmp_path / "moons.ckpt", map_location="cpu")
    assert loaded.source_density == module.source_density
    with pytest.raises(ValueError, match="data.source='moons' has no closed-form density"):
        loaded.log_likelihood(x, **options)
    transfer = TransferDataModule(DigitsImages(classes=[2]), DigitsImages(classes=[3]))
    assert source_record(transfer) == {"density": None, "source": "data.source (a DigitsImages)"}
    assert source_record(DigitsDataModule())["density"] == "standard_normal"
    assert CFMModule().source_density is None  # never fit: log_likelihood(x) assumes N(0, I), as always


def test_labels_of_an_evaluation_batch_inference_tensors_are_accepted():
    """Lightning moves validation batches under torch.inference_mode: their labels must still reach the network
    whose divergence is taken by autograd."""
    torch.manual_seed(0)
    module = CFMModule(MLP(2, 16, 2, num_classes=3)).eval()
    x, y = torch.randn(3, 2), torch.tensor([0, 1, 2])
    with torch.inference_mode():
        y_inference = y.clone()
    assert y_inference.is_inference()
    got = module.log_likelihood(x, y=y_inference, method="euler", steps=4).log_prob
    assert torch.equal(got, module.log_likelihood(x, y=y, method="euler", steps=4).log_prob)
