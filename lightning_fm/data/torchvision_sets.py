"""Image sets read from files through torchvision: MNIST, Fashion-MNIST, CIFAR-10 and CelebA 64x64 (components of
:class:`~lightning_fm.data.images.ImageDataModule`; see :mod:`lightning_fm.data.image_sets` for the split contract;
any ``ImageFolder`` tree: :mod:`lightning_fm.data.folder_images`).

Files: a set downloads only in ``prepare()`` (the DataModule's ``prepare_data``) and only with ``download: true``.
Otherwise it reads the files torchvision reads (archives the user placed next to them, such as MNIST's ``.gz`` or
``cifar-10-python.tar.gz``, are extracted locally, no network involved). A missing file is a ``FileNotFoundError``
that names the data set, the folder and the files to put there; a failed download a ``RuntimeError`` that names the
URLs and the folder.

Memory: MNIST, Fashion-MNIST and CIFAR-10 are held as uint8 (converted per batch); CelebA is decoded per batch
(JPEG, centre crop 140, resize to 64: the DDPM / PFGM / IFM CelebA-64 pipeline) by the DataLoader workers
(``data.num_workers``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_fm.data.image_sets import ImageSet, ImageSplit, LazyImages, TensorImages


class TorchvisionSet(ImageSet):
    """Shared file handling: ``folder`` must hold ``files``; ``archives`` (local files that ``extract`` unpacks
    into place) and ``urls`` are named in the messages; ``_download()`` and ``_read()`` call torchvision."""

    title = ""
    files: tuple[str, ...] = ()  # names in ``folder`` (a trailing "/": a folder)
    urls: tuple[str, ...] = ()
    archive_note = ""  # which local archives may stand in for the files

    root: str
    download: bool

    @property
    def folder(self) -> Path:
        raise NotImplementedError

    def missing(self) -> list[str]:
        return [name for name in self.files if not (self.folder / name).exists()]

    def check(self) -> None:
        if not isinstance(self.download, bool):
            raise TypeError(f"{self.key}.download must be true or false, got {self.download!r}")

    def prepare(self) -> None:
        self.check()
        if self.missing():
            self.extract()  # local archives only: no network (and once, on one process under DDP)
        if not self.download or not self.missing():
            return
        try:
            self._download()
        except Exception as err:  # urllib, gdown and torchvision raise many kinds: re-raised clearly
            raise RuntimeError(
                f"{self.key}: downloading {self.title} into {self.folder.resolve()} failed (from "
                f"{', '.join(self.urls)}): {type(err).__name__}: {err}. Without internet, put {self._listing()} "
                f"there, copied from a machine with internet{self.archive_note}, and set {self.key}.download: false"
            ) from err

    def _listing(self) -> str:
        return ", ".join(self.files)

    def _ensure_files(self) -> None:
        """Extract local archives where the files are missing, then raise if some still are."""
        if self.missing():
            self.extract()
        missing = self.missing()
        if missing:
            which = "" if len(missing) == len(self.files) else f" (missing: {', '.join(missing)})"
            raise FileNotFoundError(
                f"{self.key}: {self.title} not found: {self.folder.resolve()} must hold {self._listing()}{which}. "
                f"Put the files there{self.archive_note}, or set {self.key}.download: true on a machine with "
                "internet (it downloads in prepare_data)"
            )

    def _torchvision(self, make: Any) -> Any:
        """``make()`` (a torchvision constructor), with torchvision's checksum failures named clearly."""
        try:
            return make()
        except RuntimeError as err:
            raise FileNotFoundError(
                f"{self.key}: torchvision rejects the {self.title} files in {self.folder.resolve()} ({err}): a "
                f"partial or corrupted copy? Replace them, or delete them and set {self.key}.download: true"
            ) from err

    def extract(self) -> None:
        """Unpack archives found locally (no network)."""

    def _download(self) -> None:
        raise NotImplementedError

    def load(self) -> dict[str, ImageSplit]:
        self._ensure_files()
        return self._read()

    def _read(self) -> dict[str, ImageSplit]:
        raise NotImplementedError


