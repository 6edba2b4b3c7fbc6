"""DataModules and samplers on one base class and batch contract (:mod:`lightning_fm.data.base`): the 2-D toys of
the literature (:mod:`.toy_distributions`, :class:`ToyDataModule`) and scikit-learn's 8x8 digits
(:class:`DigitsDataModule`)."""
from lightning_fm.data.base import FlowDataModule
from lightning_fm.data.digits import DigitsDataModule
from lightning_fm.data.toy import ToyDataModule
from lightning_fm.data.toy_distributions import TOY_CLASSES, TOY_DISTRIBUTIONS, sample_toy

__all__ = ["DigitsDataModule", "FlowDataModule", "TOY_CLASSES", "TOY_DISTRIBUTIONS", "ToyDataModule", "sample_toy"]
