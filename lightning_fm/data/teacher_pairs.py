"""``TeacherPairsDataModule``: a trained model's own pairs ``(x0, x1 = teacher(x0))`` as training data, for reflow
(rectified flow, docs/guides/reflow.md).

The teacher is a checkpoint of a forward-only model (``CFMModule``, ``ForwardOnlyIFMModule``, an ``IFMModule`` whose
field is forward-only): its sampler is a deterministic map ``x0 -> x1``. A student trained on these fixed pairs with
:class:`~lightning_fm.couplings.KeepPairs` learns a flow between the same marginals whose lines are straighter than
the teacher's, so that a few Euler steps suffice (Liu et al. 2022, docs/concepts/flow-matching.md#couplings).

* train: ``{"x0", "x1"}`` (+ ``"y0"`` where the teacher's source has labels, + ``"y1"`` for a class-conditional
  teacher: the class it was asked to generate), ``n_pairs`` fixed pairs an epoch, in an epoch-seeded order (the same
  permutation on every DDP rank, each rank taking its own slice, padded as ``DistributedSampler`` does);
* validation / test / predict: the teacher's own data module's (rebuilt from what its checkpoint records, as
  ``test --ckpt_path`` does): fresh fixed source points and the real held-out targets, so a student's ``val/*`` is
  measured on exactly the teacher's validation set.

Pairs are made once and cached (:meth:`TeacherPairsDataModule.pairs_path`): the sources are ``n_pairs`` rows of the
teacher data's training stream (its source distribution, and for a class-conditional teacher its labels) taken from
epochs ``SOURCE_EPOCH * (seed + 1) + i``, far beyond any training run's, and carried to ``t = 1`` by the teacher's
sampler in chunks, with a progress bar. A teacher that is itself a reflowed student draws its sources from its own
teacher's data (fresh source points, not the finite set of its pairs): k-rectified flow.
"""

from __future__ import annotations

import hashlib
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_fm.data.base import TRAIN_ORDER, EpochIterableDataset, FlowDataModule, check_positive_int
from lightning_fm.utils.cache import atomic_save, cache_root, settings_digest
from lightning_fm.utils.seeding import make_generator

#: bump when the way pairs are made changes (part of the cache key)
VERSION = "teacher-pairs-v1"
#: the sources of seed ``s`` come from the teacher data's training epochs ``SOURCE_EPOCH * (s + 1) + i``
SOURCE_EPOCH = 10**6
#: the config key of the teacher checkpoint (named in every error)
TEACHER_KEY = "data.teacher"
#: what the teacher's data module answers for this one (methods and image sets the callbacks look up)
DELEGATED = ("target_train_images", "source_train_images", "splits", "target", "source")

