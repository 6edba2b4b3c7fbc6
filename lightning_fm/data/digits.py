"""``DigitsDataModule``: noise -> scikit-learn's 8x8 handwritten digits (1797 real images shipped in the wheel).

Images are ``(1, 8, 8)`` float32 in [-1, 1] (``pixel / 8 - 1``; the raw pixels are 0..16); the source is N(0, I)
noise of the same shape.

* train: ``{"x0": fresh noise, "x1": images, "y1": labels}``, the training split reshuffled every epoch (the same
  permutation on every DDP rank, each rank taking its own slice, padded like ``DistributedSampler`` so that all
  ranks run the same number of steps); the noise is drawn fresh from a generator seeded by
  ``(seed, epoch, rank, step)``.
* validation: ``{"x0", "x1", "x1_ref", "y1"}``: all validation images ``x1`` with fixed noise ``x0``, and
  ``x1_ref``, as many images drawn without replacement from the *training* split: the W2 noise floor is
  W2(validation images, a training subset), the distance between two independent finite samples of the data.
* test: the same validation images (the digits have no third split) with other fixed noise and another training
  subset as ``x1_ref``; predict: ``{"x0"}``, ``n_predict`` noise samples.

Labels keep their digit value (0..9) also when ``classes`` selects a subset.
"""
from __future__ import annotations

import math
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_fm.data.base import (
    PREDICT,
    SPLIT,
    TEST,
    TEST_REF,
    TRAIN,
    TRAIN_ORDER,
    VAL,
    VAL_REF,
    EpochIterableDataset,
    FlowDataModule,
    check_positive_int,
)
from lightning_fm.utils.seeding import derive_seed, make_generator

NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)


def load_digit_images() -> tuple[Tensor, Tensor]:
    """All 1797 digits as ``(N, 1, 8, 8)`` float32 in [-1, 1] and ``(N,)`` int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images / 8.0 - 1.0, dtype=torch.float32).unsqueeze(1)
    return images, torch.as_tensor(digits.target, dtype=torch.int64)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)``, sorted: in each class, ``round(val_fraction * n_c)`` random images (at least one and
    at most ``n_c - 1`` when ``n_c >= 2``) go to validation. Deterministic in ``seed``."""
    rng = np.random.default_rng(derive_seed(seed, SPLIT, 0, 0, 0))
    train, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = int(round(val_fraction * len(members)))
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        val.append(members[:k])
        train.append(members[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


class NoisyImages(EpochIterableDataset):
    """One pass over ``images`` in an epoch-seeded order, each rank its slice, with fresh N(0, I) noise."""

    def __init__(self, images: Tensor, labels: Tensor, batch_size: int, seed: int) -> None:
        super().__init__()
        self.images, self.labels, self.batch_size, self.seed = images, labels, batch_size, seed

    def _per_rank(self) -> int:
        return math.ceil(len(self.images) / self.world_size)

    def __len__(self) -> int:
        return math.ceil(self._per_rank() / self.batch_size)

    def make_batch(self, k: int) -> dict[str, Tensor]:
        n, per_rank = len(self.images), self._per_rank()
        order = torch.randperm(n, generator=make_generator(self.seed, TRAIN_ORDER, self.epoch, 0, 0))
        order = order.repeat(math.ceil(per_rank * self.world_size / n))[: per_rank * self.world_size]
        mine = order[self.rank :: self.world_size]
        index = mine[k * self.batch_size : (k + 1) * self.batch_size]
        x1 = self.images[index]
        x0 = torch.randn(x1.shape, generator=make_generator(self.seed, TRAIN, self.epoch, self.rank, k))
        return {"x0": x0, "x1": x1, "y1": self.labels[index]}


class DigitsDataModule(FlowDataModule):
    """N(0, I) noise (t = 0) -> scikit-learn 8x8 digits (t = 1), images ``(1, 8, 8)`` in [-1, 1].

    Args:
        classes: keep only these digits (values in 0..9); ``None`` keeps all ten.
        val_fraction: fraction of each class held out for validation/test, in (0, 1); the training split must keep
            at least as many images as the validation split (the W2 floor's reference set comes from it).
        n_predict: noise samples in the predict set.
        **kwargs: ``batch_size`` (default 128 here), ``eval_batch_size``, ``seed``, ``num_workers`` of
            :class:`~lightning_fm.data.base.FlowDataModule`.
    """

    def __init__(self, classes: list[int] | None = None, val_fraction: float = 0.2, n_predict: int = 1000,
                 batch_size: int = 128, **kwargs: Any) -> None:
        check_positive_int(n_predict=n_predict)
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"data.val_fraction must lie in (0, 1), got {val_fraction}")
        if classes is not None and not (
            isinstance(classes, (list, tuple))
            and len(classes) > 0
            and all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < NUM_CLASSES
                    for c in classes)
        ):
            raise ValueError(
                f"data.classes must be a non-empty list of digits in 0..9 (or null for all), got {classes!r}"
            )
        super().__init__(batch_size=batch_size, **kwargs)

    @property
    def data_shape(self) -> tuple[int, ...]:
        return IMAGE_SHAPE

    @property
    def source_is_standard_normal(self) -> bool:
        return True

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    def setup(self, stage: str) -> None:
        self.splits  # noqa: B018 - load and check the split before any training step

    @cached_property
    def splits(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``{"train": (images, labels), "val": (images, labels)}``."""
        classes, val_fraction = self.hparams.classes, self.hparams.val_fraction
        images, labels = load_digit_images()
        if classes is not None:
            keep = torch.isin(labels, torch.tensor(sorted({int(c) for c in classes})))
            images, labels = images[keep], labels[keep]
        train, val = stratified_split(labels.numpy(), val_fraction, self.hparams.seed)
        if len(val) < 1 or len(train) < len(val):
            raise ValueError(
                f"data.classes={classes!r} with data.val_fraction={val_fraction} leaves {len(train)} training and "
                f"{len(val)} validation images; validation needs >= 1 image and the W2 floor a reference set of the "
                "same size drawn from the training split, so the training split must be at least as large "
                "(use val_fraction <= 0.5 or more classes)"
            )
        return {"train": (images[train], labels[train]), "val": (images[val], labels[val])}

    def train_set(self) -> NoisyImages:
        images, labels = self.splits["train"]
        return NoisyImages(images, labels, self.hparams.batch_size, self.hparams.seed)

    def eval_set(self, stage: str) -> dict[str, Tensor]:
        noise_stream, ref_stream = (VAL, VAL_REF) if stage == "val" else (TEST, TEST_REF)
        (train_images, _), (images, labels) = self.splits["train"], self.splits["val"]
        seed = self.hparams.seed
        x0 = torch.randn(images.shape, generator=make_generator(seed, noise_stream, 0, 0, 0))
        ref = torch.randperm(len(train_images), generator=make_generator(seed, ref_stream, 0, 0, 0))[: len(images)]
        return {"x0": x0, "x1": images, "x1_ref": train_images[ref], "y1": labels}

    def predict_set(self) -> dict[str, Tensor]:
        shape = (self.hparams.n_predict, *self.data_shape)
        return {"x0": torch.randn(shape, generator=make_generator(self.hparams.seed, PREDICT, 0, 0, 0))}
