"""GPU hot-path options of the modules: the ``channels_last`` memory format for image backbones and their batches,
and an opt-in ``torch.compile`` of the backbone (``model.channels_last``, ``model.compile_backbone``).

``channels_last`` stores 4-D tensors as (N, H, W, C) in memory (the shape stays (N, C, H, W)), the layout tensor
cores and cuDNN's fastest convolutions use; the numbers are those of the default layout up to float rounding.
``compile_backbone`` compiles the backbone in place (``nn.Module.compile``: its state dict keys, hence checkpoints,
are unchanged); True takes ``torch.compile``'s defaults, a dict its keyword arguments (``mode``, ``backend``,
``fullgraph``, ``dynamic``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from lightning_fm.compat import is_compiled

COMPILE_OPTIONS = ("mode", "backend", "fullgraph", "dynamic", "options")


def compile_options(value: bool | dict[str, Any]) -> dict[str, Any] | None:
    """The keyword arguments of ``torch.compile`` that ``model.compile_backbone`` asks for (None: no compile)."""
    if value is False or value is None:
        return None
    if value is True:
        return {}
    if isinstance(value, dict) and set(value) <= set(COMPILE_OPTIONS):
        return dict(value)
    raise ValueError(
        f"model.compile_backbone must be true, false or a dict of torch.compile arguments "
        f"{list(COMPILE_OPTIONS)}, got {value!r}"
    )


def to_channels_last(module: nn.Module) -> nn.Module:
    """Store the module's 4-D parameters and buffers (convolution weights) as channels_last, in place."""
    return module.to(memory_format=torch.channels_last)


def channels_last_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The batch with its 4-D tensors (images) in channels_last; labels and the rest unchanged."""
    return {
        key: value.contiguous(memory_format=torch.channels_last)
        if isinstance(value, Tensor) and value.dim() == 4
        else value
        for key, value in batch.items()
    }


def compile_in_place(backbone: nn.Module, options: dict[str, Any]) -> nn.Module:
    """``backbone.compile(**options)`` once (a second call, e.g. by ``test`` after ``fit``, is a no-op)."""
    if not is_compiled(backbone):
        backbone.compile(**options)
    return backbone
