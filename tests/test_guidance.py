"""Classifier-free guidance and label dropout: the guidance rules against their closed forms, the duality under
guidance (a guided forward-only IFM follows its dual CFM's guided dynamics), the modules' conditioning paths, and
class-conditional superposed targets (the pairs of the point's class)."""

import math

import pytest
import torch

from lightning_fm.couplings import IndependentCoupling
from lightning_fm.data import ToyDataModule
from lightning_fm.duality import field_from_velocity
from lightning_fm.fields import CoulombField, StrongInteractionField
from lightning_fm.models import MLP, FieldHead
from lightning_fm.modules import CFMModule, ForwardOnlyIFMModule, IFMModule, Pairs
from lightning_fm.paths import BrownianBridgePath, LinearPath
from lightning_fm.sampling import FieldLineSampler, ODESampler
from lightning_fm.sampling.guidance import both_conditions, extrapolate, guided_field

F64 = torch.float64


def velocity_net(x, t, y):
    """A class-dependent velocity with a closed form: v = (y + 1) x t + y, null class y = 3."""
    yy = y.to(x.dtype)[:, None]
    return (yy + 1) * x * t[:, None] + yy


def test_extrapolate_and_both_conditions_against_separate_calls():
    x, t, y = torch.randn(5, 2, dtype=F64), torch.rand(5, dtype=F64), torch.tensor([0, 1, 2, 0, 1])
    cond, uncond = both_conditions(velocity_net, x, t, y, null_class=3)
    assert torch.equal(cond, velocity_net(x, t, y)) and torch.equal(uncond, velocity_net(x, t, torch.full_like(y, 3)))
    for w in (0.0, -1.0, 2.5):
        expected = (1 + w) * cond - w * uncond
        assert torch.allclose(extrapolate(cond, uncond, w), expected, atol=1e-12)
    assert torch.equal(extrapolate(cond, uncond, 0.0), cond)
    assert torch.allclose(extrapolate(cond, uncond, -1.0), uncond, atol=1e-12)


def test_guided_forward_only_field_is_the_field_of_the_guided_velocity():
    """Duality under guidance: the slope of the guided field is the guided velocity / L, and its norm sqrt(D+1)."""
    L, w = 3.0, 1.7
    x, t, y = torch.randn(6, 4, dtype=F64), torch.rand(6, dtype=F64), torch.tensor([0, 1, 2, 2, 1, 0])

    def field_net(xx, tt, yy):
        return field_from_velocity(velocity_net(xx, tt, yy), L, scale=True)

    fz, fx = guided_field(*both_conditions(field_net, x, t, y, 3), w, forward_only=True)
    v_guided = extrapolate(*both_conditions(velocity_net, x, t, y, 3), w)
    assert torch.allclose(L * fx / fz[:, None], v_guided, atol=1e-10)
    assert torch.allclose(torch.sqrt(fz**2 + fx.square().sum(1)), torch.full_like(fz, math.sqrt(5)), atol=1e-12)
    # where a prediction has f_z <= 0 there is no velocity: the outputs are extrapolated (the sampler guards that)
    cond, uncond = both_conditions(field_net, x, t, y, 3)
    cond = (cond[0] * torch.tensor([1, -1, 1, 1, 1, 1], dtype=F64), cond[1])
    gz, gx = guided_field(cond, uncond, w, forward_only=True)
    assert torch.allclose(gz[1], (1 + w) * cond[0][1] - w * uncond[0][1])
    assert torch.allclose(gx[1], (1 + w) * cond[1][1] - w * uncond[1][1])
    # not forward-only: always the outputs
    ez, ex = guided_field(cond, uncond, w, forward_only=False)
    assert torch.allclose(ez, extrapolate(cond[0], uncond[0], w)) and torch.allclose(
        ex, extrapolate(cond[1], uncond[1], w)
    )


def _conditional_cfm(**kwargs):
    torch.manual_seed(0)
    return CFMModule(
        MLP(2, width=16, depth=2, num_classes=3), LinearPath(0.1), sampler=ODESampler("euler", 8), **kwargs
    )


