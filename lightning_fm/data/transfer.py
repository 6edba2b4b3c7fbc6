"""``TransferDataModule``: unpaired image -> image transfer between two image sets of one image shape, e.g.
``DigitsImages(classes=[2])`` -> ``DigitsImages(classes=[3])`` (the small analogue of colored-MNIST 2 -> 3) or
``FolderImages(A)`` -> ``FolderImages(B)``.

* train: ``{"x0", "x1", "y1", "y0"}`` (labels where the sets have classes): one pass over the target's training
  split an epoch; ``x0`` source training images in an independent epoch-seeded order (whole permutations, cycled
  when the source split is the smaller one), unpaired: the model's coupling pairs them;
* validation / test: ``{"x0", "x1", "x1_ref", "y1", "y0"}``: held-out source images ``x0``, as many held-out
  targets ``x1`` (both sides truncated to the same count, at most ``n_val``) and ``x1_ref``, as many training
  targets (the noise floor of any distance); predict: ``{"x0"}``, at most ``n_predict`` held-out sources.

Two :class:`~lightning_fm.data.image_sets.DigitsImages` with the same ``val_fraction`` and ``seed`` share one
stratified split of the 1797 digits: their training and evaluation images are disjoint, and a classifier trained on
the digits' training split has seen none of the evaluation images.
"""

from __future__ import annotations

from typing import Any

from lightning_fm.data.image_sets import ImageSet
from lightning_fm.data.images import ImageDataModule


class TransferDataModule(ImageDataModule):
    """``source`` images (t = 0) -> ``target`` images (t = 1), unpaired.

    Args:
        source, target: image sets with the same image shape (``{class_path: lightning_fm.data.FolderImages,
            init_args: {path: ...}}``).
        hflip, n_val, n_predict, **kwargs: as :class:`~lightning_fm.data.images.ImageDataModule`.
    """

    def __init__(
        self,
        source: ImageSet,
        target: ImageSet,
        hflip: bool = False,
        n_val: int | None = None,
        n_predict: int = 1000,
        **kwargs: Any,
    ) -> None:
        if source is None:
            raise ValueError(
                "data.source is required: the image set to transfer from (for noise -> images use ImageDataModule)"
            )
        super().__init__(target=target, source=source, hflip=hflip, n_val=n_val, n_predict=n_predict, **kwargs)
