"""Class labels of a class-conditional network: their check, label dropout for classifier-free guidance training,
and the one guidance wrapper that every family samples through (:mod:`lightning_fm.sampling.guidance`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lightning_fm.sampling.guidance import Prediction, both_conditions

#: a network called ``net(x, s, y)``: data, the sampler's variable (``t``, or ``z``), labels (or None)
Network = Callable[[Tensor, Tensor, "Tensor | None"], Prediction]
#: ``combine(conditional, unconditional, w)``: the guided prediction
Combine = Callable[[Prediction, Prediction, float], Prediction]


def check_labels(labels: Tensor | None, num_classes: int, required: bool = False) -> Tensor | None:
    """The labels a backbone with ``num_classes`` classes is given: ``labels`` if it is class-conditional, else
    None. Training (``required``) needs them; sampling without them draws from the null class (index
    ``num_classes``)."""
    if not num_classes:
        return None
    if labels is None:
        if required:
            raise ValueError("model.backbone is class-conditional but the batch has no target labels 'y1'")
        return None
    if bool(((labels < 0) | (labels > num_classes)).any()):
        raise ValueError(
            f"labels y must lie in 0..{num_classes - 1} ({num_classes}: the null class) "
            f"for model.backbone with num_classes={num_classes}"
        )
    return labels


def drop_labels(labels: Tensor | None, p: float, null_class: int) -> Tensor | None:
    """Each label replaced by the null class with probability ``p`` (classifier-free guidance training)."""
    if labels is None or not p:
        return labels
    drop = torch.rand(labels.shape, device=labels.device) < p
    return torch.where(drop, torch.full_like(labels, null_class), labels)


def guidance_scale(guidance: float | None, default: float, labels: Tensor | None, num_classes: int) -> float:
    """The guidance scale of one sampling call: ``guidance``, or ``default`` when None; guidance needs labels
    (without them the null class is sampled, which has nothing to guide)."""
    w = float(default if guidance is None else guidance)
    if w and labels is None:
        if guidance is None:
            return 0.0  # the default scale applies to labelled sampling only
        if not num_classes:
            raise ValueError(f"guidance={w} needs a class-conditional backbone (model.backbone num_classes > 0)")
        raise ValueError(f"guidance={w} needs labels y (classifier-free guidance towards a class)")
    return w


def conditioned(
    net: Network, labels: Tensor | None, w: float, null_class: int, combine: Combine
) -> Callable[[Tensor, Tensor], Prediction]:
    """``f(s, x)``, the sampler's view of ``net`` for the class ``labels``: ``net(x, s, labels)``, or with guidance
    ``w != 0`` ``combine(net(x, s, y), net(x, s, null), w)``, both evaluated in one batched call."""
    if w:

        def guided(s: Tensor, x: Tensor) -> Prediction:
            if labels is None:
                raise ValueError(f"classifier-free guidance (w={w}) needs the labels to condition on")
            return combine(*both_conditions(net, x, s, labels, null_class), w)

        return guided

    def plain(s: Tensor, x: Tensor) -> Prediction:
        return net(x, s, labels)

    return plain
