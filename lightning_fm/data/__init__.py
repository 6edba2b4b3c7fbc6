"""DataModules and samplers. Every DataModule yields train batches ``{"x0", "x1"}`` (+ optional ``"y0"``, ``"y1"``
labels), validation/test batches ``{"x0", "x1", "x1_ref"}`` (+ ``"y1"``) and predict batches ``{"x0"}``, and exposes
``data_shape``, ``source_shape``, ``target_shape`` and ``source_is_standard_normal``."""
from lightning_fm.data.digits import DigitsDataModule
from lightning_fm.data.toy import TOY_DISTRIBUTIONS, sample_toy
from lightning_fm.data.toy_datamodule import ToyDataModule

__all__ = ["DigitsDataModule", "TOY_DISTRIBUTIONS", "ToyDataModule", "sample_toy"]
