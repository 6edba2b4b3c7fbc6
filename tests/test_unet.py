"""ADM U-Net backbone: shapes, torchcfm's parameter counts, conditioning, field head, errors, gradients, specs."""

import math

import pytest
import torch

from lightning_fm.models import FieldHead, UNet, sinusoidal_embedding
from lightning_fm.models.unet_blocks import AttentionBlock, ResBlock
from lightning_fm.utils.spec import build, to_spec

# torchcfm's examples/images/cifar10/train_cifar10.py: UNetModelWrapper(dim=(3, 32, 32), num_res_blocks=2,
# num_channels=128, channel_mult=[1, 2, 2, 2], num_heads=4, num_head_channels=64, attention_resolutions="16",
# dropout=0.1) has 35,746,307 parameters (counted on the instantiated reference).
CIFAR = {
    "data_shape": (3, 32, 32),
    "model_channels": 128,
    "channel_mult": (1, 2, 2, 2),
    "num_res_blocks": 2,
    "attention_resolutions": (16,),
    "num_heads": 4,
    "num_head_channels": 64,
    "dropout": 0.1,
}
# torchcfm's MNIST notebooks: UNetModelWrapper(dim=(1, 28, 28), num_channels=32, num_res_blocks=1), whose defaults
# are channel_mult (1, 2, 2), num_heads 1 and attention_resolutions "16" -> downsample rate 28 // 16 = 1, i.e. the
# 28-pixel maps: 1,075,361 parameters; the same with num_res_blocks=2 has 1,560,769.
MNIST = {
    "data_shape": (1, 28, 28),
    "model_channels": 32,
    "channel_mult": (1, 2, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (28,),
    "num_heads": 1,
}
# the small digits net (under 0.5 M parameters): 8 -> 4 -> 2 pixels, attention at 4 and in the middle (2)
TINY = {
    "data_shape": (1, 8, 8),
    "model_channels": 16,
    "channel_mult": (1, 2, 2),
    "num_res_blocks": 1,
    "attention_resolutions": (4,),
    "num_heads": 1,
    "norm_groups": 8,
}


def n_params(net):
    return sum(p.numel() for p in net.parameters())


def randomise_zero_init(net, seed=0):
    """ADM zero-initialises the last conv of every residual branch and the output conv: give them weights."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.parametrize("channels_last", [False, True])
def test_attention_block_is_adms_legacy_qkv_attention(channels_last):
    """Against a transcription of ADM's ``AttentionBlock`` with ``QKVAttentionLegacy`` (guided-diffusion's unet.py,
    torchcfm's copy): ``qkv`` conv1d, heads split off the channels as ``(heads, q|k|v, d)``, ``q, k`` scaled by
    ``d^(-1/4)`` each, ``softmax(q^T k)`` over the keys, ``proj_out`` conv1d, residual."""
    torch.manual_seed(0)
    block = randomise_zero_init(AttentionBlock(64, heads=4, groups=8))
    x = torch.randn(3, 64, 4, 6)
    b, c, *spatial = x.shape
    tokens = x.reshape(b, c, -1)
    qkv = block.qkv(block.norm(tokens)).reshape(b * 4, 3 * c // 4, -1)
    q, k, v = qkv.split(c // 4, dim=1)
    scale = 1 / math.sqrt(math.sqrt(c // 4))
    weight = torch.softmax(torch.einsum("bct,bcs->bts", q * scale, k * scale), dim=-1)
    attended = torch.einsum("bts,bcs->bct", weight, v).reshape(b, c, -1)
    expected = (tokens + block.proj_out(attended)).reshape(b, c, *spatial)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    assert torch.allclose(block(x), expected, atol=1e-5)


def test_parameter_counts_match_torchcfm():
    assert n_params(UNet(**CIFAR)) == 35_746_307
    assert n_params(UNet(**MNIST)) == 1_075_361
    assert n_params(UNet(**{**MNIST, "num_res_blocks": 2})) == 1_560_769
    # the same wrapper with use_scale_shift_norm=True / resblock_updown=True (dropout does not count)
    assert n_params(UNet(**CIFAR, use_scale_shift_norm=True)) == 38_307_203
    assert n_params(UNet(**CIFAR, resblock_updown=True)) == 39_572_227
    # class-conditional: one (4 * mc)-vector per class plus the null class
    assert n_params(UNet(**{**MNIST, "num_classes": 10})) == 1_075_361 + 11 * 128
    assert n_params(UNet(**TINY)) == 280_177  # the small digits net: under 0.5 M


def test_level_end_attention_is_the_ifm_and_efm_reference_ddpm_net():
    """score_sde's DDPM net as the IFM/EFM notebooks build it (nf 128, mult (1, 2, 2, 2), 4 res blocks, attention
    at 16, output C + 1 channels, the last pooled to f_z) has 57,634,180 parameters (instantiated from
    justkolesov/InteractionFieldMatching src/models.py). FieldHead(UNet) replaces that extra 3x3 output channel
    (128 * 9 + 1 = 1,153 parameters) by a linear map of the 128 pooled features (129): 1,024 fewer."""
    ddpm = dict(CIFAR, num_res_blocks=4, num_heads=1, num_head_channels=-1, decoder_attention="level_end")
    assert n_params(FieldHead(UNet(**ddpm))) == 57_634_180 - 1_153 + 129
    assert n_params(UNet(**dict(ddpm, num_res_blocks=2))) == 35_220_100 - 1_153  # 2 res blocks: 35,220,100 there


def test_cifar_net_runs_at_batch_one_and_starts_at_zero():
    torch.manual_seed(0)
    net = UNet(**CIFAR).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out, h = net.forward_with_features(x, torch.tensor([0.3]))
    assert out.shape == x.shape and h.shape == (1, 128) and net.feature_dim == 128
    assert torch.count_nonzero(out) == 0  # zero-initialised output conv
    assert h.abs().sum() > 0


@pytest.mark.parametrize(
    "kwargs",
    [
        TINY,
        dict(TINY, data_shape=(3, 8, 16), attention_resolutions=(8,)),  # non-square: resolutions are map widths
        dict(MNIST, model_channels=16, norm_groups=8),
        {
            "data_shape": (3, 32, 32),
            "model_channels": 16,
            "channel_mult": (1, 2, 2, 2),
            "num_res_blocks": 1,
            "attention_resolutions": "16,8",
            "num_head_channels": 8,
            "norm_groups": 8,
        },
    ],
)
def test_output_is_shaped_like_the_input(kwargs):
    net = randomise_zero_init(UNet(**kwargs))
    x = torch.randn(2, *kwargs["data_shape"])
    out = net(x, torch.rand(2))
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0
    assert net.data_shape == tuple(kwargs["data_shape"])


def test_time_and_class_inputs_change_the_output():
    torch.manual_seed(0)
    net = randomise_zero_init(UNet(**TINY, num_classes=3)).eval()
    x, y = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    a = net(x, torch.full((3,), 0.2), y)
    assert not torch.allclose(a, net(x, torch.full((3,), 0.7), y), atol=1e-4)
    assert torch.allclose(a, net(x, torch.tensor(0.2), y), atol=1e-6)  # a 0-d time is broadcast to the batch
    b = net(x, torch.full((3,), 0.2), torch.tensor([1, 1, 2]))
    assert not torch.allclose(a[0], b[0], atol=1e-4) and torch.allclose(a[1:], b[1:], atol=1e-6)
    t = torch.full((3,), 0.2)
    assert torch.equal(net(x, t), net(x, t, torch.full((3,), 3)))  # y=None is the null class (index 3)
    assert net.num_classes == 3


def test_sinusoidal_embedding_is_adm_formula():
    t = torch.tensor([0.0, 2.5])
    emb = sinusoidal_embedding(t, 6, max_period=100.0)
    freqs = [100.0 ** (-k / 3) for k in range(3)]
    expected = [[math.cos(2.5 * f) for f in freqs] + [math.sin(2.5 * f) for f in freqs]]
    assert emb.shape == (2, 6) and torch.equal(emb[0], torch.tensor([1.0, 1, 1, 0, 0, 0]))
    assert torch.allclose(emb[1], torch.tensor(expected[0]), atol=1e-6)
    assert sinusoidal_embedding(t, 7).shape == (2, 7) and torch.equal(sinusoidal_embedding(t, 7)[:, 6], torch.zeros(2))


def test_field_head_projects_the_pooled_last_activations():
    torch.manual_seed(0)
    backbone = randomise_zero_init(UNet(**TINY))
    head = FieldHead(backbone)
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    f_z, f_x = head(x, t)
    out, h = backbone.forward_with_features(x, t)
    assert f_z.shape == (4,) and f_x.shape == x.shape and h.shape == (4, 16)
    assert torch.equal(f_x, out)
    assert torch.allclose(f_z, h @ head.f_z.weight[0] + head.f_z.bias[0], atol=1e-6)
    assert head.data_shape == (1, 8, 8)


def test_scale_shift_norm_and_resblock_updown_variants_run():
    # (their exact parameter counts against torchcfm are in test_parameter_counts_match_torchcfm)
    net = randomise_zero_init(UNet(**TINY, use_scale_shift_norm=True, resblock_updown=True))
    assert net.input_blocks[1][0].emb_layers[1].out_features == 2 * 16  # (scale, shift) per channel
    assert isinstance(net.input_blocks[2][0], ResBlock) and isinstance(net.output_blocks[1][-1], ResBlock)
    x = torch.randn(2, 1, 8, 8)
    out = net(x, torch.rand(2))
    assert out.shape == x.shape and torch.isfinite(out).all() and out.abs().sum() > 0


def test_dropout_is_active_in_train_mode_only():
    torch.manual_seed(0)
    net = randomise_zero_init(UNet(**TINY, dropout=0.5))
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    net.train()
    assert not torch.allclose(net(x, t), net(x, t), atol=1e-5)
    net.eval()
    assert torch.equal(net(x, t), net(x, t))


def test_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    head = FieldHead(randomise_zero_init(UNet(**TINY, num_classes=2, use_scale_shift_norm=True)))
    f_z, f_x = head(torch.randn(3, 1, 8, 8), torch.rand(3), torch.tensor([0, 1, 0]))
    (f_x.square().mean() + f_z.square().mean()).backward()
    dead = [name for name, p in head.named_parameters() if p.grad is None or not p.grad.any()]
    assert dead == []


def test_zero_init_gives_zero_output_but_a_connected_graph():
    net = UNet(**TINY)
    out = net(torch.randn(2, 1, 8, 8), torch.rand(2))
    assert torch.count_nonzero(out) == 0
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())  # nothing unused (DDP's find_unused_parameters)
    assert net.out[2].weight.grad.abs().sum() > 0


def test_bf16_autocast_is_close_to_float32():
    torch.manual_seed(0)
    net = randomise_zero_init(UNet(**TINY)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x, t).float()
    ref = net(x, t)
    assert torch.isfinite(low).all() and (low - ref).norm() < 0.05 * ref.norm()


EIGHT = {"data_shape": (1, 8, 8), "model_channels": 32, "channel_mult": (1, 2), "attention_resolutions": (4,)}


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"data_shape": (1, 28, 28), "channel_mult": (1, 2, 2, 2)},
            r"channel_mult=\(1, 2, 2, 2\) downsamples by 8.*height 28.*channel_mult=\(1, 2, 2\)",
        ),
        (dict(EIGHT, model_channels=24), r"norm_groups=32 must divide.*\[24, 48\], but not \[24, 48\]"),
        (
            dict(EIGHT, attention_resolutions=(8,), num_head_channels=24),
            r"num_head_channels=24 must divide the attention widths \[32, 64\]",
        ),
        (dict(EIGHT, num_heads=3), r"num_heads=3 must divide the attention widths \[64\]"),
        (dict(EIGHT, num_head_channels=0), r"num_head_channels must be -1 \(use num_heads\) or >= 1, got 0"),
        ({"data_shape": (1, 8, 8), "channel_mult": (1, 2)}, r"attention_resolutions=\[16\] lists \[16\].*\[8, 4\]"),
        ({"data_shape": (8, 8)}, r"data_shape must be an image shape \(C, H, W\), got \[8, 8\]"),
        ({"data_shape": (1, 8, 8), "model_channels": 0}, r"model_channels must be an integer >= 1, got 0"),
        ({"data_shape": (1, 8, 8), "num_res_blocks": 0}, r"num_res_blocks must be an integer >= 1"),
        ({"data_shape": (1, 8, 8), "channel_mult": ()}, r"channel_mult must be a non-empty"),
        ({"data_shape": (1, 8, 8), "dropout": 1.0}, r"dropout must lie in \[0, 1\)"),
        (dict(EIGHT, attention_resolutions="4,x"), r"attention_resolutions='4,x' must be integers"),
        (dict(EIGHT, attention_resolutions=4), r"UNet.attention_resolutions must be a list of ints, got 4$"),
        (dict(EIGHT, channel_mult=2), r"UNet.channel_mult must be a list of ints, got 2$"),
        ({}, r"UNet.data_shape is not set"),
    ],
)
def test_construction_errors_name_the_keyword(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_forward_errors():
    net = UNet(**TINY)
    with pytest.raises(ValueError, match=r"built for data_shape \[1, 8, 8\], got input \(2, 1, 8, 9\)"):
        net(torch.randn(2, 1, 8, 9), torch.rand(2))
    with pytest.raises(ValueError, match="unconditional"):
        net(torch.randn(2, 1, 8, 8), torch.rand(2), torch.zeros(2, dtype=torch.long))


def test_spec_round_trip_rebuilds_the_same_network():
    net = FieldHead(randomise_zero_init(UNet(**{**TINY, "attention_resolutions": "4"}, num_classes=2)))
    spec = to_spec(net)
    init = spec["init_args"]["backbone"]["init_args"]
    assert spec["init_args"]["backbone"]["class_path"] == "lightning_fm.models.unet.UNet"
    assert init["channel_mult"] == [1, 2, 2] and init["attention_resolutions"] == "4" and init["time_scale"] == 1000.0
    clone = build(spec)
    assert n_params(clone) == n_params(net) == 280_177 + 3 * 64 + 17  # + class table, + f_z
    clone.load_state_dict(net.state_dict())
    x, t, y = torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([0, 1])
    assert all(torch.equal(a, b) for a, b in zip(net(x, t, y), clone(x, t, y)))
