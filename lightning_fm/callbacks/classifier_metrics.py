"""``ClassifierMetrics``: sample quality of grey-image models measured with a small classifier trained on the data's
own training split (no download): Fréchet distance of its features, class coverage, confidence and label accuracy.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from torchmetrics import Metric

from lightning_fm.metrics.classifier import DigitsClassifier, load_or_train_classifier
from lightning_fm.metrics.frechet import FeatureStatistics, frechet_distance_from_stats


def _images_and_labels(value: Any, what: str) -> tuple[Tensor, Tensor | None]:
    """``(images, labels)`` from a pair or from an image split (``.labels`` and ``.chunks()``)."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return value[0], value[1]
    if hasattr(value, "labels") and callable(getattr(value, "chunks", None)):
        return torch.cat(list(value.chunks())), value.labels
    raise TypeError(
        f"ClassifierMetrics: {what} must be (images, labels) or an image split with .labels and "
        f".chunks(), got {type(value).__name__}"
    )


def training_images(datamodule: Any) -> tuple[Tensor, Tensor]:
    """The labelled target training images ``(images (N, C, H, W), labels (N,))`` of a data module: its
    ``target_train_images()`` (a pair or an image split, :class:`~lightning_fm.data.images.ImageDataModule`)."""
    name = type(datamodule).__name__
    if not callable(getattr(datamodule, "target_train_images", None)):
        raise TypeError(
            f"ClassifierMetrics cannot find the training images of {name}: it has no method "
            "`target_train_images()` returning (images, labels) (image data such as "
            "lightning_fm.data.ImageDataModule has one)"
        )
    images, labels = _images_and_labels(datamodule.target_train_images(), f"{name}.target_train_images()")
    if labels is None:
        raise ValueError(
            f"ClassifierMetrics trains its classifier on labelled images, but the training images of "
            f"{name} have no labels"
        )
    return images, labels


def source_training_images(datamodule: Any) -> tuple[Tensor, Tensor] | None:
    """The labelled source training images of a transfer (``source_train_images()``), None if there are none."""
    method = getattr(datamodule, "source_train_images", None)
    if getattr(datamodule, "source_is_standard_normal", True) is not False or not callable(method):
        return None
    value = method()
    if value is None:
        return None
    images, labels = _images_and_labels(value, f"{type(datamodule).__name__}.source_train_images()")
    return None if labels is None else (images, labels)


def check_grey_images(shape: tuple[int, ...]) -> None:
    """Raise a ValueError unless ``shape`` is a grey image ``(1, H, W)``."""
    if len(shape) == 3 and shape[0] == 3:
        raise ValueError(
            f"ClassifierMetrics measures grey images (1, H, W); the data are RGB {shape}: remove "
            "lightning_fm.callbacks.ClassifierMetrics from trainer.callbacks"
        )
    if len(shape) != 3 or shape[0] != 1:
        raise ValueError(
            f"ClassifierMetrics measures grey images (1, H, W), but the data have shape {shape}: "
            "remove lightning_fm.callbacks.ClassifierMetrics from trainer.callbacks"
        )