_SHA256: dict[tuple[str, int, int], str] = {}  # (resolved path, size, mtime_ns) -> sha256 of the file


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (remembered per path, size and modification time within a process)."""
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        _SHA256[key] = digest.hexdigest()
    return _SHA256[key]


def not_forward_only(owner: str, field: Any) -> str | None:
    """Why a model ``owner`` with the interaction field ``field`` (None: a velocity model, or a field derived from a
    path) has no deterministic flow map ``x0 -> x1`` to reflow, or None where it has one: a field that is not
    forward-only (EFM) has lines that turn back, so that z is not a time
    (docs/concepts/duality.md#forward-only-models)."""
    if field is None or getattr(field, "forward_only", False):
        return None
    return (
        f"holds a {owner} with field {type(field).__name__}, which is not forward-only (its lines turn back: no flow "
        "map x0 -> x1 to reflow); the teacher must be a CFMModule, a ForwardOnlyIFMModule or an IFMModule with a "
        "forward-only field"
    )


def backbone_classes(spec: Any) -> int:
    """The ``num_classes`` of a backbone spec (inside wrappers such as ``FieldHead``); 0: unconditional."""
    while isinstance(spec, dict):
        args = spec.get("init_args") or {}
        if args.get("num_classes"):
            return int(args["num_classes"])
        spec = args.get("backbone")
    return 0


def read_teacher(path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The model spec and the data module spec of the teacher checkpoint ``path``, read without building a network:
    the data module the checkpoint records, else the ``data`` of its run's ``config.yaml`` (as ``test --ckpt_path``
    rebuilds it). Errors name :data:`TEACHER_KEY`: a missing or unreadable file, a checkpoint of another framework or
    naming classes outside the allow-list, one without data, a model that is not forward-only."""
    from lightning_fm.cli.app import run_config  # lazily: the CLI imports this package
    from lightning_fm.modules.loading import CheckpointError, read_checkpoint, stored_data, stored_model
    from lightning_fm.utils.spec import build, only_allowed_classes

    where = f"{TEACHER_KEY}={path!r}"
    checkpoint = read_checkpoint(path, TEACHER_KEY)
    model = stored_model(checkpoint, path, TEACHER_KEY)  # written by this framework, names only allowed classes
    data = stored_data(checkpoint, path, TEACHER_KEY) or (run_config(path) or {}).get("data")
    if not isinstance(data, dict) or "class_path" not in data:
        raise CheckpointError(
            f"{where} records no data module (a checkpoint written without one) and has no run config.yaml "
            "beside its checkpoints/ directory: its source and validation data are unknown"
        )
    field = model["init_args"].get("field")
    with only_allowed_classes(where):
        problem = not_forward_only(model["class_path"].rsplit(".", 1)[-1], None if field is None else build(field))
    if problem:
        raise ValueError(f"{where} {problem}")
    return model, {"class_path": data["class_path"], "init_args": dict(data.get("init_args") or {})}


def source_batches(data: Any, seed: int) -> Iterator[dict[str, Tensor]]:
    """The training batches of the data module ``data`` from epoch ``SOURCE_EPOCH * (seed + 1)`` on, without end
    (one process of one); a :class:`TeacherPairsDataModule`'s are its teacher's data's (fresh sources)."""
    while isinstance(data, TeacherPairsDataModule):
        data = data.teacher_data
    epoch = SOURCE_EPOCH * (int(seed) + 1)
    while True:
        batches = data.train_set()
        batches.set_epoch_state(epoch, 0, 1)
        for k in range(len(batches)):
            yield batches.make_batch(k)
        epoch += 1


class FixedPairs(EpochIterableDataset):
    """Training batches of ``batch_size`` rows of the fixed ``pairs`` (a dict of equally long tensors), the rows in
    the order of a permutation drawn per epoch from the ``(seed, TRAIN_ORDER, epoch, 0, 0)`` generator, padded to
    ``world_size * ceil(n / world_size)`` rows, rank ``r`` taking positions ``r, r + W, ...``."""

    def __init__(self, pairs: dict[str, Tensor], batch_size: int, seed: int) -> None:
        super().__init__()
        self.pairs, self.batch_size, self.seed = pairs, int(batch_size), int(seed)
        self.n = len(next(iter(pairs.values())))
        self._order: tuple[tuple[int, int], Tensor] | None = None

    def _per_rank(self) -> int:
        return math.ceil(self.n / self.world_size)

    def __len__(self) -> int:
        return math.ceil(self._per_rank() / self.batch_size)

    def order(self) -> Tensor:
        """The epoch's row order, padded to ``world_size * per_rank`` (cached per epoch)."""
        key = (self.epoch, self.world_size)
        if self._order is None or self._order[0] != key:
            total = self._per_rank() * self.world_size
            order = torch.randperm(self.n, generator=make_generator(self.seed, TRAIN_ORDER, self.epoch, 0, 0))
            self._order = (key, order.repeat(math.ceil(total / self.n))[:total])
        return self._order[1]

    def make_batch(self, k: int) -> dict[str, Tensor]:
        order = self.order()
        positions = torch.arange(self.rank, len(order), self.world_size)
        index = order[positions[k * self.batch_size : (k + 1) * self.batch_size]]
        return {key: value[index] for key, value in self.pairs.items()}


class TeacherPairsDataModule(FlowDataModule):
    """Pairs ``(x0, x1 = teacher(x0))`` of a trained forward-only model, served as fixed pairs (module docstring);
    evaluation is the teacher's own data module's.

    Args:
        teacher: the teacher checkpoint (``--data.init_args.teacher=<run>/checkpoints/last.ckpt``): a CFM,
            forward-only IFM, or IFM model with a forward-only field, written by this framework; kept as an
            absolute path.
        n_pairs: pairs made and trained on (>= 1).
        method, steps, atol, rtol: the teacher's sampler options for making the pairs (None: the teacher's own,
            ``model.sampler`` of its run); e.g. ``method: dopri5`` with tolerances for accurate end points.
        teacher_guidance: the classifier-free guidance scale of a class-conditional teacher (None: its
            ``model.guidance``); the pairs keep the labels ``y1`` they were generated for. (Not ``guidance``: a
            student's ``model.guidance`` is its own.)
        chunk_size: sources carried by the teacher at once.
        cache_dir: where the pairs are cached, in ``<cache_dir>/pairs/`` (None: ``$LIGHTNING_FM_CACHE``, else
            ``~/.cache/lightning_fm``): ``pairs-<key>.pt``, the key a SHA-256 of every setting above, the teacher
            file's SHA-256 and its data module; a second run with the same settings loads the file.
        device: where the teacher runs while making pairs (None: ``cuda`` when available, else ``cpu``); not part of
            the key (pairs made on another device differ by rounding only).
        progress: show a progress bar while making pairs.
        eval_batch_size: the teacher data's evaluation batches (None: the teacher run's).
        **kwargs: ``batch_size``, ``seed`` (the training order and the sources), ``num_workers`` of
            :class:`~lightning_fm.data.base.FlowDataModule`.

    Pairs are made in ``prepare_data`` of a fit (on one process a node; the others load them in ``setup``), or at
    the first :meth:`pairs` call; ``validate``, ``test`` and ``predict`` never make them. A student's checkpoint
    names the teacher file, which must still exist when it is used again.
    """

    def __init__(
        self,
        teacher: str | None = None,
        n_pairs: int = 10_000,
        method: str | None = None,
        steps: int | None = None,
        atol: float | None = None,
        rtol: float | None = None,
        teacher_guidance: float | None = None,
        chunk_size: int = 2000,
        cache_dir: str | None = None,
        device: str | None = None,
        progress: bool = True,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        from lightning_fm.sampling import METHODS

        if teacher is None or str(teacher) == "":
            raise ValueError(
                f"{TEACHER_KEY} is required: the checkpoint of the model to reflow "
                "(--data.init_args.teacher=<run>/checkpoints/last.ckpt)"
            )
        check_positive_int(n_pairs=n_pairs, chunk_size=chunk_size)
        if steps is not None:
            check_positive_int(steps=steps)
        if method is not None and method not in METHODS:
            raise ValueError(f"data.method={method!r} is unknown; choose one of {list(METHODS)}")
        for key, value in (("atol", atol), ("rtol", rtol)):
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"data.{key} must be finite and >= 0, got {value!r}")
        if teacher_guidance is not None and not math.isfinite(teacher_guidance):
            raise ValueError(f"data.teacher_guidance must be finite, got {teacher_guidance!r}")
        self.teacher_spec, self.teacher_data_spec = read_teacher(str(teacher))
        if teacher_guidance and not backbone_classes(self.teacher_spec["init_args"].get("backbone")):
            raise ValueError(
                f"data.teacher_guidance={teacher_guidance} needs a class-conditional teacher, but "
                f"{TEACHER_KEY}={str(teacher)!r} is unconditional"
            )
        # evaluation is the teacher data's: this value only satisfies the base class
        given = eval_batch_size or self.teacher_data_spec["init_args"].get("eval_batch_size") or 1000
        super().__init__(batch_size=batch_size, eval_batch_size=given, **kwargs)
        self.hparams["eval_batch_size"] = eval_batch_size
        # absolute: a student's checkpoint finds its teacher from any working directory, and a path such as
        # "last.ckpt" is not read as a dotted class path by the checkpoint's allow-list check
        self.hparams["teacher"] = str(Path(teacher).resolve())
        self._teacher: Any = None
        self._teacher_data: FlowDataModule | None = None
        self._pairs: dict[str, Tensor] | None = None

    # -- the teacher and its data (built at first use: not inside LightningCLI's instantiation of this class, whose
    # -- given hyperparameters a Lightning object built there would take as its own) ----------------------------
    @property
    def teacher_module(self) -> Any:
        """The teacher (its checkpoint's weights: the EMA average where its run kept one), in eval mode, on the CPU
        between uses."""
        if self._teacher is None:
            from lightning_fm.modules import FlowMatchingModule

            path = str(self.hparams.teacher)
            teacher = FlowMatchingModule.load_from_checkpoint(path, map_location="cpu").eval()
            problem = not_forward_only(type(teacher).__name__, getattr(teacher, "field", None))
            if problem:
                raise ValueError(f"{TEACHER_KEY}={path!r} {problem}")
            guidance = self.hparams.teacher_guidance
            if guidance and not teacher.num_classes:
                raise ValueError(
                    f"data.teacher_guidance={guidance} needs a class-conditional teacher, but "
                    f"{TEACHER_KEY}={path!r} is unconditional"
                )
            self._teacher = teacher
        return self._teacher

    @property
    def teacher_data(self) -> FlowDataModule:
        """The teacher's data module, rebuilt from its spec (:func:`read_teacher`; only this package's data
        modules and the allowed classes are imported)."""
        if self._teacher_data is None:
            from lightning_fm.modules.loading import DATA_CLASSES
            from lightning_fm.utils.spec import build, only_allowed_classes

            where = f"{TEACHER_KEY}={str(self.hparams.teacher)!r} (its data)"
            spec = {**self.teacher_data_spec, "init_args": dict(self.teacher_data_spec["init_args"])}
            if self.hparams.eval_batch_size is not None:
                spec["init_args"]["eval_batch_size"] = self.hparams.eval_batch_size
            with only_allowed_classes(where, DATA_CLASSES):
                data = build(spec)
            if not isinstance(data, FlowDataModule):
                raise ValueError(f"{where}: {self.teacher_data_spec['class_path']} is not a FlowDataModule")
            self._teacher_data = data
        return self._teacher_data

    def __getattr__(self, name: str) -> Any:
        """The names of :data:`DELEGATED` (image splits and sets) are the teacher data's, where it has them."""
        if name in DELEGATED and "teacher_data_spec" in self.__dict__:
            return getattr(self.teacher_data, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def wrapped_data(self) -> FlowDataModule:
        """The teacher's data module: the source of the pairs (:func:`lightning_fm.data.sources.source_record`)."""
        return self.teacher_data

    @property
    def data_shape(self) -> tuple[int, ...]:
        return tuple(self.teacher_data.data_shape)

    @property
    def source_shape(self) -> tuple[int, ...]:
        return tuple(self.teacher_data.source_shape)

    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(self.teacher_data.target_shape)

    @property
    def source_is_standard_normal(self) -> bool:
        return bool(self.teacher_data.source_is_standard_normal)

    @property
    def num_classes(self) -> int:
        return int(self.teacher_data.num_classes)

    def prepare_data(self) -> None:
        """The teacher data's files, then, in a fit (or without a trainer), the pairs."""
        self.teacher_data.prepare_data()
        trainer = self.trainer
        if trainer is None or trainer.state.fn is None or trainer.state.fn.value == "fit":
            self.pairs()

    def setup(self, stage: str) -> None:
        self.teacher_data.setup(stage)
        if stage == "fit":
            self.pairs()

    # -- the pairs -----------------------------------------------------------------------------------------------
    def sampler_options(self) -> dict[str, Any]:
        """The teacher sampler's options with this module's overrides applied (all of them, resolved)."""
        hp = self.hparams
        overrides = {key: hp[key] for key in ("method", "steps", "atol", "rtol") if hp[key] is not None}
        return self.teacher_module.sampler.options(**overrides)

    def cache_key(self) -> dict[str, Any]:
        """Every setting the pairs depend on: the teacher file's SHA-256, its data module, the resolved sampler
        options, ``teacher_guidance``, ``n_pairs``, ``seed``, ``chunk_size`` and :data:`VERSION`."""
        hp = self.hparams
        return {
            "version": VERSION,
            "teacher_sha256": file_sha256(hp.teacher),
            "teacher_data": self.teacher_data_spec,
            "sampler": {"class_path": type(self.teacher_module.sampler).__name__, **self.sampler_options()},
            "guidance": hp.teacher_guidance,
            "n_pairs": int(hp.n_pairs),
            "seed": int(hp.seed),
            "chunk_size": int(hp.chunk_size),
        }

    def pairs_path(self) -> Path:
        """``<cache_dir>/pairs/pairs-<first 24 hex digits of the SHA-256 of the cache key>.pt``."""
        return cache_root(self.hparams.cache_dir) / "pairs" / f"pairs-{settings_digest(self.cache_key())[:24]}.pt"

    def pairs(self) -> dict[str, Tensor]:
        """The pairs ``{"x0", "x1"}`` (+ ``"y0"``, ``"y1"``): kept in memory, else loaded from :meth:`pairs_path`
        (when it holds this key), else made (:meth:`make_pairs`) and saved there."""
        if self._pairs is not None:
            return self._pairs
        key, path = self.cache_key(), self.pairs_path()
        if path.is_file():
            try:
                cached = torch.load(path, map_location="cpu", weights_only=True)
                if cached.get("key") == key:
                    self._pairs = dict(cached["pairs"])
                    return self._pairs
            except Exception as err:  # noqa: BLE001 - a damaged cache entry is made again
                warnings.warn(f"cached teacher pairs {path} could not be read ({err}); making them again", stacklevel=2)
        made = self.make_pairs()
        atomic_save({"key": key, **made}, path)
        self._pairs = made["pairs"]
        return self._pairs

    def make_pairs(self) -> dict[str, Any]:
        """``{"pairs", "nfe", "seconds", "device"}``: ``n_pairs`` sources of the teacher data's training stream
        (:func:`source_batches`) carried by the teacher's sampler, ``chunk_size`` at a time, on ``device``; ``nfe``
        is the network evaluations a chunk took."""
        from tqdm.auto import tqdm

        hp = self.hparams
        teacher, n = self.teacher_module, int(hp.n_pairs)
        conditional = teacher.num_classes > 0
        rows: dict[str, list[Tensor]] = {}
        for batch in source_batches(self.teacher_data, hp.seed):
            if conditional and "y1" not in batch:
                raise ValueError(
                    f"{TEACHER_KEY}={hp.teacher!r} is class-conditional but its data gives no labels y1 to generate for"
                )
            for key in ("x0", "y0", "y1") if conditional else ("x0", "y0"):
                if key in batch:
                    rows.setdefault(key, []).append(batch[key])
            if sum(len(x) for x in rows["x0"]) >= n:
                break
        sources = {key: torch.cat(values)[:n] for key, values in rows.items()}
        device = torch.device(hp.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        options = self.sampler_options()
        x1, nfe = [], 0
        start = time.perf_counter()
        teacher.to(device)
        try:
            with tqdm(total=n, desc="teacher pairs", unit="pair", disable=not hp.progress, dynamic_ncols=True) as bar:
                for i in range(0, n, int(hp.chunk_size)):
                    x0 = sources["x0"][i : i + int(hp.chunk_size)]
                    y1 = sources.get("y1")
                    y = None if y1 is None else y1[i : i + int(hp.chunk_size)].to(device)
                    result = teacher.sample(x0.to(device), y=y, guidance=hp.teacher_guidance, **options)
                    x1.append(result.x.float().cpu())
                    nfe = max(nfe, int(result.nfe))
                    bar.update(len(x0))
        finally:
            teacher.to("cpu")
        pairs = {"x0": sources["x0"], "x1": torch.cat(x1)}
        pairs.update({key: sources[key] for key in ("y0", "y1") if key in sources})
        return {"pairs": pairs, "nfe": nfe, "seconds": time.perf_counter() - start, "device": str(device)}

    # -- batches ---------------------------------------------------------------------------------------------------
    def train_set(self) -> FixedPairs:
        return FixedPairs(self.pairs(), self.hparams.batch_size, self.hparams.seed)

    def evaluation_batches(self, stage: str):
        """The teacher data's validation or test set (fresh fixed sources, the real held-out targets)."""
        return self.teacher_data.evaluation_batches(stage)

    def predict_batches(self):
        return self.teacher_data.predict_batches()

    def eval_set(self, stage: str) -> dict[str, Tensor]:
        return self.teacher_data.eval_set(stage)

    def predict_set(self) -> dict[str, Tensor]:
        return self.teacher_data.predict_set()

    def evaluation_workers(self) -> int:
        return self.teacher_data.evaluation_workers()
