"""Image sets: small configurable components (stored as ``{class_path, init_args}`` specs) that each give a training
split and an evaluation split of images with int64 labels, for :class:`~lightning_fm.data.images.ImageDataModule`.

A split (:class:`ImageSplit`) hands out float32 images ``(B, C, H, W)`` in [-1, 1] by index (``split.get(index)``);
it stores them as uint8 where the source is uint8 (converted per batch: ``u8 / 127.5 - 1``), as float32 otherwise,
or decodes them from files per call (``split.lazy``: big sets, so that DataLoader workers parallelise decoding).

Here: the base class, the splits, the embedded 8x8 digits (:class:`DigitsImages`) and deterministic smooth random
images for smoke tests and benchmarks (:class:`SyntheticImages`); the sets read from files through torchvision
(MNIST, Fashion-MNIST, CIFAR-10, CelebA 64x64, any ``ImageFolder`` tree) are in
:mod:`lightning_fm.data.torchvision_sets`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_fm.data.base import SPLIT
from lightning_fm.utils.seeding import derive_seed, make_generator
from lightning_fm.utils.spec import Buildable


def to_unit_range(images: Tensor) -> Tensor:
    """float32 images in [-1, 1]: uint8 ``u8 / 127.5 - 1``; float images are taken as already in [-1, 1]."""
    if images.dtype == torch.uint8:
        return images.float().div_(127.5).sub_(1.0)
    return images.float()


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)``, sorted: in each class, ``round(val_fraction * n_c)`` random images (at least one and
    at most ``n_c - 1`` when ``n_c >= 2``) go to validation. Deterministic in ``seed``."""
    rng = np.random.default_rng(derive_seed(seed, SPLIT, 0, 0, 0))
    train, val = [], []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        k = round(val_fraction * len(members))
        if len(members) >= 2:
            k = min(max(k, 1), len(members) - 1)
        val.append(members[:k])
        train.append(members[k:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))


