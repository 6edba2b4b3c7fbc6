"""DataModules and samplers on one base class and batch contract (:mod:`lightning_fm.data.base`): the 2-D toys of
the literature (:mod:`.toy_distributions`, :class:`ToyDataModule`), images (:class:`ImageDataModule`: noise ->
images; :class:`TransferDataModule`: unpaired image -> image) on image set components (the embedded 8x8 digits,
MNIST, Fashion-MNIST, CIFAR-10, CelebA 64x64, any ImageFolder tree, synthetic images) and scikit-learn's digits
(:class:`DigitsDataModule`), and a trained model's own pairs for reflow (:class:`TeacherPairsDataModule`)."""

from lightning_fm.data.base import FlowDataModule
from lightning_fm.data.digits import DigitsDataModule
from lightning_fm.data.folder_images import FolderImages
from lightning_fm.data.image_sets import DigitsImages, ImageSet, ImageSplit, SyntheticImages
from lightning_fm.data.images import ImageDataModule
from lightning_fm.data.teacher_pairs import TeacherPairsDataModule
from lightning_fm.data.torchvision_sets import (
    CelebA64Images,
    CIFAR10Images,
    FashionMNISTImages,
    MNISTImages,
)
from lightning_fm.data.toy import ToyDataModule
from lightning_fm.data.toy_distributions import TOY_CLASSES, TOY_DISTRIBUTIONS, sample_toy
from lightning_fm.data.transfer import TransferDataModule

__all__ = [
    "TOY_CLASSES",
    "TOY_DISTRIBUTIONS",
    "CIFAR10Images",
    "CelebA64Images",
    "DigitsDataModule",
    "DigitsImages",
    "FashionMNISTImages",
    "FlowDataModule",
    "FolderImages",
    "ImageDataModule",
    "ImageSet",
    "ImageSplit",
    "MNISTImages",
    "SyntheticImages",
    "TeacherPairsDataModule",
    "ToyDataModule",
    "TransferDataModule",
    "sample_toy",
]
