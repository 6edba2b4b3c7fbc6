"""``ImageDataModule``: N(0, I) noise -> images, or unpaired image -> image transfer, on image set components
(:mod:`lightning_fm.data.image_sets`, :mod:`lightning_fm.data.torchvision_sets`).

Images are float32 ``(C, H, W)`` in [-1, 1] in every batch. Batches:

* train: ``{"x0", "x1", "y1"}`` (+ ``"y0"`` with an image source): an epoch is one pass over the target's training
  split in an epoch-seeded order (the same permutation on every DDP rank, each rank taking its own slice, padded like
  ``DistributedSampler`` so that all ranks run the same number of steps). ``x0`` is fresh N(0, I) noise from the
  ``(seed, epoch, rank, step)`` generator, or, for a transfer, source training images in an independent
  epoch-seeded order (cycled through whole permutations when the source split is the smaller one, so that both sides
  are used uniformly). With ``hflip`` each training image is mirrored with probability 1/2, drawn from the step's
  generator (reproducible).
* validation / test: ``{"x0", "x1", "x1_ref", "y1"}`` (+ ``"y0"``), fixed across epochs: ``x1`` the target's
  evaluation images (at most ``n_val``, a fixed subset), ``x0`` fixed noise (other noise for test than for
  validation) or as many held-out source images (both sides truncated to the same count), and ``x1_ref`` as many
  *training* targets drawn without replacement (another draw for test): the W2 / FID noise floor, the distance
  between two independent finite samples of the data.
* predict: ``{"x0"}``: ``n_predict`` fixed noise samples (+ ``"y1"``, the classes to generate, ``i mod K`` for row
  ``i``, where the target has classes), or the held-out source images (at most ``n_predict``).

Labels (``y1``, ``y0``) are given where the set has classes (``num_classes > 0``; not for CelebA). Row ``i`` of the
fixed noise does not depend on the batch or the process that asks for it. Sets decoded per batch (``split.lazy``:
CelebA, big folders) are decoded by ``num_workers`` DataLoader workers, for evaluation too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

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
    ShardedBatches,
    check_positive_int,
)
from lightning_fm.data.image_sets import ImageSet, ImageSplit
from lightning_fm.utils.seeding import make_generator
from lightning_fm.utils.spec import build, describe, to_spec

#: rows of fixed noise drawn per generator (row i comes from generator i // NOISE_CHUNK)
NOISE_CHUNK = 256


class FixedNoise:
    """Rows of one fixed N(0, I) sample of per-row shape ``shape``: row ``i`` is row ``i % NOISE_CHUNK`` of a
    block drawn from the ``(seed, stream, 0, 0, i // NOISE_CHUNK)`` generator (built per batch: no big tensor held)."""

    def __init__(self, shape: tuple[int, ...], seed: int, stream: int) -> None:
        self.shape, self.seed, self.stream = tuple(shape), int(seed), int(stream)

    def get(self, rows: Tensor) -> Tensor:
        out = torch.empty(len(rows), *self.shape)
        blocks = rows // NOISE_CHUNK
        for b in torch.unique(blocks).tolist():
            mine = blocks == b
            block = torch.randn((NOISE_CHUNK, *self.shape), generator=make_generator(self.seed, self.stream, 0, 0, b))
            out[mine] = block[rows[mine] % NOISE_CHUNK]
        return out


def random_hflip(images: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image (last axis) with probability 1/2."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    return torch.where(flip.view(-1, *[1] * (images.ndim - 1)), images.flip(-1), images)


class ImageEpoch(EpochIterableDataset):
    """Training batches of :class:`ImageDataModule` (see the module docstring): one pass over ``target`` an
    epoch, with fresh noise (``source`` None) or source images as ``x0``."""

    def __init__(
        self,
        target: ImageSplit,
        batch_size: int,
        seed: int,
        hflip: bool = False,
        source: ImageSplit | None = None,
        target_labels: bool = True,
        source_labels: bool = True,
    ) -> None:
        super().__init__()
        self.target, self.source, self.batch_size, self.seed, self.hflip = target, source, batch_size, seed, hflip
        self.target_labels, self.source_labels = target_labels, source_labels
        self._orders: tuple[tuple[int, int], tuple[Tensor, Tensor | None]] | None = None

    def _per_rank(self) -> int:
        return math.ceil(len(self.target) / self.world_size)

    def __len__(self) -> int:
        return math.ceil(self._per_rank() / self.batch_size)

    def orders(self) -> tuple[Tensor, Tensor | None]:
        """The epoch's target order and source order, padded to ``world_size * per_rank`` (cached per epoch)."""
        key = (self.epoch, self.world_size)
        if self._orders is None or self._orders[0] != key:
            total, n = self._per_rank() * self.world_size, len(self.target)
            order = torch.randperm(n, generator=make_generator(self.seed, TRAIN_ORDER, self.epoch, 0, 0))
            order = order.repeat(math.ceil(total / n))[:total]
            source = None
            if self.source is not None:
                m, g = len(self.source), make_generator(self.seed, TRAIN_ORDER, self.epoch, 0, 1)
                source = torch.cat([torch.randperm(m, generator=g) for _ in range(math.ceil(total / m))])[:total]
            self._orders = (key, (order, source))
        return self._orders[1]

    def make_batch(self, k: int) -> dict[str, Tensor]:
        order, source_order = self.orders()
        positions = torch.arange(self.rank, len(order), self.world_size)[
            k * self.batch_size : (k + 1) * self.batch_size
        ]
        index = order[positions]
        x1 = self.target.get(index)
        g = make_generator(self.seed, TRAIN, self.epoch, self.rank, k)
        if self.source is None:
            x0 = torch.randn(x1.shape, generator=g)
        else:
            source_index = source_order[positions]
            x0 = self.source.get(source_index)
        if self.hflip:
            x1 = random_hflip(x1, g)
            if self.source is not None:
                x0 = random_hflip(x0, g)
        batch = {"x0": x0, "x1": x1}
        if self.target_labels:
            batch["y1"] = self.target.labels[index]
        if self.source is not None and self.source_labels:
            batch["y0"] = self.source.labels[source_index]
        return batch


class ImageBatches(ShardedBatches):
    """A fixed evaluation set shared out between processes as :class:`ShardedBatches`, whose ``resolve`` entries
    hold row indices that become images only in their batch (``resolve[key](rows)``)."""

    def __init__(self, tensors: dict[str, Tensor], size: int, resolve: dict[str, Callable[[Tensor], Tensor]]) -> None:
        super().__init__(tensors, size)
        self.resolve = resolve

    def make_batch(self, k: int) -> dict[str, Tensor]:
        return self._resolved(super().make_batch(k))

    def whole(self) -> dict[str, Tensor]:
        return self._resolved(dict(self.tensors))

    def head(self, n: int) -> dict[str, Tensor]:
        return self._resolved(super().head(n))

    def _resolved(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {key: self.resolve[key](value) if key in self.resolve else value for key, value in batch.items()}


class ImageDataModule(FlowDataModule):
    """N(0, I) noise (or the ``source`` images, t = 0) -> the ``target`` images (t = 1); batches in the module
    docstring.

    Args:
        target: the image set to generate (e.g. ``{class_path: lightning_fm.data.CIFAR10Images}``).
        source: None for N(0, I) noise of the target's image shape, or an image set of the same image shape for an
            unpaired transfer (see :class:`~lightning_fm.data.transfer.TransferDataModule`).
        hflip: mirror training images at random (p = 1/2; the CIFAR-10 and CelebA recipes); not for digits.
        n_val: at most this many evaluation images (None: all of the evaluation split).
        n_predict: noise samples of the predict set (transfer: at most this many held-out source images).
        **kwargs: ``batch_size``, ``eval_batch_size``, ``seed``, ``num_workers`` of
            :class:`~lightning_fm.data.base.FlowDataModule`.

    :meth:`target_train_images` (and :meth:`source_train_images`) give the training split, e.g. for the nearest
    training image of a generated one.
    """

    #: the config key that the errors of each image set name
    set_keys: ClassVar[dict[str, str]] = {"target": "data.target", "source": "data.source"}

    def __init__(
        self,
        target: ImageSet,
        source: ImageSet | None = None,
        hflip: bool = False,
        n_val: int | None = None,
        n_predict: int = 1000,
        **kwargs: Any,
    ) -> None:
        self.target = self._image_set("target", target)
        self.source = None if source is None else self._image_set("source", source)
        if not isinstance(hflip, bool):
            raise TypeError(f"data.hflip must be true or false, got {hflip!r}")
        if n_val is not None:
            check_positive_int(n_val=n_val)
        check_positive_int(n_predict=n_predict)
        self.hflip, self.n_val, self.n_predict = hflip, n_val, int(n_predict)
        if self.source is not None and tuple(self.source.shape) != tuple(self.target.shape):
            raise ValueError(
                f"data.source {describe(self.source)} has images of shape {tuple(self.source.shape)} but data.target "
                f"{describe(self.target)} has {tuple(self.target.shape)}: an image-to-image flow needs one shape"
            )
        super().__init__(**kwargs)
        self.hparams["target"] = to_spec(self.target)  # stored as specs: the DataModule rebuilds from them
        self.hparams["source"] = to_spec(self.source)

    def _image_set(self, role: str, value: Any) -> ImageSet:
        key = self.set_keys[role]
        built = build(value)
        if not isinstance(built, ImageSet):
            raise TypeError(
                f"{key} must be an image set such as {{class_path: lightning_fm.data.DigitsImages}} "
                f"(a subclass of lightning_fm.data.ImageSet), got {value!r}"
            )
        return built.bind(key)

    # -- what the models read ------------------------------------------------------------------------------------
    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.target.shape)

    @property
    def source_shape(self) -> tuple[int, ...]:
        return self.data_shape if self.source is None else tuple(self.source.shape)

    @property
    def source_is_standard_normal(self) -> bool:
        return self.source is None

    @property
    def num_classes(self) -> int:
        return self.target.num_classes

    def target_train_images(self) -> ImageSplit:
        """The target's training split (an :class:`~lightning_fm.data.image_sets.ImageSplit`): ``len``,
        ``.labels``, ``.get(index)`` -> float32 images in [-1, 1], ``.chunks(size)`` (all images in order, ``size``
        at a time) and ``.lazy`` (whether ``get`` decodes files, as for CelebA)."""
        return self.target.splits()["train"]

    def source_train_images(self) -> ImageSplit | None:
        """The source's training split (None for a noise source)."""
        return None if self.source is None else self.source.splits()["train"]

    # -- files -----------------------------------------------------------------------------------------------------
    def _sets(self) -> list[ImageSet]:
        return [s for s in (self.source, self.target) if s is not None]

    def prepare_data(self) -> None:
        for image_set in self._sets():
            image_set.prepare()

    def setup(self, stage: str) -> None:
        """Load the splits and check their sizes before any step."""
        for role in ("source", "target"):
            image_set = getattr(self, role)
            for name, split in ({} if image_set is None else image_set.splits()).items():
                if len(split) == 0:
                    raise ValueError(f"{self.set_keys[role]}: the {name} split of {describe(image_set)} is empty")
        n, train = self._count(), len(self.target_train_images())
        if train < n:
            raise ValueError(
                f"{self.set_keys['target']}: {n} evaluation images need as many training images for the W2 floor's "
                f"reference set x1_ref, but the training split has {train}; lower data.n_val"
            )

    # -- batches ---------------------------------------------------------------------------------------------------
    def _has_labels(self) -> tuple[bool, bool]:
        return (self.source is not None and self.source.num_classes > 0), self.target.num_classes > 0

    def _count(self) -> int:
        """Evaluation pairs: the target's evaluation images (and the source's), at most ``n_val``."""
        n = len(self.target.splits()["eval"])
        if self.source is not None:
            n = min(n, len(self.source.splits()["eval"]))
        return n if self.n_val is None else min(n, self.n_val)

    def _subset(self, total: int, n: int, salt: int) -> Tensor:
        """A fixed sorted subset of ``n`` of ``range(total)`` (all of it, in order, when ``n == total``)."""
        if n >= total:
            return torch.arange(total)
        pick = torch.randperm(total, generator=make_generator(self.hparams.seed, SPLIT, 0, 0, salt))[:n]
        return pick.sort().values

    def train_set(self) -> ImageEpoch:
        source_labels, target_labels = self._has_labels()
        return ImageEpoch(
            self.target_train_images(),
            self.hparams.batch_size,
            self.hparams.seed,
            self.hflip,
            self.source_train_images(),
            target_labels=target_labels,
            source_labels=source_labels,
        )

    def _sources(self, n: int, stream: int) -> tuple[dict[str, Tensor], dict[str, Callable[[Tensor], Tensor]]]:
        """``x0`` (+ ``y0``) of an evaluation or predict set of ``n`` rows: fixed noise or held-out sources."""
        if self.source is None:
            return {"x0": torch.arange(n)}, {"x0": FixedNoise(self.data_shape, self.hparams.seed, stream).get}
        held_out = self.source.splits()["eval"]
        index = self._subset(len(held_out), n, salt=0)
        tensors = {"x0": index}
        if self._has_labels()[0]:
            tensors["y0"] = held_out.labels[index]
        return tensors, {"x0": held_out.get}

    def evaluation_batches(self, stage: str) -> ImageBatches:
        """The ``"val"`` or ``"test"`` set, its images built per batch."""
        noise_stream, ref_stream = (VAL, VAL_REF) if stage == "val" else (TEST, TEST_REF)
        held_out, train = self.target.splits()["eval"], self.target_train_images()
        n = self._count()
        tensors, resolve = self._sources(n, noise_stream)
        tensors["x1"] = self._subset(len(held_out), n, salt=1)
        tensors["x1_ref"] = torch.randperm(
            len(train), generator=make_generator(self.hparams.seed, ref_stream, 0, 0, 0)
        )[:n]
        resolve.update(x1=held_out.get, x1_ref=train.get)
        if self._has_labels()[1]:
            tensors["y1"] = held_out.labels[tensors["x1"]]
        return ImageBatches(tensors, self.hparams.eval_batch_size, resolve)

    def predict_batches(self) -> ImageBatches:
        n = self.n_predict
        if self.source is not None:
            n = min(n, len(self.source.splits()["eval"]))
        tensors, resolve = self._sources(n, PREDICT)
        tensors.pop("y0", None)
        if self.source is None and self._has_labels()[1]:  # the classes to generate, balanced
            tensors["y1"] = torch.arange(n) % self.num_classes
        return ImageBatches(tensors, self.hparams.eval_batch_size, resolve)

    def eval_set(self, stage: str) -> dict[str, Tensor]:
        return self.evaluation_batches(stage).whole()

    def predict_set(self) -> dict[str, Tensor]:
        return self.predict_batches().whole()

    def evaluation_workers(self) -> int:
        """``num_workers`` where images are decoded from files per batch (``split.lazy``), else 0."""
        lazy = any(split.lazy for s in self._sets() for split in s.splits().values())
        return self.hparams.num_workers if lazy else 0