# -- splits ------------------------------------------------------------------------------------------------------------
class ImageSplit:
    """One split of an image set: ``len(split)`` images, ``split.labels`` ``(N,)`` int64 and ``split.get(index)``,
    float32 ``(len(index), C, H, W)`` in [-1, 1]."""

    lazy = False  #: whether ``get`` decodes files (worth DataLoader workers)

    def __init__(self, labels: Tensor) -> None:
        self.labels = labels.to(torch.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def get(self, index: Tensor) -> Tensor:
        raise NotImplementedError

    def subset(self, index: Tensor) -> ImageSplit:
        raise NotImplementedError

    def chunks(self, size: int = 1024) -> Iterator[Tensor]:
        """All images in order, ``size`` at a time (e.g. for a nearest-neighbour search over the whole split)."""
        for start in range(0, len(self), size):
            yield self.get(torch.arange(start, min(start + size, len(self))))

    def with_classes(self, classes: Sequence[int] | None) -> ImageSplit:
        """The images whose label is in ``classes`` (all for None), labels unchanged."""
        if classes is None:
            return self
        keep = torch.isin(self.labels, torch.tensor(sorted({int(c) for c in classes}), dtype=torch.int64))
        return self.subset(torch.nonzero(keep).flatten())


class TensorImages(ImageSplit):
    """A split held in memory: ``data`` ``(N, C, H, W)`` uint8 (0..255) or float32 (already in [-1, 1])."""

    def __init__(self, data: Tensor, labels: Tensor) -> None:
        super().__init__(labels)
        if data.dtype not in (torch.uint8, torch.float32) or data.ndim != 4 or len(data) != len(labels):
            raise ValueError(
                f"images must be (N, C, H, W) uint8 or float32 with N labels, got {tuple(data.shape)} "
                f"{data.dtype} and {len(labels)} labels"
            )
        self.data = data

    def get(self, index: Tensor) -> Tensor:
        return to_unit_range(self.data[index])

    def subset(self, index: Tensor) -> TensorImages:
        return TensorImages(self.data[index], self.labels[index])


class LazyImages(ImageSplit):
    """A split decoded per call: ``dataset[indices[i]]`` is image ``i``, a uint8 ``(C, H, W)`` tensor."""

    lazy = True

    def __init__(self, dataset: Any, indices: Tensor, labels: Tensor) -> None:
        super().__init__(labels)
        self.dataset, self.indices = dataset, indices.to(torch.int64)

    def get(self, index: Tensor) -> Tensor:
        rows = self.indices[index].tolist()
        return to_unit_range(torch.stack([self.dataset[i] for i in rows]))

    def subset(self, index: Tensor) -> LazyImages:
        return LazyImages(self.dataset, self.indices[index], self.labels[index])


# -- the component base ------------------------------------------------------------------------------------------------
class ImageSet(Buildable):
    """Base of the image sets: ``shape`` ``(C, H, W)``, ``num_classes`` (0: unlabelled), ``prepare()`` (downloads,
    where asked; called from ``prepare_data``), ``splits()`` -> ``{"train": ImageSplit, "eval": ImageSplit}`` (loaded
    once, then cached).

    ``key`` is the config key that errors name (``data.target``, ``data.source``; the class name standalone):
    the DataModule that uses a set binds it with :meth:`bind`, which also checks the arguments."""

    def bind(self, key: str) -> ImageSet:
        self.__dict__["_key"] = key
        self.check()
        return self

    @property
    def key(self) -> str:
        return self.__dict__.get("_key", type(self).__name__)

    def check(self) -> None:
        """Raise a ValueError naming ``<key>.<argument>`` for a bad argument (files are checked when loading)."""

    @property
    def shape(self) -> tuple[int, ...]:
        raise NotImplementedError

    @property
    def num_classes(self) -> int:
        return 0

    def prepare(self) -> None:
        """Download or extract what loading needs (only where the set was asked to download)."""

    def splits(self) -> dict[str, ImageSplit]:
        if "_splits" not in self.__dict__:
            self.check()
            self.__dict__["_splits"] = self.load()
        return self.__dict__["_splits"]

    def load(self) -> dict[str, ImageSplit]:
        raise NotImplementedError

    # helpers for the checks of subclasses
    def _check_fraction(self, name: str, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value < 1.0:
            raise ValueError(f"{self.key}.{name} must lie in (0, 1), got {value!r}")

    def _check_classes(self, classes: Any, num_classes: int, what: str = "classes") -> None:
        if classes is not None and not (
            isinstance(classes, (list, tuple))
            and len(classes) > 0
            and all(
                isinstance(c, (int, np.integer)) and not isinstance(c, bool) and 0 <= c < num_classes for c in classes
            )
        ):
            raise ValueError(
                f"{self.key}.classes must be a non-empty list of {what} in 0..{num_classes - 1} (or "
                f"null for all), got {classes!r}"
            )

    def _check_int(self, name: str, value: Any, low: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{self.key}.{name} must be an integer >= {low}, got {value!r}")


# -- embedded digits ---------------------------------------------------------------------------------------------------
def load_digit_images() -> tuple[Tensor, Tensor]:
    """All 1797 digits as ``(N, 1, 8, 8)`` float32 in [-1, 1] and ``(N,)`` int64 labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.as_tensor(digits.images / 8.0 - 1.0, dtype=torch.float32).unsqueeze(1)
    return images, torch.as_tensor(digits.target, dtype=torch.int64)


class DigitsImages(ImageSet):
    """scikit-learn's 8x8 handwritten digits (1797 real images shipped in the wheel): ``(1, 8, 8)`` float32
    ``pixel / 8 - 1`` in [-1, 1] (raw pixels 0..16), labels 0..9.

    The split is one stratified split of all 1797 digits (:func:`stratified_split`, deterministic in ``seed``),
    *then* restricted to ``classes``: two sets with the same ``val_fraction`` and ``seed`` (e.g. classes [2] and [3]
    of a transfer) come from the same split, and a classifier trained on the full training split never saw their
    evaluation images.

    Args:
        classes: keep only these digits (values in 0..9; labels keep their digit value); None keeps all ten.
        val_fraction: fraction of each class held out for evaluation, in (0, 1); the training split must keep at
            least as many images as the evaluation split (the W2 floor's reference set comes from it).
        seed: seed of the split.
    """

    shape = (1, 8, 8)
    num_classes = 10

    def __init__(self, classes: list[int] | None = None, val_fraction: float = 0.2, seed: int = 0) -> None:
        self.classes, self.val_fraction, self.seed = classes, val_fraction, seed

    def check(self) -> None:
        self._check_fraction("val_fraction", self.val_fraction)
        self._check_classes(self.classes, 10, "digits")

    def load(self) -> dict[str, ImageSplit]:
        images, labels = load_digit_images()
        train, val = stratified_split(labels.numpy(), self.val_fraction, self.seed)
        splits = {
            name: TensorImages(images[index], labels[index]).with_classes(self.classes)
            for name, index in (("train", train), ("eval", val))
        }
        n_train, n_val = len(splits["train"]), len(splits["eval"])
        if n_val < 1 or n_train < n_val:
            raise ValueError(
                f"{self.key}.classes={self.classes!r} with {self.key}.val_fraction={self.val_fraction} leaves "
                f"{n_train} training and {n_val} validation images; validation needs >= 1 image and the W2 floor a "
                "reference set of the same size drawn from the training split, so the training split must be at "
                "least as large (use val_fraction <= 0.5 or more classes)"
            )
        return splits


# -- synthetic images --------------------------------------------------------------------------------------------------
def smooth_noise(n: int, shape: Sequence[int], generator: torch.Generator) -> Tensor:
    """``(n, C, H, W)`` low-pass noise of unit scale: N(0, 1) on a 4x coarser grid, upsampled bicubically."""
    c, h, w = shape
    coarse = torch.randn(n, c, max(1, math.ceil(h / 4)), max(1, math.ceil(w / 4)), generator=generator)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False)


class SyntheticImages(ImageSet):
    """Deterministic smooth random images, no files: smoke tests and throughput benchmarks of image configs.

    Image ``i`` is ``tanh(0.7 * own_i + 0.7 * pattern_{y_i})``, two low-pass noise fields (one per image, one per
    class, so that a class-conditional model has something to learn), stored as uint8 like a real data set; labels
    are uniform over ``num_classes`` (all 0 and not given to models when ``num_classes`` is 0).

    Args:
        shape: ``(C, H, W)`` of the images.
        n_train, n_eval: images of the training and the evaluation split.
        num_classes: classes of the labels (0: unlabelled).
        seed: seed of the images and labels.
    """

    def __init__(
        self,
        shape: tuple[int, int, int] = (3, 32, 32),
        n_train: int = 512,
        n_eval: int = 64,
        num_classes: int = 10,
        seed: int = 0,
    ) -> None:
        self._shape, self.n_train, self.n_eval, self._classes, self.seed = shape, n_train, n_eval, num_classes, seed

    def check(self) -> None:
        shape = self._shape
        if not (
            isinstance(shape, (list, tuple))
            and len(shape) == 3
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape)
        ):
            raise ValueError(f"{self.key}.shape must be three integers (C, H, W) >= 1, got {shape!r}")
        self._check_int("n_train", self.n_train, 1)
        self._check_int("n_eval", self.n_eval, 1)
        self._check_int("num_classes", self._classes, 0)
        self._check_int("seed", self.seed, 0)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self._shape)

    @property
    def num_classes(self) -> int:
        return int(self._classes)

    def load(self) -> dict[str, ImageSplit]:
        g = make_generator(self.seed, SPLIT, 0, 0, 1)  # a stream of its own (not the training noise's)
        patterns = smooth_noise(self.num_classes, self.shape, g) if self.num_classes else None
        splits = {}
        for name, n in (("train", self.n_train), ("eval", self.n_eval)):
            labels = (
                torch.randint(0, self.num_classes, (n,), generator=g)
                if self.num_classes
                else torch.zeros(n, dtype=torch.int64)
            )
            data = torch.empty(n, *self.shape, dtype=torch.uint8)
            for start in range(0, n, 4096):  # bounded float memory for large sets
                rows = slice(start, min(start + 4096, n))
                x = 0.7 * smooth_noise(rows.stop - start, self.shape, g)
                if self.num_classes:
                    x = x + 0.7 * patterns[labels[rows]]
                x = torch.tanh(x)
                data[rows] = torch.round((x + 1.0) * 127.5).clamp_(0, 255).to(torch.uint8)
            splits[name] = TensorImages(data, labels)
        return splits
