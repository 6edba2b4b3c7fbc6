"""LightningModules: targets against independent computations, labels, checkpoint specs, the injected optimiser,
data checks before training."""

import functools

import pytest
import torch
from lightning.pytorch import Trainer

from lightning_fm.couplings import IndependentCoupling, OTCoupling
from lightning_fm.data import DigitsDataModule, ToyDataModule
from lightning_fm.models import MLP, FieldHead, UNet
from lightning_fm.modules import CFMModule, ForwardOnlyIFMModule, IFMModule, Pairs
from lightning_fm.paths import BrownianBridgePath, LinearPath, LipmanPath
from lightning_fm.sampling import FieldLineSampler, ODESampler
from lightning_fm.utils.schedules import LinearWarmup


def _expected_target(path, xt, t, x0, x1, i, group):
    """The posterior average for point i over the pairs ``group`` by an explicit loop over pairs."""
    logp = torch.stack([path.log_prob(xt[i : i + 1], t[i : i + 1], x0[j : j + 1], x1[j : j + 1])[0] for j in group])
    u = torch.stack([path.velocity(xt[i : i + 1], t[i : i + 1], x0[j : j + 1], x1[j : j + 1])[0] for j in group])
    return (torch.softmax(logp, 0)[:, None] * u).sum(0)


@pytest.mark.parametrize("offset, rows", [(0, 8), (4, 4)])  # one process, or rank 1 of 2 with 4 rows each
def test_multi_sample_target_is_the_posterior_average_within_each_group_of_charges(offset, rows):
    torch.manual_seed(0)
    path = BrownianBridgePath(0.8)
    module = CFMModule(path=path, coupling=IndependentCoupling(), velocity_target="multi", charges=3)
    x0, x1 = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64) + 2
    mine = slice(offset, offset + rows)
    pairs = Pairs(x0[mine], x1[mine], None, None, x0, x1, offset)
    t = torch.rand(rows, dtype=torch.float64)
    torch.manual_seed(1)
    xt, target = module.objective.regression_target(pairs, t)
    torch.manual_seed(1)
    assert torch.equal(xt, path.sample(x0[mine], x1[mine], t).xt)
    for i in range(rows):
        g = offset + i  # global index: groups of 3 consecutive pairs of the GLOBAL batch, whatever the rank
        group = range(3 * (g // 3), min(3 * (g // 3) + 3, 8))
        assert torch.allclose(target[i], _expected_target(path, xt, t, x0, x1, i, group), atol=1e-12)


def test_single_sample_target_is_the_conditional_velocity():
    module = CFMModule(path=LinearPath(0.0), coupling=IndependentCoupling())
    x0, x1, t = torch.randn(5, 2), torch.randn(5, 2), torch.rand(5)
    _, target = module.objective.regression_target(Pairs(x0, x1, None, None, x0, x1), t)
    assert torch.allclose(target, x1 - x0)


def test_hyperparameters_hold_specs_that_rebuild_the_module_and_its_optimiser():
    module = CFMModule(
        MLP(2, width=16, depth=2),
        BrownianBridgePath(0.3),
        IndependentCoupling(),
        sampler=ODESampler("rk4", 10),
        optimizer=functools.partial(torch.optim.AdamW, lr=3e-4),
        lr_scheduler=functools.partial(LinearWarmup, warmup_steps=9),
    )
    hp = dict(module.hparams)
    assert hp["path"] == {"class_path": "lightning_fm.paths.BrownianBridgePath", "init_args": {"sigma": 0.3}}
    assert hp["optimizer"] == {"class_path": "torch.optim.adamw.AdamW", "init_args": {"lr": 3e-4}}
    assert hp["sampler"]["init_args"]["method"] == "rk4" and "field" not in hp
    clone = CFMModule(**hp)
    clone.load_state_dict(module.state_dict())
    x, t = torch.randn(4, 2), torch.rand(4)
    assert torch.equal(clone.velocity(x, t), module.velocity(x, t))
    config = clone.configure_optimizers()
    optimizer, schedule = config["optimizer"], config["lr_scheduler"]["scheduler"]
    assert isinstance(optimizer, torch.optim.AdamW) and config["lr_scheduler"]["interval"] == "step"
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-4 / 10)  # first of 10 warm-up steps
    for _ in range(9):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(3e-4)
    assert clone.sample(torch.randn(3, 2)).nfe == 40  # rk4: 4 evaluations x 10 steps, from the stored sampler


def test_forward_only_module_stores_its_path_not_the_derived_field():
    module = ForwardOnlyIFMModule(FieldHead(MLP([2], width=8)), path=LinearPath(0.2), L=3.0)
    hp = dict(module.hparams)
    assert "field" not in hp and hp["L"] == 3.0 and hp["path"]["init_args"] == {"sigma": 0.2}
    clone = ForwardOnlyIFMModule(**hp)
    assert clone.field.L == 3.0 and clone.path.sigma(torch.tensor([0.5])) == pytest.approx(0.2)


def test_ifm_needs_a_field_head_and_cfm_a_velocity_backbone():
    with pytest.raises(ValueError, match="model.backbone must give the field"):
        IFMModule(backbone=MLP([2]))
    with pytest.raises(ValueError, match="model.backbone is a FieldHead"):
        CFMModule(backbone=FieldHead(MLP([2])))
    with pytest.raises(ValueError, match="model.sampler must be a FieldLineSampler"):
        IFMModule(sampler=ODESampler())
    with pytest.raises(ValueError, match="model.sampler must be an ODESampler"):
        CFMModule(sampler=FieldLineSampler())


def test_labels_follow_the_coupling_into_a_class_conditional_backbone():
    seen = []

    class Recording(MLP):
        def forward_with_features(self, x, t, y=None):
            seen.append(y)
            return super().forward_with_features(x, t, y)

    module = CFMModule(Recording([2], width=8, num_classes=2), coupling=OTCoupling(within_class=True))
    batch = next(iter(ToyDataModule("gaussian", "moons", batch_size=64, steps_per_epoch=1).train_dataloader()))
    pairs = module.couple(batch)
    assert torch.equal(torch.sort(pairs.y1).values, torch.sort(batch["y1"]).values)
    module.loss(batch)
    assert seen[-1] is not None and seen[-1].shape == (64,)
    with pytest.raises(ValueError, match=r"labels y must lie in 0..1 \(2: the null class\)"):
        module.sample(batch["x0"], y=torch.full((64,), 3))
    with pytest.raises(ValueError, match="no target labels"):
        CFMModule(MLP([2], width=8, num_classes=2)).loss({"x0": batch["x0"], "x1": batch["x1"]})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"velocity_target": "both"}, "model.velocity_target"),
        ({"velocity_target": "multi"}, "sigma > 0"),
        ({"charges": 0, "velocity_target": "multi"}, "model.charges"),
        ({"charges": 8}, "needs velocity_target='multi'"),
        ({"val_trajectories": -1}, "model.val_trajectories"),
        ({"w2_max_samples": 1}, "model.w2_max_samples"),
    ],
)
def test_bad_module_arguments_raise_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CFMModule(path=LinearPath(0.0), **kwargs)
    with pytest.raises(ValueError, match="unknown ODESampler method 'rk45'"):
        ODESampler("rk45")


