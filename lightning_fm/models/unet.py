"""ADM U-Net backbone ``net(x, t, y=None)`` for images ``(B, C, H, W)`` (guided-diffusion's ``UNetModel``, the
network of torchcfm's CIFAR-10 and MNIST examples). Module names follow ADM's, so the state dict of an unconditional
torchcfm ``UNetModelWrapper`` loads unchanged into the ``UNet`` of the same settings (with ``time_scale=1``)."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from lightning_fm.models.embeddings import ClassEmbedding, data_shape_tuple, sinusoidal_embedding
from lightning_fm.models.unet_blocks import BlockFactory, EmbedSequential, GroupNorm32, zero_init
from lightning_fm.utils.spec import Buildable

#: where the decoder attends (the ``decoder_attention`` keyword)
DECODER_ATTENTION = ("each_block", "level_end")


class UNet(Buildable, nn.Module):
    """``net(x, t, y=None)``: ADM's U-Net; returns a tensor shaped like ``x`` (a velocity).

    Encoder: a 3x3 conv to ``model_channels * channel_mult[0]``, then per level ``num_res_blocks`` residual blocks
    to ``model_channels * mult`` (each followed by self-attention at the ``attention_resolutions``) and, except at
    the last level, a 2x downsampling. Middle: residual block, attention, residual block. Decoder: the mirror image
    with ``num_res_blocks + 1`` blocks per level, each taking the concatenation of the current map and one encoder
    activation (last in, first out). Out: GroupNorm, SiLU, a zero-initialised 3x3 conv to ``C`` (so the output is 0
    at initialisation). Every block is conditioned on ``emb = MLP(sinusoidal_embedding(time_scale * t))`` with the
    MLP ``Linear(mc, 4mc), SiLU, Linear(4mc, 4mc)``, plus a class embedding when ``num_classes > 0``.

    IFM: :class:`~lightning_fm.models.FieldHead` projects ``forward_with_features``' ``h`` (B, feature_dim), the
    spatial mean of the activations entering the output conv (``feature_dim = model_channels * channel_mult[0]``),
    to ``f_z``. The reference IFM/EFM networks output
    ``C + 1`` channels and average-pool the last one; a linear map of the pooled activations is that function up to
    the 3x3 conv's border terms, and it sees the full-resolution output path, which ``f_z`` needs: it depends on the
    norm of the whole output (``f_z = sqrt(D + 1) / sqrt(1 + |v|^2 / L^2)`` for the field of a path).

    Args:
        data_shape: ``(C, H, W)``; the CLI fills it in from the data (``data.data_shape``) when it is left out.
        model_channels: base width ``mc``; the time embedding has ``4 mc`` channels.
        channel_mult: width multiplier per level; H and W must be divisible by ``2 ** (len(channel_mult) - 1)``.
        num_res_blocks: residual blocks per encoder level (the decoder has one more per level).
        attention_resolutions: feature-map widths in pixels with self-attention (e.g. ``[16]`` = the 16x16 maps
            of a 32x32 image): a list, or torchcfm's string ``"16"`` / ``"16,8"``. A bare number (``4``) is
            refused with a message naming it (the type admits ``int`` so that the CLI hands it over as given
            instead of reading it as the string ``"4"``): list-typed settings take lists.
        decoder_attention: ``"each_block"``: attention after every decoder residual block of those levels (ADM,
            torchcfm); ``"level_end"``: once per decoder level, after its last residual block (score_sde's DDPM
            net, which the IFM and EFM reference code train).
        num_heads: attention heads (used when ``num_head_channels`` is -1).
        num_head_channels: channels per head; if > 0 it overrides ``num_heads``: heads = channels // this (ADM).
        dropout: dropout rate before the last conv of every residual block.
        use_scale_shift_norm: the embedding gives ``(scale, shift)``: ``norm(h) * (1 + scale) + shift`` (FiLM).
        resblock_updown: resample with residual blocks (nearest / average pooling inside) instead of convolutions.
        num_classes: class-conditional with this many classes (0 = unconditional); ``y=None`` is the null class.
        norm_groups: GroupNorm groups; must divide every ``model_channels * mult``.
        time_scale: the network embeds ``time_scale * t``: 1000 maps ``t`` in [0, 1] onto DDPM's step range so the
            highest frequencies resolve ``t`` (torchcfm feeds the raw ``t``: 1); any real ``t`` is valid (IFM's
            ``z / L`` exceeds 1 behind the target plate).
    """

    def __init__(
        self,
        data_shape: list[int] | tuple[int, int, int] | None = None,
        model_channels: int = 128,
        channel_mult: Iterable[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attention_resolutions: int | str | Iterable[int] = (16,),
        decoder_attention: str = "each_block",
        num_heads: int = 4,
        num_head_channels: int = -1,
        dropout: float = 0.0,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        num_classes: int = 0,
        norm_groups: int = 32,
        time_scale: float = 1000.0,
    ) -> None:
        super().__init__()
        self.data_shape = _image_shape(data_shape)
        mults = _positive_ints(channel_mult, "channel_mult")
        for name, value in [
            ("model_channels", model_channels),
            ("num_res_blocks", num_res_blocks),
            ("num_heads", num_heads),
            ("norm_groups", norm_groups),
        ]:
            _positive_int(value, name)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"UNet.dropout must lie in [0, 1), got {dropout!r}")
        if not time_scale > 0:
            raise ValueError(f"UNet.time_scale must be > 0, got {time_scale!r}")
        if decoder_attention not in DECODER_ATTENTION:
            raise ValueError(
                f"UNet.decoder_attention must be one of {list(DECODER_ATTENTION)}, got {decoder_attention!r}"
            )
        _check_sizes(self.data_shape, mults)
        attention_levels = _attention_levels(attention_resolutions, self.data_shape, mults)
        _check_widths(model_channels, mults, attention_levels, norm_groups, num_heads, num_head_channels)
        self.model_channels, self.time_scale = model_channels, float(time_scale)
        emb_dim = 4 * model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_embedding = ClassEmbedding(num_classes, emb_dim)
        make = BlockFactory(
            emb_dim, dropout, norm_groups, use_scale_shift_norm, num_heads, num_head_channels, resblock_updown
        )
        widths = [model_channels * m for m in mults]
        self.input_blocks, skips = _encoder(make, self.data_shape[0], widths, num_res_blocks, attention_levels)
        self.middle_block = EmbedSequential(
            make.res(widths[-1], widths[-1]), make.attn(widths[-1]), make.res(widths[-1], widths[-1])
        )
        self.output_blocks = _decoder(
            make, widths, skips, num_res_blocks, attention_levels, each_block=decoder_attention == "each_block"
        )
        self.feature_dim = widths[0]
        self.out = nn.Sequential(
            GroupNorm32(norm_groups, widths[0]),
            nn.SiLU(),
            zero_init(nn.Conv2d(widths[0], self.data_shape[0], 3, padding=1)),
        )

    @property
    def num_classes(self) -> int:
        return self.class_embedding.num_classes

    def embedding(self, x: Tensor, t: Tensor, y: Tensor | None) -> Tensor:
        """``MLP(sinusoidal_embedding(time_scale * t, mc)) + class_embedding(y)``: ``(B, 4 mc)``."""
        t = torch.as_tensor(t, dtype=torch.promote_types(x.dtype, torch.float32), device=x.device)
        t = sinusoidal_embedding(self.time_scale * t.expand(x.shape[0]), self.model_channels)
        emb = self.time_embed(t.to(next(self.time_embed.parameters()).dtype))
        if self.class_embedding.dim:
            return emb + self.class_embedding(y, x.shape[0], x.device).to(emb.dtype)
        if y is not None:
            raise ValueError("UNet was built unconditional (num_classes=0) but got labels y")
        return emb

    def forward_with_features(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The output shaped like ``x`` and ``h`` ``(B, feature_dim)``: the spatial mean of the activations that
        enter the output conv (after its GroupNorm and SiLU), what a head projects."""
        if x.dim() != 4 or tuple(x.shape[1:]) != self.data_shape:
            raise ValueError(f"UNet was built for data_shape {list(self.data_shape)}, got input {tuple(x.shape)}")
        emb = self.embedding(x, t, y)
        h, skips = x, []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        h = self.out[1](self.out[0](h))
        return self.out[2](h), h.mean(dim=(2, 3))

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        return self.forward_with_features(x, t, y)[0]


