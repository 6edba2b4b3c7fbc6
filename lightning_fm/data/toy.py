"""``ToyDataModule``: a flow between two 2-D toy distributions, with fresh (infinite) training data.

train: ``{"x0", "x1", "y1"}`` (+ ``"y0"`` when the source has components), ``batch_size`` source and target samples
drawn fresh every step (infinite data, as in the CFM literature), ``steps_per_epoch`` batches an epoch; validation /
test: ``n_val`` / ``n_test`` fixed source samples, held-out targets (one draw of the target's construction, as the
literature measures) and an independent i.i.d. target sample ``x1_ref`` (the W2 floor: what a perfect model, whose
samples are i.i.d., scores);
predict: ``n_predict`` source samples. Labels are the distributions' components
(:data:`~lightning_fm.data.toy_distributions.TOY_CLASSES`).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lightning_fm.data.base import (
    PREDICT,
    TEST,
    TEST_REF,
    TRAIN,
    VAL,
    VAL_REF,
    EpochIterableDataset,
    FlowDataModule,
    check_positive_int,
)
from lightning_fm.data.toy_distributions import TOY_CLASSES, TOY_DISTRIBUTIONS, sample_toy
from lightning_fm.utils.seeding import make_generator


def with_source_labels(batch: dict[str, Tensor], source: str, y0: Tensor) -> dict[str, Tensor]:
    """Add the source labels ``y0`` where the source distribution has components (not for e.g. ``gaussian``)."""
    if TOY_CLASSES[source] > 1:
        batch["y0"] = y0
    return batch


class FreshToyPairs(EpochIterableDataset):
    """``steps`` batches a pass of fresh source and target samples, drawn with the ``(seed, TRAIN, epoch, rank,
    k)`` generator."""

    def __init__(self, source: str, target: str, batch_size: int, steps: int, seed: int) -> None:
        super().__init__()
        self.source, self.target, self.batch_size, self.steps, self.seed = source, target, batch_size, steps, seed

    def __len__(self) -> int:
        return self.steps

    def make_batch(self, k: int) -> dict[str, Tensor]:
        g = make_generator(self.seed, TRAIN, self.epoch, self.rank, k)
        x0, y0 = sample_toy(self.source, self.batch_size, g)
        x1, y1 = sample_toy(self.target, self.batch_size, g)
        return with_source_labels({"x0": x0, "x1": x1, "y1": y1}, self.source, y0)


class ToyDataModule(FlowDataModule):
    """Flow from the 2-D toy distribution ``source`` (t = 0) to ``target`` (t = 1); names of
    :data:`lightning_fm.data.TOY_DISTRIBUTIONS`.

    Args:
        source, target: toy distribution names (``"gaussian"`` is N(0, I)).
        steps_per_epoch: training batches per epoch (data is infinite: every batch is fresh).
        n_val, n_test, n_predict: samples of the validation / test / predict sets (fixed across epochs).
        **kwargs: ``batch_size``, ``eval_batch_size``, ``seed``, ``num_workers`` of
            :class:`~lightning_fm.data.base.FlowDataModule`.
    """

    def __init__(
        self,
        source: str = "8gaussians",
        target: str = "moons",
        steps_per_epoch: int = 1000,
        n_val: int = 2000,
        n_test: int = 2000,
        n_predict: int = 2000,
        **kwargs: Any,
    ) -> None:
        for key, name in (("source", source), ("target", target)):
            if name not in TOY_DISTRIBUTIONS:
                raise ValueError(f"data.{key}={name!r} is unknown; choose one of {sorted(TOY_DISTRIBUTIONS)}")
        check_positive_int(steps_per_epoch=steps_per_epoch, n_val=n_val, n_test=n_test, n_predict=n_predict)
        super().__init__(**kwargs)

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def source_is_standard_normal(self) -> bool:
        return self.hparams.source == "gaussian"

    @property
    def num_classes(self) -> int:
        return TOY_CLASSES[self.hparams.target]

    def train_set(self) -> FreshToyPairs:
        hp = self.hparams
        return FreshToyPairs(hp.source, hp.target, hp.batch_size, hp.steps_per_epoch, hp.seed)

    def eval_set(self, stage: str) -> dict[str, Tensor]:
        """Source, target and reference from generators of their own: the same target (and floor) whatever the
        source."""
        hp = self.hparams
        n, stream, ref = (hp.n_val, VAL, VAL_REF) if stage == "val" else (hp.n_test, TEST, TEST_REF)
        x0, y0 = sample_toy(hp.source, n, make_generator(hp.seed, stream, 0, 0, 0))
        x1, y1 = sample_toy(hp.target, n, make_generator(hp.seed, stream, 0, 0, 1))
        x1_ref, _ = sample_toy(hp.target, n, make_generator(hp.seed, ref, 0, 0, 0), iid=True)
        return with_source_labels({"x0": x0, "x1": x1, "x1_ref": x1_ref, "y1": y1}, hp.source, y0)

    def predict_set(self) -> dict[str, Tensor]:
        x0, _ = sample_toy(
            self.hparams.source, self.hparams.n_predict, make_generator(self.hparams.seed, PREDICT, 0, 0, 0)
        )
        return {"x0": x0}