def _fit(module, data, steps=1):
    trainer = Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        accelerator="cpu",
    )
    trainer.fit(module, data)


def test_lipman_path_needs_a_gaussian_source_before_training_starts():
    with pytest.raises(ValueError, match="model.path=LipmanPath"):
        _fit(CFMModule(path=LipmanPath()), ToyDataModule("8gaussians", "moons", steps_per_epoch=2))
    _fit(CFMModule(path=LipmanPath()), ToyDataModule("gaussian", "moons", steps_per_epoch=2))


def test_backbone_of_the_wrong_shape_or_classes_is_caught_before_training():
    with pytest.raises(ValueError, match="model.backbone cannot take data of shape"):
        _fit(CFMModule(backbone=MLP(3)), ToyDataModule(steps_per_epoch=2))
    with pytest.raises(ValueError, match="num_classes=3, but the data has 2 classes"):
        _fit(CFMModule(backbone=MLP(2, num_classes=3)), ToyDataModule(steps_per_epoch=2))
    rgb_unet = UNet(
        (3, 8, 8), model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(), norm_groups=4
    )  # digits are grey (1, 8, 8): the channels do not match the data
    message = r"model.backbone cannot take data of shape \(1, 8, 8\).*data_shape \[3, 8, 8\]"
    with pytest.raises(ValueError, match=message):
        _fit(CFMModule(backbone=rgb_unet), DigitsDataModule(batch_size=16))


def test_source_and_target_of_different_shapes_fail_before_training():
    class Mismatched(ToyDataModule):
        @property
        def target_shape(self):
            return (3,)

    with pytest.raises(ValueError, match=r"source samples have shape \(2,\) but target samples \(3,\)"):
        _fit(CFMModule(), Mismatched(steps_per_epoch=2))


@pytest.mark.parametrize("family", ["cfm", "ifm"])
def test_bf16_autocast_trains_the_network_in_bf16_and_keeps_pairs_and_targets_in_float32(family):
    """Under ``precision: bf16-mixed`` (Lightning's autocast) the coupling, the points and the regression target
    (the multi-sample posterior velocity, the superposed field) are computed in float32 with autocast off; only the
    network runs in bf16, and the loss is a float32 number."""
    from lightning_fm.fields import CoulombField

    torch.manual_seed(0)
    if family == "cfm":
        module = CFMModule(MLP([2], width=16), LinearPath(0.1), IndependentCoupling(), velocity_target="multi")
        inner, name = module.path, "posterior"
    else:
        module = IFMModule(FieldHead(MLP([2], width=16)), CoulombField(0.3))
        inner, name = module.field, "target"
    seen = []
    original = getattr(inner, name)

    def recording(*args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), {a.dtype for a in args if torch.is_tensor(a)}))
        return original(*args, **kwargs)

    setattr(inner, name, recording)
    batch = {"x0": torch.randn(32, 2), "x1": torch.randn(32, 2)}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module.loss(batch, distributed=False)
    assert seen and all(not enabled and dtypes == {torch.float32} for enabled, dtypes in seen)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())