def test_cfm_guidance_zero_is_conditional_and_minus_one_is_the_null_class():
    module = _conditional_cfm()
    x, y = torch.randn(10, 2), torch.arange(10) % 3
    conditional = module.sample(x, y).x
    assert torch.allclose(module.sample(x, y, guidance=0.0).x, conditional)
    assert torch.allclose(module.sample(x, y, guidance=-1.0).x, module.sample(x).x, atol=1e-5)
    guided = module.sample(x, y, guidance=2.0)
    assert not torch.allclose(guided.x, conditional, atol=1e-3)
    # by hand: Euler with the extrapolated velocity, one batched call per step (NFE counts calls)
    xs, null = x.clone(), torch.full_like(y, 3)
    for k in range(8):
        t = torch.full((10,), k / 8)
        xs = xs + (3 * module.velocity(xs, t, y) - 2 * module.velocity(xs, t, null)) / 8
    assert torch.allclose(guided.x, xs, atol=1e-5) and guided.nfe == 8


def test_default_guidance_applies_to_labelled_sampling():
    module = _conditional_cfm(guidance=1.5)
    x, y = torch.randn(6, 2), torch.arange(6) % 3
    assert torch.allclose(module.sample(x, y).x, module.sample(x, y, guidance=1.5).x)
    assert torch.allclose(module.sample(x).x, module.sample(x, guidance=None).x)  # no labels: nothing to guide
    with pytest.raises(ValueError, match="guidance=1.5 needs labels"):
        module.sample(x, guidance=1.5)
    unconditional = CFMModule(MLP(2, width=8, depth=1), LinearPath(0.1))
    with pytest.raises(ValueError, match="guidance=2.0 needs a class-conditional backbone"):
        unconditional.sample(x, y, guidance=2.0)


def test_guided_forward_only_ifm_follows_the_guided_dual_dynamics():
    """Euler in z on the guided field equals Euler in t (dt = dz/L) on the guided velocity L f_x/f_z (C5)."""
    torch.manual_seed(0)
    L, w, steps = 2.0, 1.3, 10
    module = ForwardOnlyIFMModule(
        FieldHead(MLP(2, width=16, depth=2, num_classes=3)),
        LinearPath(0.2),
        L=L,
        sampler=FieldLineSampler("euler", steps),
    )
    x, y = torch.randn(12, 2, dtype=F64), torch.arange(12) % 3
    module = module.double()
    with torch.no_grad():
        module.backbone.f_z.bias.fill_(3.0)  # an untrained head: f_z > 0 (forward-only) on these points
    result = module.sample(x, y, guidance=w)
    xs, null = x.clone(), torch.full_like(y, 3)
    for k in range(steps):
        z = torch.full((12,), k * L / steps, dtype=F64)
        (fzc, fxc), (fzu, fxu) = module.field_output(z, xs, y), module.field_output(z, xs, null)
        assert (fzc > 0).all() and (fzu > 0).all()
        v = L * ((1 + w) * fxc / fzc[:, None] - w * fxu / fzu[:, None])
        xs = xs + v * (1 / steps)
    assert torch.allclose(result.x, xs, atol=1e-10)


def test_label_dropout_replaces_labels_by_the_null_class():
    module = _conditional_cfm(label_dropout=0.3)
    labels = torch.arange(20000) % 3
    torch.manual_seed(1)
    dropped = module.training_labels(labels)
    null = dropped == 3
    assert abs(null.float().mean() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 20000)
    assert torch.equal(dropped[~null], labels[~null])
    assert torch.equal(_conditional_cfm().training_labels(labels), labels)


