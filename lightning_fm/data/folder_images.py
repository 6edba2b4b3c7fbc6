"""``FolderImages``: any ``torchvision.datasets.ImageFolder`` tree ``path/<class>/*.png|jpg|...`` as an image set
of :class:`~lightning_fm.data.images.ImageDataModule` (labels: the class folders), held in memory as uint8 up to
``IN_MEMORY_BYTES`` of images, else decoded per batch by the DataLoader workers (``data.num_workers``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_fm.data.image_sets import ImageSet, ImageSplit, LazyImages, TensorImages, stratified_split

#: FolderImages keeps a folder in memory (uint8) up to this many bytes when ``in_memory`` is None.
IN_MEMORY_BYTES = 2**30

GRAYSCALE_MODES = ("1", "L", "LA", "I", "I;16", "F", "P;L")


class DecodedFolder:
    """Map-style dataset of an ``ImageFolder``'s files: item ``i`` is file ``i`` as uint8 ``(C, H, W)``, converted
    to ``mode`` ("L" or "RGB"), resized (shorter side) and centre-cropped to ``size`` where given."""

    def __init__(
        self, files: list[str], mode: str, size: int | None, shape: tuple[int, ...], key: str = "FolderImages"
    ) -> None:
        self.files, self.mode, self.size, self.shape, self.key = files, mode, size, shape, key

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> Tensor:
        from PIL import Image
        from torchvision.transforms import functional as TF

        with Image.open(self.files[i]) as image:
            image = image.convert(self.mode)
            if self.size is not None:
                image = TF.center_crop(TF.resize(image, self.size), [self.size, self.size])
            x = TF.pil_to_tensor(image)
        if tuple(x.shape) != self.shape:
            raise ValueError(
                f"{self.files[i]} is {tuple(x.shape[1:])} pixels but the folder's first image "
                f"{tuple(self.shape[1:])}; set {self.key}.image_size to resize them all"
            )
        return x


class FolderImages(ImageSet):
    """Any ``torchvision.datasets.ImageFolder`` tree ``path/<class>/*.png|jpg|...``; labels are the class folders
    (sorted by name: 0, 1, ...), the evaluation split a stratified ``val_fraction`` of each class.

    Images are uint8, converted to one channel mode for the whole folder: grayscale (1 channel) when the first file
    is grayscale, else RGB (3 channels); ``channels`` overrides it. Without ``image_size`` every file must have
    the first one's size.

    Args:
        path: root of the tree.
        image_size: resize the shorter side to this and centre-crop a square (None: keep the files' size).
        val_fraction: fraction of each class held out for evaluation, in (0, 1).
        seed: seed of the split.
        channels: 1 (grayscale) or 3 (RGB); None: from the first file.
        in_memory: decode every file once at loading (True) or per batch, in the DataLoader workers (False);
            None: in memory when the uint8 images take at most ``IN_MEMORY_BYTES`` (1 GiB).
    """

    def __init__(
        self,
        path: str,
        image_size: int | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        channels: int | None = None,
        in_memory: bool | None = None,
    ) -> None:
        self.path, self.image_size, self.val_fraction, self.seed = path, image_size, val_fraction, seed
        self.channels, self.in_memory = channels, in_memory

    def check(self) -> None:
        if self.image_size is not None:
            self._check_int("image_size", self.image_size, 1)
        self._check_fraction("val_fraction", self.val_fraction)
        if self.channels not in (None, 1, 3):
            raise ValueError(f"{self.key}.channels must be 1, 3 or null (from the files), got {self.channels!r}")
        if self.in_memory not in (None, True, False):
            raise ValueError(f"{self.key}.in_memory must be true, false or null, got {self.in_memory!r}")

    def _folder(self) -> Any:
        """The ``ImageFolder`` listing (files and classes), read once."""
        if "_listing" not in self.__dict__:
            from torchvision.datasets import ImageFolder

            try:
                self.__dict__["_listing"] = ImageFolder(str(self.path), loader=str)
            except (FileNotFoundError, NotADirectoryError) as err:
                raise FileNotFoundError(
                    f"{self.key}.path: no images found in {Path(self.path).resolve()} ({err}); FolderImages reads an "
                    "ImageFolder tree <path>/<class>/<image>.png|jpg|... (one folder per class, at least one)"
                ) from err
        return self.__dict__["_listing"]

    def _mode(self) -> str:
        if self.channels is not None:
            return "L" if self.channels == 1 else "RGB"
        from PIL import Image

        with Image.open(self._folder().samples[0][0]) as first:
            return "L" if first.mode in GRAYSCALE_MODES else "RGB"

    @property
    def shape(self) -> tuple[int, ...]:
        if "_shape" not in self.__dict__:
            self.check()
            mode = self._mode()
            channels = 1 if mode == "L" else 3
            if self.image_size is not None:
                shape = (channels, int(self.image_size), int(self.image_size))
            else:
                from PIL import Image

                with Image.open(self._folder().samples[0][0]) as first:
                    shape = (channels, first.height, first.width)
            self.__dict__["_shape"] = shape
        return self.__dict__["_shape"]

    @property
    def num_classes(self) -> int:
        return len(self._folder().classes)

    def load(self) -> dict[str, ImageSplit]:
        listing = self._folder()
        files = [f for f, _ in listing.samples]
        labels = torch.tensor([c for _, c in listing.samples], dtype=torch.int64)
        decoded = DecodedFolder(files, self._mode(), self.image_size, self.shape, self.key)
        in_memory = self.in_memory
        if in_memory is None:
            in_memory = len(files) * math.prod(self.shape) <= IN_MEMORY_BYTES
        train, val = stratified_split(labels.numpy(), self.val_fraction, self.seed)
        if in_memory:
            whole: ImageSplit = TensorImages(torch.stack([decoded[i] for i in range(len(files))]), labels)
        else:
            whole = LazyImages(decoded, torch.arange(len(files)), labels)
        return {"train": whole.subset(torch.as_tensor(train)), "eval": whole.subset(torch.as_tensor(val))}