class PredictionStatistics(Metric):
    """Sums over batches and processes of the classifier's predictions for generated samples: ``counts`` ``(K,)``
    of predicted labels, ``confidence`` (sum of the max softmax probabilities), ``n``, and ``hits`` / ``asked``
    (samples predicted as their requested label / samples with a requested label), ``in_target`` (samples
    predicted as one of ``target_classes``)."""

    full_state_update = False

    def __init__(self, num_classes: int, target_classes: Tensor) -> None:
        super().__init__()
        self.add_state("counts", default=torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
        for name in ("confidence", "n", "hits", "asked", "in_target"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.register_buffer(
            "target_mask",
            torch.zeros(num_classes, dtype=torch.bool).index_fill_(0, target_classes.long(), True),
            persistent=False,
        )

    def update(self, probabilities: Tensor, requested: Tensor | None = None) -> None:
        confidence, predicted = probabilities.max(dim=1)
        self.counts += torch.bincount(predicted, minlength=self.counts.numel()).double()
        self.confidence += confidence.double().sum()
        self.n += predicted.numel()
        self.in_target += self.target_mask[predicted].double().sum()
        if requested is not None:
            self.hits += (predicted == requested.to(predicted.device)).double().sum()
            self.asked += requested.numel()

    def compute(self) -> dict[str, Tensor]:
        return {
            "counts": self.counts,
            "confidence": self.confidence / self.n,
            "hits": self.hits,
            "asked": self.asked,
            "in_target": self.in_target / self.n,
        }


class ClassifierMetrics(Callback):
    """After each validation (one in ``every_n_validations``, never the sanity check) and each test, log under
    ``val/`` or ``test/`` (with ``sync_dist=True``):

    * ``fd``: the Fréchet distance between the classifier features ``f`` (penultimate layer) of the generated
      samples and of the held-out targets ``batch["x1"]``: ``||mu_g - mu_t||^2 + tr(S_g + S_t - 2 (S_g^{1/2} S_t
      S_g^{1/2})^{1/2})``;
    * ``fd_floor``: the same between the independent training sample ``batch["x1_ref"]`` and the held-out
      targets, what a perfect model scores with this many samples (when the batches carry ``x1_ref``);
    * ``class_coverage``: the fraction of the K target classes (those of the training labels) that receive at least
      half of their fair share, ``count_c >= N / (2K)``, of the N generated samples' predicted labels;
    * ``confidence``: the mean over generated samples of the largest softmax probability;
    * ``label_accuracy`` (class-conditional models, ``pl_module.num_classes > 0``): the fraction of generated
      samples predicted as their requested label ``batch["y1"]``;
    * ``target_class_fraction`` (transfers, data with ``source_is_standard_normal`` False): the fraction of
      generated samples predicted as one of the target classes. It measures something only when the classifier
      knows the source classes too: the data module's optional ``source_train_images()`` (images, labels) are then
      added to its training set.

    Generated samples are clamped to the data range [-1, 1] before the classifier sees them. Means, covariances
    and prediction counts are float64 sums over batches and processes (torchmetrics states), so the numbers are
    those of the whole evaluation set under any number of processes.

    The classifier (:class:`~lightning_fm.metrics.DigitsClassifier`) is trained at ``setup`` on the data's
    training images (:func:`training_images`) by :func:`~lightning_fm.metrics.load_or_train_classifier` (cached
    under ``cache_dir``: default ``$LIGHTNING_FM_CACHE`` or ``~/.cache/lightning_fm``), with ``classifier``
    settings passed on to :func:`~lightning_fm.metrics.classifier.train_classifier`. It is held by this callback,
    never by the LightningModule: it is not in checkpoints, not averaged by EMA and never trained by the trainer.

    Args:
        cache_dir: folder of the cached classifier weights (None: the default above).
        classifier: settings of ``train_classifier`` (``seed``, ``epochs``, ``batch_size``, ``lr``, ``width``,
            ``feature_dim``, ...); None: its defaults.
        every_n_validations: measure one validation in this many (tests are always measured).
        batch_size: images per classifier forward pass.
    """

    def __init__(
        self,
        cache_dir: str | None = None,
        classifier: dict[str, Any] | None = None,
        every_n_validations: int = 1,
        batch_size: int = 1000,
    ) -> None:
        for key, value in (("every_n_validations", every_n_validations), ("batch_size", batch_size)):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"ClassifierMetrics.{key} must be an integer >= 1, got {value!r}")
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.settings = dict(classifier or {})
        self.every_n_validations, self.batch_size = int(every_n_validations), int(batch_size)
        self.classifier: DigitsClassifier | None = None
        self.target_classes: Tensor | None = None
        self._data: Any = None  # the data module the classifier was trained for
        self._validations, self._active, self._prefix = 0, False, "val"
        self._stats: dict[str, FeatureStatistics] = {}
        self._predictions: PredictionStatistics | None = None

    # -- the classifier ----------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if stage not in ("fit", "validate", "test") or (self.classifier is not None and datamodule is self._data):
            return
        if datamodule is None:
            raise ValueError(
                "ClassifierMetrics needs a data module (trainer.fit(model, datamodule=...)): its "
                "classifier trains on the data's training images"
            )
        check_grey_images(tuple(getattr(datamodule, "target_shape", None) or datamodule.data_shape))
        images, labels = training_images(datamodule)
        self.target_classes = torch.unique(labels.cpu())
        source = source_training_images(datamodule)
        if source is not None:  # a transfer: the classifier learns the source classes too
            images, labels = torch.cat([images, source[0]]), torch.cat([labels, source[1]])
        # rank 0 trains (on the run's accelerator) or loads the cached classifier; under DDP it sends its weights to
        # the other ranks, so that every rank measures in the same feature space (GPU training is not bit-exact)
        world = int(getattr(trainer, "world_size", 1))
        classifier = None
        if world == 1 or trainer.is_global_zero:
            settings = {"device": trainer.strategy.root_device, **self.settings}
            classifier = load_or_train_classifier(images, labels, self.cache_dir, **settings)
        if world > 1:
            config, state = trainer.strategy.broadcast(
                None if classifier is None else (classifier.config, classifier.state_dict()), src=0
            )
            classifier = DigitsClassifier(**config)
            classifier.load_state_dict(state)
        self.classifier, self._data = classifier.eval().requires_grad_(False), datamodule

    def _prepare(self, device: torch.device) -> None:
        """Fresh accumulators and the classifier on ``device``."""
        if self.classifier is None:
            raise RuntimeError("ClassifierMetrics has no classifier: its setup did not run")
        self.classifier.to(device)
        dim, classes = self.classifier.feature_dim, self.classifier.num_classes
        self._stats = {name: FeatureStatistics(dim).to(device) for name in ("generated", "target", "reference")}
        self._predictions = PredictionStatistics(classes, self.target_classes).to(device)

    @torch.no_grad()
    def _classify(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Features ``(B, feature_dim)`` and softmax probabilities ``(B, K)`` of images clamped to [-1, 1]."""
        features, probabilities = [], []
        if images.shape[0] == 0:  # every line of the batch stopped before the target plate
            empty = images.new_zeros(0, self.classifier.head.in_features)
            return empty, self.classifier.head(empty).softmax(dim=1)
        for part in images.detach().float().clamp(-1, 1).split(self.batch_size):
            f = self.classifier.features(part)
            features.append(f)
            probabilities.append(self.classifier.head(f).softmax(dim=1))
        return torch.cat(features), torch.cat(probabilities)

    # -- one pass ----------------------------------------------------------------------------------------------
    def _update(self, pl_module: LightningModule, outputs: Any, batch: dict[str, Tensor]) -> None:
        if not (isinstance(outputs, Mapping) and "generated" in outputs):
            raise TypeError(
                "ClassifierMetrics needs the evaluation step to return {'generated': samples} "
                f"(as FlowMatchingModule does), got {type(outputs).__name__}"
            )
        generated = outputs["generated"]  # the lines that returned (outputs["kept"] over the batch)
        features, probabilities = self._classify(generated)
        self._stats["generated"].update(features)
        self._stats["target"].update(self._classify(batch["x1"])[0])
        if "x1_ref" in batch:
            self._stats["reference"].update(self._classify(batch["x1_ref"])[0])
        conditional = int(getattr(pl_module, "num_classes", 0)) > 0 and batch.get("y1") is not None
        labels = batch["y1"] if conditional else None
        if labels is not None and "kept" in outputs:
            labels = labels[outputs["kept"]]
        self._predictions.update(probabilities, labels)

    def _log(self, trainer: Trainer, pl_module: LightningModule, prefix: str) -> None:
        if not self._stats["generated"].update_count:  # no evaluation batch reached this callback
            return
        stats = {name: metric.compute() for name, metric in self._stats.items() if metric.update_count}
        predictions = self._predictions.compute()
        values = {"fd": frechet_distance_from_stats(*stats["generated"], *stats["target"])}
        if "reference" in stats:
            values["fd_floor"] = frechet_distance_from_stats(*stats["reference"], *stats["target"])
        counts = predictions["counts"][self.target_classes.to(predictions["counts"].device)]
        fair_share = float(predictions["counts"].sum()) / len(self.target_classes)
        values["class_coverage"] = float((counts >= 0.5 * fair_share).double().mean())
        values["confidence"] = float(predictions["confidence"])
        if float(predictions["asked"]) > 0:
            values["label_accuracy"] = float(predictions["hits"] / predictions["asked"])
        if getattr(trainer.datamodule, "source_is_standard_normal", True) is False:
            values["target_class_fraction"] = float(predictions["in_target"])
        device = pl_module.device
        pl_module.log_dict(
            {f"{prefix}/{k}": torch.tensor(v, dtype=torch.float32, device=device) for k, v in values.items()},
            sync_dist=True,
        )
        for metric in (*self._stats.values(), self._predictions):
            metric.reset()

    # -- hooks -------------------------------------------------------------------------------------------------
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active = False
        if trainer.sanity_checking:
            return
        self._validations += 1
        self._active = (self._validations - 1) % self.every_n_validations == 0
        self._prefix = "val"
        if self._active:
            self._prepare(pl_module.device)

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self._active:
            self._update(pl_module, outputs, batch)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._active:
            self._log(trainer, pl_module, self._prefix)
        self._active = False

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._active, self._prefix = True, "test"
        self._prepare(pl_module.device)

    # a test epoch updates and logs as a validation epoch does (under test/*)
    on_test_batch_end = on_validation_batch_end
    on_test_epoch_end = on_validation_epoch_end