def _encoder(
    make: BlockFactory, in_channels: int, widths: list[int], num_res_blocks: int, attention_levels: set[int]
) -> tuple[nn.ModuleList, list[int]]:
    """The input blocks and the widths of their outputs (the skip connections, in order)."""
    ch = widths[0]
    blocks, skips = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))]), [ch]
    for level, width in enumerate(widths):
        for _ in range(num_res_blocks):
            layers = [make.res(ch, width)] + ([make.attn(width)] if level in attention_levels else [])
            blocks.append(EmbedSequential(*layers))
            ch = width
            skips.append(ch)
        if level < len(widths) - 1:
            blocks.append(EmbedSequential(make.down(ch)))
            skips.append(ch)
    return blocks, skips


def _decoder(
    make: BlockFactory,
    widths: list[int],
    skips: list[int],
    num_res_blocks: int,
    attention_levels: set[int],
    each_block: bool = True,
) -> nn.ModuleList:
    """The output blocks: each concatenates one skip (popped from the end) to its input; attention after every
    residual block of an attention level (``each_block``) or after its last one only."""
    skips, ch, blocks = list(skips), widths[-1], nn.ModuleList()
    for level in reversed(range(len(widths))):
        for i in range(num_res_blocks + 1):
            layers: list[nn.Module] = [make.res(ch + skips.pop(), widths[level])]
            ch = widths[level]
            if level in attention_levels and (each_block or i == num_res_blocks):
                layers.append(make.attn(ch))
            if level and i == num_res_blocks:
                layers.append(make.up(ch))
            blocks.append(EmbedSequential(*layers))
    return blocks


