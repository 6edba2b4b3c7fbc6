"""LightningModules: targets against independent computations, checkpoint specs, data checks before training."""
import pytest
import torch
from lightning.pytorch import Trainer

from lightning_fm.couplings import IndependentCoupling
from lightning_fm.data import ToyDataModule
from lightning_fm.models import MLP
from lightning_fm.modules import CFMModule
from lightning_fm.paths import BrownianBridgePath, LinearPath, LipmanPath


def test_multi_sample_target_is_the_posterior_average_within_each_group_of_charges():
    torch.manual_seed(0)
    path = BrownianBridgePath(0.8)
    module = CFMModule(path=path, coupling=IndependentCoupling(), target="multi", charges=4)
    x0, x1 = torch.randn(8, 2, dtype=torch.float64), torch.randn(8, 2, dtype=torch.float64) + 2
    t = torch.rand(8, dtype=torch.float64)
    torch.manual_seed(1)
    xt, target = module.regression_target(x0, x1, t)
    torch.manual_seed(1)
    assert torch.equal(xt, path.sample(x0, x1, t).xt)
    for i in range(8):
        group = slice(4 * (i // 4), 4 * (i // 4) + 4)  # own pair included
        logp = torch.stack([path.log_prob(xt[i:i + 1], t[i:i + 1], x0[j:j + 1], x1[j:j + 1])[0]
                            for j in range(group.start, group.stop)])
        w = torch.softmax(logp, 0)
        u = torch.stack([path.velocity(xt[i:i + 1], t[i:i + 1], x0[j:j + 1], x1[j:j + 1])[0]
                         for j in range(group.start, group.stop)])
        assert torch.allclose(target[i], (w[:, None] * u).sum(0), atol=1e-12)


def test_single_sample_target_is_the_conditional_velocity():
    module = CFMModule(path=LinearPath(0.0), coupling=IndependentCoupling())
    x0, x1, t = torch.randn(5, 2), torch.randn(5, 2), torch.rand(5)
    _, target = module.regression_target(x0, x1, t)
    assert torch.allclose(target, x1 - x0)


def test_hyperparameters_hold_specs_that_rebuild_the_module():
    module = CFMModule(MLP(2, width=16, depth=2), BrownianBridgePath(0.3), IndependentCoupling(), lr=3e-4)
    hp = dict(module.hparams)
    assert hp["path"] == {"class_path": "lightning_fm.paths.BrownianBridgePath", "init_args": {"sigma": 0.3}}
    clone = CFMModule(**hp)
    clone.load_state_dict(module.state_dict())
    x, t = torch.randn(4, 2), torch.rand(4)
    assert torch.equal(clone.velocity(x, t), module.velocity(x, t)) and clone.hparams.lr == 3e-4


@pytest.mark.parametrize(
    "kwargs, message",
    [({"target": "both"}, "model.target"), ({"target": "multi"}, "sigma > 0"),
     ({"sample_method": "rk45"}, "model.sample_method"), ({"charges": 0}, "model.charges")],
)
def test_bad_module_arguments_raise_naming_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CFMModule(path=LinearPath(0.0), **kwargs)


def _fit(module, data, steps=1):
    trainer = Trainer(max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, limit_val_batches=0, accelerator="cpu")
    trainer.fit(module, data)


def test_lipman_path_needs_a_gaussian_source_before_training_starts():
    with pytest.raises(ValueError, match="model.path=LipmanPath"):
        _fit(CFMModule(path=LipmanPath()), ToyDataModule("8gaussians", "moons", steps_per_epoch=2))
    _fit(CFMModule(path=LipmanPath()), ToyDataModule("gaussian", "moons", steps_per_epoch=2))


def test_backbone_of_the_wrong_shape_is_caught_before_training():
    with pytest.raises(ValueError, match="model.backbone cannot take data of shape"):
        _fit(CFMModule(backbone=MLP(3)), ToyDataModule(steps_per_epoch=2))


def test_source_and_target_of_different_shapes_fail_before_training():
    class Mismatched(ToyDataModule):
        @property
        def target_shape(self):
            return (3,)

    with pytest.raises(ValueError, match=r"source samples have shape \(2,\) but target samples \(3,\)"):
        _fit(CFMModule(), Mismatched(steps_per_epoch=2))