@pytest.mark.parametrize("key, value", [("label_dropout", 0.2), ("guidance", 1.0)])
def test_conditioning_options_need_a_class_conditional_backbone(key, value):
    module = CFMModule(MLP(2, width=8, depth=1), LinearPath(0.1), **{key: value})
    with pytest.raises(ValueError, match=f"model.{key}={value} needs a class-conditional backbone"):
        module.check_data(ToyDataModule(), (2,))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"label_dropout": 1.0}, "label_dropout must lie in"),
        ({"label_dropout": -0.1}, "label_dropout must lie in"),
        ({"guidance": math.inf}, "guidance must be finite"),
    ],
)
def test_bad_conditioning_options_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CFMModule(**kwargs)


def test_efm_guidance_extrapolates_the_field_outputs():
    torch.manual_seed(0)
    module = IFMModule(
        FieldHead(MLP(2, width=8, depth=1, num_classes=2)),
        CoulombField(L=1.0),
        sampler=FieldLineSampler("euler", 4, continue_outside=False),
    )
    x, y = torch.randn(5, 2), torch.tensor([0, 1, 0, 1, 0])
    calls = []
    original = module.predict

    def spy(xx, z, yy):
        calls.append(yy.clone())
        return original(xx, z, yy)

    module.predict = spy
    module.sample(x, y, guidance=0.5)
    assert len(calls) == 4 and all(torch.equal(c, torch.cat([y, torch.full_like(y, 2)])) for c in calls)


def test_class_conditional_ifm_superposes_the_pairs_of_each_points_class():
    """The target a class-conditional IFM regresses depends on the label: the field of the point's class's pairs
    (so guidance has a conditional field to extrapolate to); a dropped label (the null class) gets all pairs."""
    torch.manual_seed(0)
    L = 2.0
    module = IFMModule(FieldHead(MLP(2, width=8, depth=1, num_classes=3)), StrongInteractionField(L=L, scale=0.5))
    x0, x1 = torch.randn(12, 2, dtype=F64), torch.randn(12, 2, dtype=F64) + 1
    y1 = torch.tensor([0, 1, 2] * 4)
    pairs = Pairs(x0, x1, None, y1, x0, x1, all_y1=y1)
    z, x = torch.rand(6, dtype=F64) * L, torch.randn(6, 2, dtype=F64)
    labels = torch.tensor([0, 1, 2, 3, 3, 1])  # 3: the null class
    tz, tx = module.objective.target(z, x, labels, pairs, module.num_classes)
    for i, c in enumerate(labels.tolist()):
        charges = slice(None) if c == 3 else y1 == c
        ez, ex = module.field.target(z[i : i + 1], x[i : i + 1], x0[charges], x1[charges])
        assert torch.allclose(tz[i], ez[0]) and torch.allclose(tx[i], ex[0])
    unconditional = module.field.target(z, x, x0, x1)
    assert not torch.allclose(tx[:3], unconditional[1][:3])  # the label changes the target


def test_class_conditional_multi_sample_cfm_superposes_within_group_and_class():
    module = CFMModule(
        MLP(2, width=8, depth=1, num_classes=2),
        BrownianBridgePath(0.8),
        IndependentCoupling(),
        velocity_target="multi",
        charges=4,
    )
    x0, x1 = torch.randn(8, 2, dtype=F64), torch.randn(8, 2, dtype=F64) + 2
    y1 = torch.tensor([0, 1, 1, 0, 1, 1, 0, 0])
    pairs = Pairs(x0, x1, None, y1, x0, x1, all_y1=y1)
    t, labels = torch.rand(8, dtype=F64), torch.tensor([0, 1, 2, 0, 2, 1, 0, 0])  # 2: dropped (null)
    torch.manual_seed(1)
    xt, target = module.objective.regression_target(pairs, t, labels, module.num_classes)
    for i in range(8):
        group = torch.zeros(8, dtype=torch.bool)
        group[4 * (i // 4) : 4 * (i // 4) + 4] = True
        charges = group if labels[i] == 2 else group & (y1 == labels[i])
        expected = module.path.posterior(xt[i : i + 1], t[i : i + 1], x0[charges], x1[charges]).velocity[0]
        assert torch.allclose(target[i], expected, atol=1e-12)