# -- MNIST and Fashion-MNIST ----------------------------------------------------------------------------------------
class MNISTImages(TorchvisionSet):
    """MNIST through ``torchvision.datasets.MNIST``: ``(1, 28, 28)`` uint8, train = the 60k training images,
    evaluation = the 10k test images, labels 0..9.

    Files: ``<root>/MNIST/raw/{train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
    t10k-labels-idx1-ubyte}`` (or the same names with ``.gz``, extracted on loading).

    Args:
        root: folder holding ``MNIST/raw/``.
        download: download in ``prepare_data`` where the files are missing (needs internet).
        classes: keep only these labels (values in 0..9; labels keep their value); None keeps all.
    """

    title = "MNIST"
    shape = (1, 28, 28)
    num_classes = 10
    dataset = "MNIST"  # the torchvision class and folder
    files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    archive_note = " (or the same names with .gz: extracted on loading)"

    def __init__(self, root: str = "data", download: bool = False, classes: list[int] | None = None) -> None:
        self.root, self.download, self.classes = root, download, classes

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(self._class().mirrors)

    def _class(self) -> Any:
        import torchvision.datasets

        return getattr(torchvision.datasets, self.dataset)

    def check(self) -> None:
        super().check()
        self._check_classes(self.classes, 10, "labels")

    @property
    def folder(self) -> Path:
        return Path(self.root) / self.dataset / "raw"

    def extract(self) -> None:
        from torchvision.datasets.utils import extract_archive

        for name in self.missing():
            if (self.folder / f"{name}.gz").exists():
                extract_archive(str(self.folder / f"{name}.gz"), str(self.folder))

    def _download(self) -> None:
        self._class()(str(self.root), train=True, download=True)

    def _read(self) -> dict[str, ImageSplit]:
        splits = {}
        for name, train in (("train", True), ("eval", False)):
            ds = self._torchvision(lambda train=train: self._class()(str(self.root), train=train))
            splits[name] = TensorImages(ds.data.unsqueeze(1).contiguous(), ds.targets).with_classes(self.classes)
        return splits


class FashionMNISTImages(MNISTImages):
    """Fashion-MNIST through ``torchvision.datasets.FashionMNIST``: as :class:`MNISTImages`, files in
    ``<root>/FashionMNIST/raw/`` (the same four idx names)."""

    title = "Fashion-MNIST"
    dataset = "FashionMNIST"


# -- CIFAR-10 ---------------------------------------------------------------------------------------------------------
class CIFAR10Images(TorchvisionSet):
    """CIFAR-10 through ``torchvision.datasets.CIFAR10``: ``(3, 32, 32)`` uint8, train = the 50k training images,
    evaluation = the 10k test images, labels 0..9.

    Files (checked against torchvision's MD5 sums): ``<root>/cifar-10-batches-py/{data_batch_1, ..., data_batch_5,
    test_batch, batches.meta}``, or the archive ``<root>/cifar-10-python.tar.gz`` (verified and extracted on loading).

    Args:
        root: folder holding ``cifar-10-batches-py/`` (or the archive).
        download: download in ``prepare_data`` where the files are missing (needs internet).
        classes: keep only these labels (values in 0..9; labels keep their value); None keeps all.
    """

    title = "CIFAR-10"
    shape = (3, 32, 32)
    num_classes = 10
    files = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta")
    archive_note = " (or the archive cifar-10-python.tar.gz into its parent folder: extracted on loading)"

    def __init__(self, root: str = "data", download: bool = False, classes: list[int] | None = None) -> None:
        self.root, self.download, self.classes = root, download, classes

    @property
    def urls(self) -> tuple[str, ...]:
        from torchvision.datasets import CIFAR10

        return (CIFAR10.url,)

    def check(self) -> None:
        super().check()
        self._check_classes(self.classes, 10, "labels")

    @property
    def folder(self) -> Path:
        return Path(self.root) / "cifar-10-batches-py"

    def extract(self) -> None:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import check_integrity, extract_archive

        archive = Path(self.root) / CIFAR10.filename
        if archive.exists():
            if not check_integrity(str(archive), CIFAR10.tgz_md5):
                raise FileNotFoundError(f"{self.key}: {archive.resolve()} fails its MD5 check (a partial copy?)")
            extract_archive(str(archive), str(self.root))

    def _download(self) -> None:
        from torchvision.datasets import CIFAR10

        CIFAR10(str(self.root), train=True, download=True)

    def _read(self) -> dict[str, ImageSplit]:
        from torchvision.datasets import CIFAR10

        splits = {}
        for name, train in (("train", True), ("eval", False)):
            ds = self._torchvision(lambda train=train: CIFAR10(str(self.root), train=train))
            images = torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous()  # HWC -> CHW
            splits[name] = TensorImages(images, torch.as_tensor(ds.targets)).with_classes(self.classes)
        return splits


