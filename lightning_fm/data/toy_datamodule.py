"""``ToyDataModule``: a flow between two 2-D toy distributions, with fresh (infinite) training data.

Batches (the contract of the LightningModules):

* train: ``{"x0", "x1", "y0", "y1"}``: ``batch_size`` independent source and target samples, drawn fresh every step
  (infinite data, as in the CFM literature); ``steps_per_epoch`` batches an epoch;
* validation / test: one fixed batch ``{"x0", "x1", "x1_ref", "y1"}`` of ``n_val`` / ``n_test`` samples, where
  ``x1_ref`` is a second, independent target sample of the same size (the W2 noise floor);
* predict: one batch ``{"x0"}`` of ``n_predict`` source samples.

Determinism: batch ``k`` of epoch ``e`` on DDP rank ``r`` is drawn from a generator seeded by
``(seed, stream, e, r, k)``; the train, validation, test and predict streams are disjoint. So the same seed gives
the same data, every epoch and every rank draws different data, and the result does not depend on ``num_workers``.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from lightning.pytorch import LightningDataModule
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from lightning_fm.data.toy import TOY_DISTRIBUTIONS, make_generator, sample_toy

# Seed streams (the second key of every derived seed): disjoint for train / validation / test / predict.
TRAIN, VAL, TEST, PREDICT, TRAIN_ORDER, VAL_REF, TEST_REF = range(7)


class EpochDataLoader(DataLoader):
    """A DataLoader that, in the main process and before each pass, tells its dataset the current
    ``(epoch, rank, world_size)`` from ``clock()`` (``dataset.set_epoch_state``), so that worker processes,
    started afterwards, see it too."""

    def __init__(self, dataset: Dataset, clock: Callable[[], tuple[int, int, int]], **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.clock = clock
        # Our IterableDatasets know their exact length (they shard by worker themselves), so Lightning's generic
        # warning that ``__len__`` "could be inaccurate" with several workers does not apply to them.
        warnings.filterwarnings("ignore", message=r"Your `IterableDataset` has `__len__` defined")

    def __iter__(self):
        self.dataset.set_epoch_state(*self.clock())
        return super().__iter__()


class EpochIterableDataset(IterableDataset):
    """Base of the training sets: ``num_batches`` batches an epoch, batch ``k`` built by ``make_batch(k)``;
    with several DataLoader workers, worker ``w`` builds the batches ``k = w mod num_workers`` (the DataLoader
    interleaves them back into order)."""

    def __init__(self) -> None:
        self.epoch, self.rank, self.world_size = 0, 0, 1

    def set_epoch_state(self, epoch: int, rank: int, world_size: int) -> None:
        self.epoch, self.rank, self.world_size = int(epoch), int(rank), int(world_size)

    def __len__(self) -> int:
        raise NotImplementedError

    def make_batch(self, k: int) -> dict[str, Tensor]:
        raise NotImplementedError

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for k in range(worker, len(self), workers):
            yield self.make_batch(k)


class FixedBatches(Dataset):
    """A map-style dataset of ready-made batches (for ``DataLoader(batch_size=None)``)."""

    def __init__(self, batches: list[dict[str, Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return self.batches[index]


class DataModuleClock:
    """Mixin for DataModules: ``(epoch, rank, world_size)`` from the attached trainer; without a trainer, every pass
    over the training data counts as a new epoch on rank 0 of 1."""

    _passes_without_trainer = 0

    def clock(self) -> tuple[int, int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.current_epoch, trainer.global_rank, trainer.world_size
        epoch, self._passes_without_trainer = self._passes_without_trainer, self._passes_without_trainer + 1
        return epoch, 0, 1


class _FreshToyPairs(EpochIterableDataset):
    def __init__(self, source: str, target: str, batch_size: int, steps: int, seed: int) -> None:
        super().__init__()
        self.source, self.target, self.batch_size, self.steps, self.seed = source, target, batch_size, steps, seed

    def __len__(self) -> int:
        return self.steps

    def make_batch(self, k: int) -> dict[str, Tensor]:
        g = make_generator(self.seed, TRAIN, self.epoch, self.rank, k)
        x0, y0 = sample_toy(self.source, self.batch_size, g)
        x1, y1 = sample_toy(self.target, self.batch_size, g)
        return {"x0": x0, "x1": x1, "y0": y0, "y1": y1}


def _check_positive(**values: int) -> None:
    for key, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"data.{key} must be an integer >= 1, got {value!r}")


class ToyDataModule(DataModuleClock, LightningDataModule):
    """Flow from the 2-D toy distribution ``source`` (t = 0) to ``target`` (t = 1); names of
    :data:`lightning_fm.data.TOY_DISTRIBUTIONS`.

    Args:
        source, target: toy distribution names (``"gaussian"`` is N(0, I)).
        batch_size: samples of each side per training step.
        steps_per_epoch: training batches per epoch (data is infinite: every batch is fresh).
        n_val, n_test, n_predict: size of the single validation / test / predict batch.
        seed: base seed (>= 0) of all the data; validation and test data are fixed across epochs.
    """

    def __init__(
        self,
        source: str = "8gaussians",
        target: str = "moons",
        batch_size: int = 256,
        steps_per_epoch: int = 1000,
        n_val: int = 2000,
        n_test: int = 2000,
        n_predict: int = 2000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for key, name in (("source", source), ("target", target)):
            if name not in TOY_DISTRIBUTIONS:
                raise ValueError(f"data.{key}={name!r} is unknown; choose one of {sorted(TOY_DISTRIBUTIONS)}")
        _check_positive(batch_size=batch_size, steps_per_epoch=steps_per_epoch, n_val=n_val, n_test=n_test,
                        n_predict=n_predict)
        if seed < 0:
            raise ValueError(f"data.seed must be >= 0, got {seed}")
        self.save_hyperparameters()
        # Saved in checkpoints and in the CLI's config.yaml, but not merged into the logger's hparams: the data's
        # ``source``/``target`` names would clash with the model's ``target`` (regression target) key.
        self._log_hyperparams = False

    @property
    def data_shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def source_shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def target_shape(self) -> tuple[int, ...]:
        return (2,)

    @property
    def source_is_standard_normal(self) -> bool:
        return self.hparams.source == "gaussian"

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        dataset = _FreshToyPairs(hp.source, hp.target, hp.batch_size, hp.steps_per_epoch, hp.seed)
        return EpochDataLoader(dataset, self.clock, batch_size=None)

    def _eval_batch(self, n: int, stream: int) -> dict[str, Tensor]:
        g = make_generator(self.hparams.seed, stream, 0, 0, 0)
        x0, _ = sample_toy(self.hparams.source, n, g)
        x1, y1 = sample_toy(self.hparams.target, n, g)
        x1_ref, _ = sample_toy(self.hparams.target, n, g)
        return {"x0": x0, "x1": x1, "x1_ref": x1_ref, "y1": y1}

    def val_dataloader(self) -> DataLoader:
        return DataLoader(FixedBatches([self._eval_batch(self.hparams.n_val, VAL)]), batch_size=None)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(FixedBatches([self._eval_batch(self.hparams.n_test, TEST)]), batch_size=None)

    def predict_dataloader(self) -> DataLoader:
        x0, _ = sample_toy(self.hparams.source, self.hparams.n_predict,
                           make_generator(self.hparams.seed, PREDICT, 0, 0, 0))
        return DataLoader(FixedBatches([{"x0": x0}]), batch_size=None)
