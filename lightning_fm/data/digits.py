"""``DigitsDataModule``: noise -> scikit-learn's 8x8 handwritten digits (1797 real images shipped in the wheel).

Images are ``(1, 8, 8)`` float32 in [-1, 1] (``pixel / 8 - 1``; the raw pixels are 0..16), or ``(64,)`` with
``flatten=True`` for MLP backbones. The source is N(0, I) noise of the same shape.

* train: ``{"x0": fresh noise, "x1": images, "y1": labels}``, the training split reshuffled every epoch (the same
  permutation on every DDP rank, each rank taking its own slice, padded like ``DistributedSampler`` so that all
  ranks run the same number of steps); the noise is drawn fresh from a generator seeded by
  ``(seed, epoch, rank, step)``.
* validation: one batch ``{"x0", "x1", "x1_ref", "y1"}``: all validation images ``x1`` with fixed noise ``x0``, and
  ``x1_ref``, as many images drawn without replacement from the *training* split: the W2 noise floor is
  W2(validation images, a training subset), the distance between two independent finite samples of the data.
* test: the same validation images (the digits have no third split) with other fixed noise and another training
  subset as ``x1_ref``; predict: ``{"x0"}``, ``n_predict`` noise samples.

Labels keep their digit value (0..9) also when ``classes`` selects a subset.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader

from lightning_fm.data.toy import derive_seed, make_generator
from lightning_fm.data.toy_datamodule import (
    PREDICT, TEST, TEST_REF, TRAIN, TRAIN_ORDER, VAL, VAL_REF, DataModuleClock, EpochDataLoader,
    EpochIterableDataset, FixedBatches,
)

NUM_CLASSES = 10
SPLIT = 100  # seed stream of the train/validation split


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


class _NoisyImages(EpochIterableDataset):
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


class DigitsDataModule(DataModuleClock, LightningDataModule):
    """N(0, I) noise (t = 0) -> scikit-learn 8x8 digits (t = 1).

    Args:
        batch_size: images per training step.
        classes: keep only these digits (values in 0..9); ``None`` keeps all ten.
        val_fraction: fraction of each class held out for validation/test, in (0, 1); the training split must keep
            at least as many images as the validation split (the W2 floor's reference set comes from it).
        seed: base seed (>= 0): the split, the epoch order, all noise.
        num_workers: DataLoader workers for training (the data is in memory; 0 is usually fastest).
        flatten: samples of shape ``(64,)`` instead of ``(1, 8, 8)``.
        n_predict: noise samples in the predict batch.
    """

    def __init__(
        self,
        batch_size: int = 128,
        classes: list[int] | None = None,
        val_fraction: float = 0.2,
        seed: int = 0,
        num_workers: int = 0,
        flatten: bool = False,
        n_predict: int = 1000,
    ) -> None:
        super().__init__()
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"data.batch_size must be an integer >= 1, got {batch_size!r}")
        if int(n_predict) != n_predict or n_predict < 1:
            raise ValueError(f"data.n_predict must be an integer >= 1, got {n_predict!r}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        if seed < 0:
            raise ValueError(f"data.seed must be >= 0, got {seed}")
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
        self.save_hyperparameters()
        # Saved in checkpoints and in the CLI's config.yaml, but not merged into the logger's hparams: the data's
        # ``source``/``target`` names would clash with the model's ``target`` (regression target) key.
        self._log_hyperparams = False

        images, labels = load_digit_images()
        if classes is not None:
            keep = torch.isin(labels, torch.tensor(sorted({int(c) for c in classes})))
            images, labels = images[keep], labels[keep]
        train, val = stratified_split(labels.numpy(), val_fraction, seed)
        if len(val) < 1 or len(train) < len(val):
            raise ValueError(
                f"data.classes={classes!r} with data.val_fraction={val_fraction} leaves {len(train)} training and "
                f"{len(val)} validation images; validation needs >= 1 image and the W2 floor a reference set of the "
                "same size drawn from the training split, so the training split must be at least as large "
                "(use val_fraction <= 0.5 or more classes)"
            )
        if flatten:
            images = images.flatten(1)
        self.train_images, self.train_labels = images[train], labels[train]
        self.val_images, self.val_labels = images[val], labels[val]

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (64,) if self.hparams.flatten else (1, 8, 8)

    @property
    def source_shape(self) -> tuple[int, ...]:
        return self.data_shape

    @property
    def target_shape(self) -> tuple[int, ...]:
        return self.data_shape

    @property
    def source_is_standard_normal(self) -> bool:
        return True

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        dataset = _NoisyImages(self.train_images, self.train_labels, hp.batch_size, hp.seed)
        return EpochDataLoader(dataset, self.clock, batch_size=None, num_workers=hp.num_workers)

    def _eval_batch(self, noise_stream: int, ref_stream: int) -> dict[str, Tensor]:
        seed, n = self.hparams.seed, len(self.val_images)
        x0 = torch.randn(self.val_images.shape, generator=make_generator(seed, noise_stream, 0, 0, 0))
        ref = torch.randperm(len(self.train_images), generator=make_generator(seed, ref_stream, 0, 0, 0))[:n]
        return {"x0": x0, "x1": self.val_images, "x1_ref": self.train_images[ref], "y1": self.val_labels}

    def val_dataloader(self) -> DataLoader:
        return DataLoader(FixedBatches([self._eval_batch(VAL, VAL_REF)]), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(FixedBatches([self._eval_batch(TEST, TEST_REF)]), batch_size=None)

    def predict_dataloader(self) -> DataLoader:
        shape = (self.hparams.n_predict, *self.data_shape)
        x0 = torch.randn(shape, generator=make_generator(self.hparams.seed, PREDICT, 0, 0, 0))
        return DataLoader(FixedBatches([{"x0": x0}]), batch_size=None)