# -- CelebA 64x64 -----------------------------------------------------------------------------------------------------
CELEBA_FILES = (
    "img_align_celeba/",
    "list_eval_partition.txt",
    "identity_CelebA.txt",
    "list_attr_celeba.txt",
    "list_bbox_celeba.txt",
    "list_landmarks_align_celeba.txt",
)
CELEBA_PARTITIONS = {"train": 0, "valid": 1, "test": 2}


class FirstItem:
    """``dataset[i][0]``: the image of a torchvision dataset's ``(image, target)`` items (picklable for workers)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Tensor:
        return self.dataset[i][0]


def celeba64_transform() -> Any:
    """The CelebA-64 preprocessing of DDPM / PFGM / IFM: centre crop 140 (of the aligned 178x218), resize to 64."""
    from torchvision import transforms

    return transforms.Compose([transforms.CenterCrop(140), transforms.Resize(64), transforms.PILToTensor()])


class CelebA64Images(TorchvisionSet):
    """CelebA (aligned) through ``torchvision.datasets.CelebA``, ``(3, 64, 64)`` uint8 after a centre crop of 140
    and a resize to 64; unlabelled (``num_classes`` 0). Official splits: train = 'train' (162,770 images),
    evaluation = ``eval_split``. Decoded per batch (DataLoader workers: ``data.num_workers``), not held in memory.

    Files (the text files checked against torchvision's MD5 sums): ``<root>/celeba/img_align_celeba/`` (the JPEGs;
    or ``img_align_celeba.zip`` in ``<root>/celeba/``, extracted on loading), ``list_eval_partition.txt``,
    ``identity_CelebA.txt``, ``list_attr_celeba.txt``, ``list_bbox_celeba.txt``, ``list_landmarks_align_celeba.txt``.

    Args:
        root: folder holding ``celeba/``.
        download: download in ``prepare_data`` where files are missing (Google Drive, needs internet and ``gdown``).
        eval_split: the official split to evaluate on, ``"valid"`` or ``"test"``.
    """

    title = "CelebA"
    files = CELEBA_FILES
    archive_note = " (or img_align_celeba.zip instead of img_align_celeba/: extracted on loading)"
    urls = (
        (
            "Google Drive through gdown (pip install gdown; Drive quotas often refuse it: the files are also "
            "linked from https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html)"
        ),
    )

    def __init__(self, root: str = "data", download: bool = False, eval_split: str = "valid") -> None:
        self.root, self.download, self.eval_split = root, download, eval_split

    def check(self) -> None:
        super().check()
        if self.eval_split not in ("valid", "test"):
            raise ValueError(f"{self.key}.eval_split must be 'valid' or 'test', got {self.eval_split!r}")

    @property
    def folder(self) -> Path:
        return Path(self.root) / "celeba"

    @property
    def shape(self) -> tuple[int, ...]:
        return (3, 64, 64)

    def extract(self) -> None:
        from torchvision.datasets.utils import extract_archive

        archive = self.folder / "img_align_celeba.zip"
        if "img_align_celeba/" in self.missing() and archive.exists():
            extract_archive(str(archive), str(self.folder))

    def _download(self) -> None:
        from torchvision.datasets import CelebA

        CelebA(str(self.root), split="all", target_type=[], download=True)

    def _read(self) -> dict[str, ImageSplit]:
        from torchvision.datasets import CelebA

        ds = self._torchvision(
            lambda: CelebA(str(self.root), split="all", target_type=[], transform=celeba64_transform())
        )
        with open(self.folder / "list_eval_partition.txt") as f:  # the order of ds.filename
            partition = torch.tensor([int(line.split()[1]) for line in f if line.strip()], dtype=torch.int64)
        images = FirstItem(ds)
        splits = {}
        for name, part in (("train", "train"), ("eval", self.eval_split)):
            index = torch.nonzero(partition == CELEBA_PARTITIONS[part]).flatten()
            splits[name] = LazyImages(images, index, torch.zeros(len(index), dtype=torch.int64))
        return splits
