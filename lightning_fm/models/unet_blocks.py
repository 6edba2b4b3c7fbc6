"""Blocks of the ADM U-Net (Dhariwal & Nichol 2021, guided-diffusion's ``UNetModel``): residual blocks conditioned
on an embedding, multi-head self-attention over pixels, and 2x resampling. Module and parameter names follow ADM's
(``in_layers``, ``emb_layers``, ``out_layers``, ``skip_connection``, ``qkv``, ``proj_out``, ``op``, ``conv``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def zero_init(module: ModuleT) -> ModuleT:
    """Zero every parameter of ``module`` (ADM's last conv of each residual branch: each block starts as identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class GroupNorm32(nn.GroupNorm):
    """GroupNorm computed in (at least) float32 and cast back to the input dtype: stable under fp16/bf16 autocast
    and with half-precision weights."""

    def forward(self, x: Tensor) -> Tensor:
        wide = torch.promote_types(x.dtype, torch.float32)
        weight = None if self.weight is None else self.weight.to(wide)
        bias = None if self.bias is None else self.bias.to(wide)
        return F.group_norm(x.to(wide), self.num_groups, weight, bias, self.eps).to(x.dtype)


class EmbedBlock(nn.Module):
    """Marker base class: ``forward(x, emb)`` also takes the (time + class) embedding."""


class EmbedSequential(nn.Sequential):
    """``nn.Sequential`` that hands the embedding to the children that are :class:`EmbedBlock` s."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, EmbedBlock) else layer(x)
        return x


def resampler(resample: str | None) -> nn.Module:
    """Parameter-free 2x resampling inside a residual block: nearest ``"up"``, 2x2 average ``"down"``, or none."""
    if resample == "up":
        return nn.Upsample(scale_factor=2, mode="nearest")
    if resample == "down":
        return nn.AvgPool2d(2)
    return nn.Identity()


class ResBlock(EmbedBlock):
    """``skip(x) + out_layers(in_layers(x) (+) emb_layers(emb))``: ADM's residual block.

    ``in_layers = GroupNorm, SiLU, conv3x3(channels -> out)``; ``emb_layers = SiLU, Linear(emb -> out)`` added per
    channel, or ``Linear(emb -> 2 out)`` giving ``(scale, shift)`` with ``norm(h) * (1 + scale) + shift`` when
    ``scale_shift``; ``out_layers = GroupNorm, SiLU, Dropout, conv3x3(out -> out)`` (zero-initialised); ``skip`` is
    the identity or a 1x1 conv when the width changes. ``resample`` (``"up"``/``"down"``) resamples both branches
    between the first SiLU and the first conv (ADM's ``resblock_updown``).
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        out_channels: int,
        dropout: float,
        groups: int,
        scale_shift: bool = False,
        resample: str | None = None,
    ) -> None:
        super().__init__()
        self.scale_shift = scale_shift
        self.in_layers = nn.Sequential(
            GroupNorm32(groups, channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.resample = resampler(resample)
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels * (2 if scale_shift else 1)))
        self.out_layers = nn.Sequential(
            GroupNorm32(groups, out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        h = self.resample(self.in_layers[1](self.in_layers[0](x)))
        x = self.resample(x)
        h = self.in_layers[2](h)
        e = self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        if self.scale_shift:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
        else:
            h = self.out_layers[0](h + e)
        for layer in self.out_layers[1:]:
            h = layer(h)
        return self.skip_connection(x) + h


class AttentionBlock(nn.Module):
    """``x + proj_out(MHA(qkv(GroupNorm(x))))`` over the ``H*W`` pixels, softmax(q k^T / sqrt(d)) v per head.

    ``qkv`` and ``proj_out`` are 1x1 convolutions over the flattened pixels (``proj_out`` zero-initialised); the
    ``3C`` qkv channels are laid out ``(heads, q|k|v, d)``, ADM's legacy order, so ADM weights load unchanged. They
    are applied as linear maps of the pixels' ``(B, H*W, C)`` rows, the same numbers as the convolutions, so that
    ``q, k, v`` come out with their head dimension contiguous and attention runs without copying them.
    """

    def __init__(self, channels: int, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = GroupNorm32(groups, channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = zero_init(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        tokens = x.flatten(2)  # (B, C, T), T = H*W
        rows = self.norm(tokens).transpose(1, 2)  # (B, T, C)
        qkv = F.linear(rows, self.qkv.weight[:, :, 0], self.qkv.bias)  # (B, T, 3C): the 1x1 conv
        q, k, v = rearrange(qkv, "b t (h three d) -> three b h t d", h=self.heads, three=3)
        a = rearrange(F.scaled_dot_product_attention(q, k, v), "b h t d -> b t (h d)")
        out = F.linear(a, self.proj_out.weight[:, :, 0], self.proj_out.bias)  # (B, T, C)
        return (tokens + out.transpose(1, 2)).reshape(x.shape)


class Downsample(nn.Module):
    """Halve H and W with a learned 3x3 convolution of stride 2 (ADM with ``conv_resample=True``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a learned 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


@dataclass(frozen=True)
class BlockFactory:
    """The settings every block of one U-Net shares; ``res``/``attn``/``down``/``up`` build its blocks."""

    emb_channels: int
    dropout: float
    groups: int
    scale_shift: bool
    num_heads: int
    num_head_channels: int
    resblock_updown: bool

    def heads(self, channels: int) -> int:
        """``channels // num_head_channels`` when ``num_head_channels > 0``, else ``num_heads`` (ADM)."""
        return channels // self.num_head_channels if self.num_head_channels > 0 else self.num_heads

    def res(self, channels: int, out_channels: int, resample: str | None = None) -> ResBlock:
        return ResBlock(
            channels, self.emb_channels, out_channels, self.dropout, self.groups, self.scale_shift, resample
        )

    def attn(self, channels: int) -> AttentionBlock:
        return AttentionBlock(channels, self.heads(channels), self.groups)

    def down(self, channels: int) -> nn.Module:
        return self.res(channels, channels, "down") if self.resblock_updown else Downsample(channels)

    def up(self, channels: int) -> nn.Module:
        return self.res(channels, channels, "up") if self.resblock_updown else Upsample(channels)
