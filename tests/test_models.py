"""Backbones: shapes, field head, time embedding, errors."""
import math

import pytest
import torch

from lightning_fm.models import MLP, SinusoidalTimeEmbedding
from lightning_fm.spec import build, to_spec


def test_mlp_keeps_the_data_shape_and_field_head_adds_a_scalar():
    net = MLP([1, 8, 8], width=32, depth=2, time_frequencies=4)
    x, t = torch.randn(5, 1, 8, 8), torch.rand(5)
    assert net(x, t).shape == x.shape
    head = MLP([1, 8, 8], width=32, depth=2, field_head=True)
    f_z, f_x = head(x, t)
    assert f_z.shape == (5,) and f_x.shape == x.shape


def test_mlp_accepts_a_scalar_time_and_rejects_a_wrong_shape():
    net = MLP(2)
    assert net(torch.randn(3, 2), torch.tensor(0.5)).shape == (3, 2)
    with pytest.raises(ValueError, match=r"data_shape \[2\]"):
        net(torch.randn(3, 3), torch.rand(3))
    with pytest.raises(ValueError, match="activation"):
        MLP(2, activation="nope")


def test_time_embedding_values():
    emb = SinusoidalTimeEmbedding(2)
    out = emb(torch.tensor([0.25]))
    expected = [0.25, math.sin(math.pi * 0.25), math.sin(2 * math.pi * 0.25),
                math.cos(math.pi * 0.25), math.cos(2 * math.pi * 0.25)]
    assert emb.dim == 5
    assert torch.allclose(out[0], torch.tensor(expected), atol=1e-6)


def test_backbone_spec_round_trip_rebuilds_the_same_architecture():
    net = MLP([3], width=16, depth=2, field_head=True)
    spec = to_spec(net)
    assert spec == {"class_path": "lightning_fm.models.mlp.MLP",
                    "init_args": {"data_shape": [3], "width": 16, "depth": 2, "activation": "selu",
                                  "time_frequencies": 0, "field_head": True}}
    clone = build(spec)
    clone.load_state_dict(net.state_dict())
    x, t = torch.randn(4, 3), torch.rand(4)
    assert all(torch.equal(a, b) for a, b in zip(net(x, t), clone(x, t)))
