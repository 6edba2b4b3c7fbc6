"""Heads that turn a velocity backbone into an interaction-field model
(docs/concepts/interaction-fields.md#field-models)."""

from __future__ import annotations

from typing import Protocol, cast

from torch import Tensor, nn

from lightning_fm.utils.spec import Buildable


class FeatureBackbone(Protocol):
    """What :class:`FieldHead` needs of its backbone (every backbone of :mod:`lightning_fm.models` has it)."""

    feature_dim: int
    data_shape: tuple[int, ...]

    def forward_with_features(self, x: Tensor, t: Tensor, y: Tensor | None) -> tuple[Tensor, Tensor]: ...


class FieldHead(Buildable, nn.Module):
    """``net(x, t, y=None) -> (f_z (B,), f_x (B, *dims))``: IFM's network output from any velocity backbone.

    ``f_x`` is the backbone's output (shaped like x) and ``f_z = w . h + b`` a learned projection of the backbone's
    feature vector ``h`` (``backbone.forward_with_features``; the MLP's last hidden layer). On the MLP this is
    exactly one extra output unit of its last layer, the reference IFM/EFM networks' ``C + 1``-th output reduced
    to a scalar; ``f_z`` then sees everything ``f_x`` sees.

    Args:
        backbone: a backbone with ``forward_with_features(x, t, y) -> (out, h (B, feature_dim))`` and
            ``feature_dim`` (every backbone of :mod:`lightning_fm.models`).
    """

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        if not (hasattr(backbone, "forward_with_features") and hasattr(backbone, "feature_dim")):
            raise TypeError(
                f"FieldHead needs a backbone with forward_with_features() and feature_dim (e.g. "
                f"lightning_fm.models.MLP), got {type(backbone).__name__}"
            )
        self.backbone = backbone
        self.f_z = nn.Linear(self._features.feature_dim, 1)

    @property
    def _features(self) -> FeatureBackbone:
        """The backbone as what the constructor checked it to be (nn.Module's attribute typing cannot say so)."""
        return cast(FeatureBackbone, self.backbone)

    @property
    def data_shape(self) -> tuple[int, ...]:
        return self._features.data_shape

    @property
    def num_classes(self) -> int:
        return getattr(self.backbone, "num_classes", 0)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
        f_x, h = self._features.forward_with_features(x, t, y)
        return self.f_z(h).squeeze(1), f_x
