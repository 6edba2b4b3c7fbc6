"""``InceptionMetrics``: FID and KID the way papers measure them, during validation and at test, under DDP, every
setting written next to every number.

At the start of a validation (one in ``every_n_validations``, never the sanity check) and of a test, the module
holding the EMA weights (:func:`~lightning_fm.callbacks.ema.evaluation_weights`) generates ``n_samples`` (test:
``test_samples``) images with its configured sampler (``sampler`` overrides): sample ``i`` starts from N(0, I) noise
drawn from a generator of its own block of ``batch_size`` rows, seeded by ``(seed, block)``, and a class-conditional
model is asked for class ``i mod K``; with W processes rank r makes samples ``r, r + W, ...``, so the samples do not
depend on the number of processes. Their Inception features (:class:`~lightning_fm.metrics.InceptionFeatures`)
are reduced over processes (sums for FID, the rows themselves for KID) and compared with the reference statistics
of the data's training split (``reference_split``; computed once by rank 0, cached on disk under a key of every
setting, and sent to the other ranks). Logged: ``val/fid`` (``test/fid``), ``val/kid`` and ``val/kid_std``,
``val/fid_nfe`` (network evaluations per sample batch); written: ``<run dir>/fid/<stage>_step_<step>.json`` with the
tool versions, the feature extractor and its weights' hash, the sample and reference counts, the reference split,
the resize, the sampler and NFE, the weights (EMA or not), the world size, the precision and the device.

The Inception network lives in this callback, never in the LightningModule (so never in its checkpoints or its EMA
copy). Missing weights fail at ``setup``, before training, with the file to download and where to put it.
"""

from __future__ import annotations

import json
import platform
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from torchmetrics import CatMetric
from tqdm.auto import tqdm

import lightning_fm
from lightning_fm.callbacks.ema import evaluation_weights
from lightning_fm.callbacks.sample_plots import run_dir
from lightning_fm.metrics import FeatureStatistics, frechet_distance_from_stats, kernel_inception_distance
from lightning_fm.metrics.inception import InceptionFeatures
from lightning_fm.metrics.reference import images_fingerprint, reference_statistics
from lightning_fm.utils.seeding import make_generator
from lightning_fm.utils.spec import to_spec

#: the seed stream of FID noise (apart from the data's streams)
FID_STREAM = 17


