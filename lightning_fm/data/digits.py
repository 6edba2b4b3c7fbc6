"""``DigitsDataModule``: noise -> scikit-learn's 8x8 handwritten digits (1797 real images shipped in the wheel), an
:class:`~lightning_fm.data.images.ImageDataModule` on :class:`~lightning_fm.data.image_sets.DigitsImages`.

Images are ``(1, 8, 8)`` float32 in [-1, 1] (``pixel / 8 - 1``; the raw pixels are 0..16); the source is N(0, I)
noise of the same shape.

* train: ``{"x0": fresh noise, "x1": images, "y1": labels}``, the training split reshuffled every epoch (the same
  permutation on every DDP rank, each rank taking its own slice, padded like ``DistributedSampler`` so that all
  ranks run the same number of steps); the noise is drawn fresh from a generator seeded by
  ``(seed, epoch, rank, step)``. No flips (digits are not mirror-symmetric).
* validation: ``{"x0", "x1", "x1_ref", "y1"}``: all validation images ``x1`` with fixed noise ``x0``, and
  ``x1_ref``, as many images drawn without replacement from the *training* split: the W2 noise floor is
  W2(validation images, a training subset), the distance between two independent finite samples of the data.
* test: the same validation images (the digits have no third split) with other fixed noise and another training
  subset as ``x1_ref``; predict: ``{"x0"}``, ``n_predict`` noise samples.

Labels keep their digit value (0..9) also when ``classes`` selects a subset.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from lightning_fm.data.image_sets import DigitsImages, load_digit_images, stratified_split
from lightning_fm.data.images import ImageDataModule

__all__ = ["DigitsDataModule", "load_digit_images", "stratified_split"]

NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)


class DigitsDataModule(ImageDataModule):
    """N(0, I) noise (t = 0) -> scikit-learn 8x8 digits (t = 1), images ``(1, 8, 8)`` in [-1, 1].

    Args:
        classes: keep only these digits (values in 0..9); ``None`` keeps all ten.
        val_fraction: fraction of each class held out for validation/test, in (0, 1); the training split must keep
            at least as many images as the validation split (the W2 floor's reference set comes from it).
        n_predict: noise samples in the predict set.
        batch_size: samples of each side per training step (per process).
        **kwargs: ``n_val`` of :class:`~lightning_fm.data.images.ImageDataModule`; ``eval_batch_size``, ``seed``
            (also the seed of the split), ``num_workers`` of :class:`~lightning_fm.data.base.FlowDataModule`.
    """

    set_keys: ClassVar[dict[str, str]] = {"target": "data"}  # the digits' arguments are this DataModule's own

    def __init__(
        self,
        classes: list[int] | None = None,
        val_fraction: float = 0.2,
        n_predict: int = 1000,
        batch_size: int = 128,
        **kwargs: Any,
    ) -> None:
        digits = DigitsImages(classes=classes, val_fraction=val_fraction, seed=kwargs.get("seed", 0))
        super().__init__(target=digits, source=None, hflip=False, n_predict=n_predict, batch_size=batch_size, **kwargs)
        for key in ("target", "source", "hflip"):  # derived from the arguments above
            self.hparams.pop(key, None)

    @property
    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"train": (images, labels), "val": (images, labels)}``."""
        splits = self.target.splits()
        return {
            "train": (splits["train"].data, splits["train"].labels),
            "val": (splits["eval"].data, splits["eval"].labels),
        }
