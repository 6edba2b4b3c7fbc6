"""The data contract of the framework and the machinery every DataModule shares.

Batches (dicts of tensors), what every LightningModule of the framework reads:

* train: ``{"x0", "x1"}``: source and target samples, paired by the model's coupling; with labels ``"y0"``,
  ``"y1"`` (int64 classes; ``y0`` only when the source has classes);
* validation / test: ``{"x0", "x1", "x1_ref"}`` (+ ``"y1"``): fixed source samples, held-out targets, and
  ``x1_ref``, an independent target sample of the same size (the W2 noise floor: what a perfect model scores);
* predict: ``{"x0"}`` (+ ``"y1"``, the classes to generate).

Determinism: training batch ``k`` of epoch ``e`` on DDP rank ``r`` is drawn from a generator seeded by
``(seed, stream, e, r, k)`` (:func:`lightning_fm.utils.seeding.make_generator`); the train, validation, test and
predict streams are disjoint; results do not depend on ``num_workers``. Evaluation sets are fixed, split into
``W * ceil(n / (W * eval_batch_size))`` near-equal batches for W processes and shared out between them (batch ``k``
on rank ``k mod W``): every sample is evaluated exactly once and every process runs the same number of batches
(at least one), whatever the number of processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from lightning_fm.utils.hparams import StoredHyperparameters

# Seed streams (the second key of every derived seed): disjoint for train / validation / test / predict.
TRAIN, VAL, TEST, PREDICT, TRAIN_ORDER, VAL_REF, TEST_REF, SPLIT = range(8)


class EpochIterableDataset(IterableDataset):
    """A dataset of ``len(self)`` batches a pass, batch ``k`` built by ``make_batch(k)`` and knowing the
    ``(epoch, rank, world_size)`` of the pass; with several DataLoader workers, worker ``w`` builds the batches
    ``k = w mod num_workers`` (the DataLoader interleaves them back into order); a pass starts at batch
    ``start``."""

    def __init__(self) -> None:
        self.epoch, self.rank, self.world_size = 0, 0, 1
        self.start = 0  # the first batch of the pass (a resumed epoch skips the batches already trained on)

    def set_epoch_state(self, epoch: int, rank: int, world_size: int) -> None:
        self.epoch, self.rank, self.world_size = int(epoch), int(rank), int(world_size)

    def __len__(self) -> int:
        raise NotImplementedError

    def make_batch(self, k: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for k in range(self.start + worker, len(self), workers):
            yield self.make_batch(k)


Clock = Callable[[bool], tuple[int, int, int]]


class EpochDataLoader(DataLoader):
    """A DataLoader that tells its dataset the current ``(epoch, rank, world_size)`` from ``clock(advance)``
    (``dataset.set_epoch_state``) before each pass, in the main process, so that worker processes started
    afterwards see it too; before its length is read, the rank and world size only (the length is this rank's).

    Resumable (Lightning saves ``state_dict()`` in checkpoints): the state is the pass (the data's epoch) and
    ``position()``, the batches of that pass already trained on; after ``load_state_dict`` that pass starts behind
    them, and the passes after it are counted on from it, so a run resumed from any checkpoint (mid-epoch, at an
    epoch's last batch, at the end of a shorter run) sees exactly the batches of an uninterrupted run. The loader
    counts its passes itself rather than reading the trainer's epoch: a run resumed from a checkpoint written at an
    epoch's last batch first finishes that (empty) epoch and then numbers the next one an epoch too far."""

    def __init__(
        self, dataset: EpochIterableDataset, clock: Clock, position: Callable[[], int] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(dataset, batch_size=None, **kwargs)
        self.clock, self.position = clock, position
        self._resume: dict[str, int] | None = None
        self._pass: int | None = None  # the data's epoch of the current pass (None before the first)

    def state_dict(self) -> dict[str, int]:
        epoch = self._pass if self._pass is not None else self.clock(False)[0]
        return {"epoch": int(epoch), "batches_done": int(self.position()) if self.position else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = {"epoch": int(state["epoch"]), "batches_done": int(state["batches_done"])}

    def __len__(self) -> int:
        _, rank, world_size = self.clock(False)
        self.dataset.set_epoch_state(self.dataset.epoch, rank, world_size)
        return super().__len__()

    def __iter__(self):
        epoch, rank, world_size = self.clock(True)
        resume, self._resume = self._resume, None
        start = 0
        if resume is not None:  # the pass the checkpoint was written in, behind the batches already trained on
            epoch, start = resume["epoch"], resume["batches_done"]
        elif self._pass is not None:
            epoch = self._pass + 1
        self._pass = int(epoch)
        self.dataset.set_epoch_state(epoch, rank, world_size)
        self.dataset.start = start
        return super().__iter__()


class ShardedBatches(EpochIterableDataset):
    """A fixed set of samples (a dict of equally long tensors) in batches of at most ``size`` rows, shared out
    between processes: with W processes the set is split into ``W * ceil(n / (W * size))`` near-equal batches
    (``torch.tensor_split``) and rank r takes batches r, r + W, r + 2W, ... (every rank as many, at least one)."""

    def __init__(self, tensors: dict[str, Tensor], size: int) -> None:
        super().__init__()
        self.tensors, self.size = tensors, int(size)
        self.n = len(next(iter(tensors.values())))

    def _batches_per_rank(self) -> int:
        return max(1, math.ceil(self.n / (self.world_size * self.size)))

    def __len__(self) -> int:
        return self._batches_per_rank()

    def head(self, n: int) -> dict[str, Tensor]:
        """The set's first ``n`` rows (e.g. fixed sources for sample grids)."""
        return {key: value[:n] for key, value in self.tensors.items()}

    def make_batch(self, k: int) -> dict[str, Tensor]:
        if self.n < self.world_size:
            raise ValueError(
                f"an evaluation set of {self.n} samples cannot be shared out between {self.world_size} "
                "processes (every process needs at least one sample)"
            )
        total = self.world_size * self._batches_per_rank()
        index = self.rank + k * self.world_size
        return {key: torch.tensor_split(value, total)[index] for key, value in self.tensors.items()}


def check_positive_int(**values: Any) -> None:
    """Raise a ValueError naming ``data.<key>`` for a value that is not an integer >= 1."""
    for key, value in values.items():
        if isinstance(value, bool) or int(value) != value or value < 1:
            raise ValueError(f"data.{key} must be an integer >= 1, got {value!r}")


class FlowDataModule(StoredHyperparameters, LightningDataModule):
    """Base of every DataModule of the framework: the batch contract of this module's docstring, epoch-seeded
    training loaders, and evaluation in batches.

    A subclass implements :meth:`train_set` (an :class:`EpochIterableDataset` of training batches),
    :meth:`eval_set` (the whole validation or test set as one dict of tensors), :meth:`predict_set` and
    :attr:`data_shape`; it may override ``source_shape``/``target_shape`` (default: ``data_shape``),
    ``source_is_standard_normal`` and ``num_classes``, and load files in ``prepare_data``/``setup``.

    Args:
        batch_size: samples of each side per training step (per process).
        eval_batch_size: samples per validation / test / predict batch.
        seed: base seed (>= 0) of all the data.
        num_workers: DataLoader workers for training.
    """

    def __init__(self, batch_size: int = 256, eval_batch_size: int = 1000, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        check_positive_int(batch_size=batch_size, eval_batch_size=eval_batch_size)
        if seed < 0:
            raise ValueError(f"data.seed must be >= 0, got {seed}")
        if num_workers < 0:
            raise ValueError(f"data.num_workers must be >= 0, got {num_workers}")
        self.save_hyperparameters()  # every constructor's arguments up the class hierarchy
        self.drop_cli_keys()
        self._passes_without_trainer = 0

    # -- what the models read ------------------------------------------------------------------------------------
    @property
    def data_shape(self) -> tuple[int, ...]:
        """The per-sample shape of source and target (what the backbone takes)."""
        raise NotImplementedError

    @property
    def source_shape(self) -> tuple[int, ...]:
        return self.data_shape

    @property
    def target_shape(self) -> tuple[int, ...]:
        return self.data_shape

    @property
    def source_is_standard_normal(self) -> bool:
        """Whether the source is N(0, I) (required by ``LipmanPath``)."""
        return False

    @property
    def num_classes(self) -> int:
        """Classes of the target labels ``y1`` (0: no labels)."""
        return 0

    # -- what a subclass provides --------------------------------------------------------------------------------
    def train_set(self) -> EpochIterableDataset:
        raise NotImplementedError

    def eval_set(self, stage: str) -> dict[str, Tensor]:
        """The whole ``"val"`` or ``"test"`` set: ``{"x0", "x1", "x1_ref"}`` (+ ``"y1"``)."""
        raise NotImplementedError

    def predict_set(self) -> dict[str, Tensor]:
        raise NotImplementedError

    # -- loaders ---------------------------------------------------------------------------------------------------
    def clock(self, advance: bool = True) -> tuple[int, int, int]:
        """``(epoch, rank, world_size)`` from the attached trainer; without a trainer every pass over the training
        data (``advance``) counts as a new epoch on rank 0 of 1."""
        trainer = self.trainer
        if trainer is not None:
            return trainer.current_epoch, trainer.global_rank, trainer.world_size
        epoch = self._passes_without_trainer
        self._passes_without_trainer += int(advance)
        return epoch, 0, 1

    def evaluation_batches(self, stage: str) -> ShardedBatches:
        """The ``"val"`` or ``"test"`` set in batches shared out between processes (default: :meth:`eval_set`)."""
        return ShardedBatches(self.eval_set(stage), self.hparams.eval_batch_size)

    def predict_batches(self) -> ShardedBatches:
        return ShardedBatches(self.predict_set(), self.hparams.eval_batch_size)

    def evaluation_workers(self) -> int:
        """DataLoader workers of the evaluation and predict loaders (0: their batches are slices of tensors)."""
        return 0

    def _evaluation_loader(self, batches: ShardedBatches) -> DataLoader:
        return EpochDataLoader(batches, self.clock, num_workers=self.evaluation_workers())

    def batches_done(self) -> int:
        """Training batches of the current epoch already trained on (the trainer's count; 0 without one)."""
        trainer = self.trainer
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed) if trainer is not None else 0

    def train_dataloader(self) -> DataLoader:
        return EpochDataLoader(self.train_set(), self.clock, self.batches_done, num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.evaluation_batches("val"))

    def test_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.evaluation_batches("test"))

    def predict_dataloader(self) -> DataLoader:
        return self._evaluation_loader(self.predict_batches())