class InceptionMetrics(Callback):
    """FID / KID of generated images against the training split (module docstring).

    Args:
        every_n_validations: measure one validation in this many (0: only at test).
        n_samples, test_samples: generated images per validation / per test (papers: 50,000 at test).
        batch_size: images generated (and featurised) per batch.
        kid: also KID (the unbiased polynomial-kernel MMD of Binkowski et al.), on ``kid_subsets`` subsets of
            ``kid_subset_size`` (at most the sample count) against the first ``kid_reference`` reference rows.
        reference_split: ``"train"`` (the CIFAR-10 FID convention of torchcfm and clean-fid); the statistics of all
            its images (at most ``reference_samples``).
        weights_path: the Inception weights file (None: torch hub's cache; see :mod:`lightning_fm.metrics.inception`).
        cache_dir: where reference statistics are cached (None: ``$LIGHTNING_FM_CACHE`` or ``~/.cache/lightning_fm``).
        sampler: sampler options for generation (e.g. ``{method: euler, steps: 100}``); default: the module's own.
        guidance: guidance scale of a class-conditional model (None: ``model.guidance``). seed: the noise's seed.
    """

    def __init__(
        self,
        every_n_validations: int = 1,
        n_samples: int = 10_000,
        test_samples: int = 50_000,
        batch_size: int = 500,
        kid: bool = True,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        kid_reference: int = 10_000,
        reference_split: str = "train",
        reference_samples: int | None = None,
        weights_path: str | None = None,
        cache_dir: str | None = None,
        sampler: dict | None = None,
        guidance: float | None = None,
        seed: int = 0,
    ) -> None:
        for key, value, low in (
            ("every_n_validations", every_n_validations, 0),
            ("n_samples", n_samples, 2),
            ("test_samples", test_samples, 2),
            ("batch_size", batch_size, 1),
            ("kid_subsets", kid_subsets, 1),
            ("kid_subset_size", kid_subset_size, 2),
            ("kid_reference", kid_reference, 2),
        ):
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"InceptionMetrics.{key} must be an integer >= {low}, got {value!r}")
        if reference_split != "train":
            raise ValueError(
                f"InceptionMetrics.reference_split must be 'train' (the training split, as torchcfm and "
                f"clean-fid measure CIFAR-10), got {reference_split!r}"
            )
        self.every_n_validations, self.n_samples, self.test_samples = every_n_validations, n_samples, test_samples
        self.batch_size, self.kid = batch_size, kid
        self.kid_subsets, self.kid_subset_size, self.kid_reference = kid_subsets, kid_subset_size, kid_reference
        self.reference_split, self.reference_samples = reference_split, reference_samples
        self.weights_path, self.cache_dir, self.sampler = weights_path, cache_dir, dict(sampler or {})
        self.guidance, self.seed = guidance, int(seed)
        self.extractor: InceptionFeatures | None = None
        self.reference: dict[str, Any] | None = None
        self._validations = 0
        self.last: dict[str, Any] = {}  # the last measurement's record (what the JSON file holds)

    # -- setup: the extractor (and an early error without weights) -------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        shape = tuple(getattr(datamodule, "data_shape", ()))
        if len(shape) != 3 or shape[0] not in (1, 3) or not hasattr(datamodule, "target_train_images"):
            raise ValueError(
                f"InceptionMetrics measures images (1 or 3, H, W) of an image data module "
                f"(lightning_fm.data.ImageDataModule); the data ({type(datamodule).__name__}) have shape "
                f"{shape}: remove lightning_fm.callbacks.InceptionMetrics from trainer.callbacks"
            )
        if self.extractor is None:
            self.extractor = InceptionFeatures(self.weights_path, self.batch_size)

    def _reference(self, trainer: Trainer, device: torch.device) -> dict[str, Any]:
        """The training split's statistics: rank 0 loads or computes them, the other ranks receive them."""
        if self.reference is None:
            reference = None
            if trainer.is_global_zero:
                with _progress(trainer, 0, "FID reference statistics (cached after this)") as bar:
                    reference = training_split_statistics(
                        trainer.datamodule,
                        self.extractor.to(device),
                        self.batch_size,
                        self.cache_dir,
                        self.kid_reference if self.kid else 0,
                        self.reference_samples,
                        bar,
                    )
            if trainer.world_size > 1:
                reference = trainer.strategy.broadcast(reference, src=0)
            self.reference = reference
        return self.reference

    # -- when ------------------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking or not self.every_n_validations:
            return
        self._validations += 1
        if (self._validations - 1) % self.every_n_validations == 0:
            self.measure(trainer, pl_module, "val", self.n_samples)

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.measure(trainer, pl_module, "test", self.test_samples)

    # -- the measurement ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self, trainer: Trainer, model: LightningModule, n: int, statistics: FeatureStatistics, rows: CatMetric | None
    ) -> float:
        """This rank's samples ``rank, rank + W, ... < n``, ``batch_size`` at a time: their features go into
        ``statistics`` (and ``rows`` for KID); returns the mean NFE of a batch."""
        rank, world, device = trainer.global_rank, trainer.world_size, model.device
        shape, classes, nfes = tuple(trainer.datamodule.data_shape), int(getattr(model, "num_classes", 0)), []
        mine = torch.arange(rank, n, world)
        bar = _progress(trainer, len(mine), f"FID: generating {n} samples")
        for start in range(0, len(mine), self.batch_size):
            index = mine[start : start + self.batch_size]
            noise = torch.stack([self.noise(int(i), shape) for i in index]).to(device)
            labels = (index % classes).to(device) if classes else None
            result = model.sample(noise, y=labels, guidance=self.guidance, **self.sampler)
            kept = result.x[result.kept()]  # field lines that did not return are not samples
            if len(kept):
                features = self.extractor(kept.clamp(-1, 1))
                statistics.update(features)
                if rows is not None:
                    rows.update(features)
            nfes.append(result.nfe)
            bar.update(len(index))
        bar.close()
        return sum(nfes) / max(len(nfes), 1)

    def noise(self, i: int, shape: tuple[int, ...]) -> Tensor:
        """The fixed source noise of sample ``i``, from a generator of its own: ``(seed, FID stream, i)``."""
        return torch.randn(shape, generator=make_generator(self.seed, FID_STREAM, 0, 0, i))

    def measure(self, trainer: Trainer, pl_module: LightningModule, stage: str, n: int) -> dict[str, Any]:
        model, weights = evaluation_weights(trainer, pl_module, self)
        device = pl_module.device
        home, was_training = next(model.parameters()).device, model.training
        self.extractor.to(device)
        reference = self._reference(trainer, device)
        statistics = FeatureStatistics(self.extractor.feature_dim).to(device)
        rows = CatMetric().to(device) if self.kid else None
        model.to(device).eval()
        try:
            nfe = self.generate(trainer, model, n, statistics, rows)
        finally:
            model.to(home).train(was_training)
        mu, cov = statistics.compute()  # summed over processes
        record = {
            "stage": stage,
            "step": trainer.global_step,
            "fid": frechet_distance_from_stats(mu.cpu(), cov.cpu(), reference["mu"], reference["cov"]),
        }
        if rows is not None:
            generated = rows.compute().reshape(-1, self.extractor.feature_dim).cpu()  # gathered over processes
            size = min(self.kid_subset_size, len(generated), len(reference["kid"]))
            generator = torch.Generator().manual_seed(self.seed)
            record["kid"], record["kid_std"] = kernel_inception_distance(
                generated, reference["kid"], self.kid_subsets, size, generator=generator
            )
            record["kid_settings"] = {
                "subsets": self.kid_subsets,
                "subset_size": size,
                "reference_rows": len(reference["kid"]),
            }
        record.update(self._settings(trainer, pl_module, model, weights, n, nfe, reference))
        self._log(trainer, pl_module, record)
        return record

    def _settings(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        model: LightningModule,
        weights: str,
        n: int,
        nfe: float,
        reference: dict[str, Any],
    ) -> dict[str, Any]:
        sampler = model.hparams.get("sampler", {})
        return {
            "n_samples": n,
            "nfe_per_batch": nfe,
            "batch_size": self.batch_size,
            "weights": weights,
            "sampler": {
                "class_path": sampler.get("class_path"),
                "options": {**(sampler.get("init_args") or {}), **self.sampler},
            },
            "guidance": model.hparams.get("guidance", 0.0) if self.guidance is None else self.guidance,
            "reference": {
                "split": self.reference_split,
                "n": reference["n"],
                "data": reference["key"]["data"],
                "cache": reference.get("path"),
            },
            "features": self.extractor.settings(),
            "world_size": trainer.world_size,
            "precision": str(trainer.precision),
            "device": _device_name(pl_module.device),
            "tools": {
                "lightning_fm": lightning_fm.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
        }

    def _log(self, trainer: Trainer, pl_module: LightningModule, record: dict[str, Any]) -> None:
        self.last = record
        prefix = record["stage"]
        values = {f"{prefix}/fid": record["fid"], f"{prefix}/fid_nfe": record["nfe_per_batch"]}
        if "kid" in record:
            values.update({f"{prefix}/kid": record["kid"], f"{prefix}/kid_std": record["kid_std"]})
        pl_module.log_dict(
            {k: torch.tensor(float(v), device=pl_module.device) for k, v in values.items()}, sync_dist=True
        )
        if trainer.is_global_zero:
            out = run_dir(trainer) / "fid" / f"{prefix}_step_{trainer.global_step:07d}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(record, indent=2, default=str))
            rank_zero_info(summary(record) + f"\n  (all settings: {out.resolve()})")


def training_split_statistics(
    datamodule,
    extractor: InceptionFeatures,
    batch_size: int,
    cache_dir: str | None,
    kid_features: int,
    max_images: int | None = None,
    bar: tqdm | None = None,
) -> dict:
    """:func:`~lightning_fm.metrics.reference.reference_statistics` of an image data module's training split (at
    most ``max_images``), keyed by the data module's class and target spec, the split, the count, a fingerprint of
    the first images and the extractor's settings (its weights by hash)."""
    split = datamodule.target_train_images()
    n = len(split) if max_images is None else min(len(split), max_images)
    key = {
        "name": type(datamodule).__name__,
        "data": to_spec(getattr(datamodule, "target", None)),
        "split": "train",
        "n": n,
        "fingerprint": images_fingerprint(split.get(torch.arange(min(n, 64)))),
        "features": {k: v for k, v in extractor.settings().items() if k != "weights"},
    }
    chunks = (split.get(torch.arange(i, min(i + batch_size, n))) for i in range(0, n, batch_size))
    if bar is not None:
        bar.reset(total=n)
    return reference_statistics(
        extractor,
        extractor.feature_dim,
        chunks,
        key,
        cache_dir,
        kid_features,
        progress=None if bar is None else (lambda done: bar.update(done - bar.n)),
    )


def summary(record: dict[str, Any]) -> str:
    """One line of a measurement with the settings it depends on, as the log prints it."""
    features, sampler, ref = record["features"], record["sampler"], record["reference"]
    options = ", ".join(f"{k}={v}" for k, v in sampler["options"].items())
    kid = f", KID {record['kid']:.5f} +- {record['kid_std']:.5f}" if "kid" in record else ""
    weights = (
        "the reference Inception weights"
        if features["reference_weights"]
        else "NOT the reference Inception weights (not comparable with published FIDs)"
    )
    return (
        f"{record['stage']}/fid {record['fid']:.4g}{kid} at step {record['step']}: {record['n_samples']} samples ("
        f"{record['weights']}), {sampler['class_path']}({options}), NFE {record['nfe_per_batch']:.1f}, "
        f"guidance {record['guidance']}; reference: {ref['n']} images of the {ref['split']} split; "
        f"torch-fidelity {features['torch_fidelity']}, {weights} (sha256 {features['weights_sha256'][:12]}), "
        f"{features['resize']}; world size {record['world_size']}, {record['precision']}, {record['device']}"
    )


def _progress(trainer: Trainer, total: int, description: str) -> tqdm:
    """A progress bar on rank 0 where the trainer shows one."""
    shown = trainer.is_global_zero and trainer.progress_bar_callback is not None
    return tqdm(total=total, desc=description, unit="img", leave=False, dynamic_ncols=True, disable=not shown)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()})"
