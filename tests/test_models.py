"""Backbones: shapes, field head, time and class embeddings, specs, errors."""

import math

import pytest
import torch

from lightning_fm.models import MLP, FieldHead, SinusoidalTimeEmbedding
from lightning_fm.utils.spec import build, to_spec


def test_mlp_keeps_the_data_shape_and_field_head_adds_a_scalar():
    net = MLP([1, 8, 8], width=32, depth=2, time_frequencies=4)
    x, t = torch.randn(5, 1, 8, 8), torch.rand(5)
    assert net(x, t).shape == x.shape
    head = FieldHead(MLP([1, 8, 8], width=32, depth=2))
    f_z, f_x = head(x, t)
    assert f_z.shape == (5,) and f_x.shape == x.shape
    assert head.data_shape == (1, 8, 8) and head.num_classes == 0


def test_field_head_is_one_projection_of_the_last_hidden_layer():
    torch.manual_seed(0)
    net = MLP([3], width=8, depth=2)
    head = FieldHead(net)
    x, t = torch.randn(4, 3), torch.rand(4)
    _, hidden = net.forward_with_features(x, t)
    f_z, f_x = head(x, t)
    assert torch.equal(f_x, net(x, t))  # f_x is the backbone's own output
    assert torch.allclose(f_z, hidden @ head.f_z.weight[0] + head.f_z.bias[0], atol=1e-6)
    with pytest.raises(TypeError, match="forward_with_features"):
        FieldHead(torch.nn.Linear(3, 3))


def test_time_may_lie_outside_the_unit_interval():
    # EFM trains behind the target plate: z / L > 1 is a valid network input
    net = MLP([2], time_frequencies=3)
    out = net(torch.randn(3, 2), torch.tensor([-0.5, 1.7, 3.0]))
    assert torch.isfinite(out).all()
    emb = SinusoidalTimeEmbedding(1)
    assert not torch.allclose(emb(torch.tensor([0.2])), emb(torch.tensor([2.2])))  # the raw t tells them apart


def test_class_conditional_mlp_uses_the_labels_and_a_null_class():
    torch.manual_seed(0)
    net = MLP([2], width=16, depth=2, num_classes=3)
    x, t = torch.randn(4, 2), torch.rand(4)
    a = net(x, t, torch.tensor([0, 1, 2, 0]))
    b = net(x, t, torch.tensor([1, 1, 2, 0]))
    assert not torch.allclose(a[0], b[0]) and torch.equal(a[1:], b[1:])  # only the relabelled row changes
    null = net(x, t)  # y=None: the null class (index 3)
    assert torch.equal(null, net(x, t, torch.full((4,), 3)))
    with pytest.raises(ValueError, match=r"labels y must have shape \(4,\)"):
        net(x, t, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="unconditional"):
        MLP([2])(x, t, torch.zeros(4, dtype=torch.long))


def test_mlp_accepts_a_scalar_time_and_rejects_a_wrong_shape():
    net = MLP(2)
    assert net(torch.randn(3, 2), torch.tensor(0.5)).shape == (3, 2)
    with pytest.raises(ValueError, match=r"data_shape \[2\]"):
        net(torch.randn(3, 3), torch.rand(3))
    with pytest.raises(ValueError, match="activation"):
        MLP(2, activation="nope")
    with pytest.raises(ValueError, match="MLP.data_shape is not set"):
        MLP()


def test_time_embedding_values():
    emb = SinusoidalTimeEmbedding(2)
    out = emb(torch.tensor([0.25]))
    expected = [
        0.25,
        math.sin(math.pi * 0.25),
        math.sin(2 * math.pi * 0.25),
        math.cos(math.pi * 0.25),
        math.cos(2 * math.pi * 0.25),
    ]
    assert emb.dim == 5
    assert torch.allclose(out[0], torch.tensor(expected), atol=1e-6)


def test_backbone_spec_round_trip_rebuilds_the_same_architecture():
    net = FieldHead(MLP([3], width=16, depth=2))
    spec = to_spec(net)
    assert spec == {
        "class_path": "lightning_fm.models.heads.FieldHead",
        "init_args": {
            "backbone": {
                "class_path": "lightning_fm.models.mlp.MLP",
                "init_args": {
                    "data_shape": [3],
                    "width": 16,
                    "depth": 2,
                    "activation": "selu",
                    "time_frequencies": 0,
                    "num_classes": 0,
                },
            }
        },
    }
    clone = build(spec)
    clone.load_state_dict(net.state_dict())
    x, t = torch.randn(4, 3), torch.rand(4)
    assert all(torch.equal(a, b) for a, b in zip(net(x, t), clone(x, t)))