def _positive_int(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"UNet.{name} must be an integer >= 1, got {value!r}")
    return value


def _list_of_ints(values: object, name: str) -> tuple:
    """``values`` as a tuple; a scalar (a number, a bool, None, a mapping) where a list is meant is refused,
    naming the setting and the value."""
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable):
        raise ValueError(f"UNet.{name} must be a list of ints, got {values!r}")
    return tuple(values)


def _positive_ints(values: Iterable[int], name: str) -> tuple[int, ...]:
    values = _list_of_ints(values, name)
    if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"UNet.{name} must be a non-empty sequence of integers >= 1, got {values!r}")
    return values


def _image_shape(data_shape: list[int] | tuple[int, ...] | None) -> tuple[int, int, int]:
    shape = data_shape_tuple(data_shape, "UNet")
    if len(shape) != 3:
        raise ValueError(f"UNet.data_shape must be an image shape (C, H, W), got {list(shape)}; use MLP for vectors")
    return shape  # type: ignore[return-value]


def _check_sizes(shape: tuple[int, int, int], mults: tuple[int, ...]) -> None:
    factor = 2 ** (len(mults) - 1)
    for axis, size in (("height", shape[1]), ("width", shape[2])):
        if size % factor:
            levels = 1 + min((s & -s).bit_length() - 1 for s in shape[1:])  # 1 + min 2-adic valuation
            raise ValueError(
                f"UNet.channel_mult={mults} downsamples by {factor}, but the image {axis} {size} of "
                f"data_shape {list(shape)} is not divisible by {factor}; use at most {levels} levels, "
                f"e.g. channel_mult={mults[:levels]}"
            )


def _attention_levels(
    resolutions: int | str | Iterable[int], shape: tuple[int, int, int], mults: tuple[int, ...]
) -> set[int]:
    """The levels whose feature-map width is listed in ``resolutions``."""
    if isinstance(resolutions, str):  # torchcfm's "16,8"
        try:
            resolutions = [int(r) for r in resolutions.split(",") if r.strip()]
        except ValueError:
            raise ValueError(f'UNet.attention_resolutions={resolutions!r} must be integers such as "16,8"') from None
    reachable = {shape[2] // 2**level: level for level in range(len(mults))}
    resolutions = _list_of_ints(resolutions, "attention_resolutions")
    wanted = _positive_ints(resolutions, "attention_resolutions") if resolutions else ()
    missing = [r for r in wanted if r not in reachable]
    if missing:
        raise ValueError(
            f"UNet.attention_resolutions={list(wanted)} lists {missing}, which a {shape[1]}x{shape[2]} "
            f"input with channel_mult={mults} never reaches: its feature maps are {list(reachable)} "
            "pixels wide"
        )
    return {reachable[r] for r in wanted}


def _check_widths(
    model_channels: int,
    mults: tuple[int, ...],
    attention_levels: set[int],
    groups: int,
    num_heads: int,
    head_channels: int,
) -> None:
    widths = [model_channels * m for m in mults]
    bad = sorted({w for w in widths if w % groups})
    if bad:
        raise ValueError(
            f"UNet.norm_groups={groups} must divide every width model_channels * channel_mult = "
            f"{widths}, but not {bad}: choose norm_groups dividing {model_channels}, or other widths"
        )
    attended = sorted({widths[level] for level in attention_levels} | {widths[-1]})  # (+ the middle block)
    if head_channels > 0:
        if any(w % head_channels for w in attended):
            raise ValueError(f"UNet.num_head_channels={head_channels} must divide the attention widths {attended}")
    elif head_channels != -1:
        raise ValueError(f"UNet.num_head_channels must be -1 (use num_heads) or >= 1, got {head_channels}")
    elif any(w % num_heads for w in attended):
        raise ValueError(f"UNet.num_heads={num_heads} must divide the attention widths {attended}")
