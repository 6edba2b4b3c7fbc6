"""A small CNN classifier of grey images, trained on the data's own training split: its penultimate features are
the feature space of a download-free Fréchet distance, its predictions give class coverage, confidence and
label accuracy of generated samples. Pure torch, no Lightning.

:func:`load_or_train_classifier` caches the trained weights on disk under a name that hashes the training images,
labels and every training setting, so the same split and settings load the same classifier and any change retrains.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_fm.utils.cache import atomic_save, cache_root
from lightning_fm.utils.seeding import derive_seed

CACHE_VERSION = "digits-classifier-v1"  # bump when the architecture or the training procedure changes


class DigitsClassifier(nn.Module):
    """``logits(x)`` of images ``x`` ``(B, C, H, W)`` in [-1, 1]: four 3x3 convolutions with SiLU (widths ``width``,
    ``2 width``, ``2 width`` with stride 2, ``feature_dim``), global average pooling to the ``(B, feature_dim)``
    penultimate :meth:`features`, and a linear layer to ``num_classes`` logits. Any image size >= 1x1 works."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        self.config = {
            "num_classes": int(num_classes),
            "in_channels": int(in_channels),
            "width": int(width),
            "feature_dim": int(feature_dim),
        }
        self.num_classes, self.in_channels, self.feature_dim = int(num_classes), int(in_channels), int(feature_dim)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * width, feature_dim, 3, padding=1),
            nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``(B, feature_dim)``: the spatial mean of the last convolution's activations."""
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"DigitsClassifier takes images (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return self.body(x).mean(dim=(2, 3))

    def logits(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(x)


def random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Each image moved by its own random integer offset in ``[-max_shift, max_shift]^2``; uncovered pixels take
    the background value -1 (the data range is [-1, 1] with -1 for black)."""
    if max_shift <= 0:
        return x
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (b,), generator=generator).to(x.device) for _ in range(2))
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
    return padded[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)


def _check_training_data(images: Tensor, labels: Tensor) -> None:
    if images.dim() != 4:
        raise ValueError(f"the classifier trains on images (N, C, H, W), got shape {tuple(images.shape)}")
    if labels is None or labels.shape != (images.shape[0],):
        raise ValueError(
            f"the classifier needs one integer label per training image, got labels of shape "
            f"{None if labels is None else tuple(labels.shape)} for {images.shape[0]} images"
        )
    if len(torch.unique(labels)) < 2:
        raise ValueError("the classifier needs training images of at least 2 classes")


def train_classifier(
    images: Tensor,
    labels: Tensor,
    seed: int = 0,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    width: int = 32,
    feature_dim: int = 64,
    max_shift: int = 1,
    device: str | torch.device | None = None,
) -> DigitsClassifier:
    """Train a :class:`DigitsClassifier` on ``images`` ``(N, C, H, W)`` in [-1, 1] and int ``labels`` ``(N,)``
    (``num_classes = max(label) + 1``): cross-entropy, AdamW (``lr``, ``weight_decay``) with a cosine decay of the
    learning rate to 0 over ``epochs`` passes in shuffled batches of ``batch_size``, each image moved by a random
    shift of up to ``max_shift`` pixels. Deterministic given ``seed`` on the CPU (on a GPU, convolution backward
    passes are not bit-exact); the global RNG is left as it was. Returns the classifier in eval mode with gradients
    off, on the CPU.

    ``device`` (default CPU) is where training runs; it is no part of the cached file's name.
    """
    _check_training_data(images, labels)
    for key, value, low in (("epochs", epochs, 1), ("batch_size", batch_size, 1), ("max_shift", max_shift, 0)):
        if isinstance(value, bool) or int(value) != value or value < low:
            raise ValueError(f"train_classifier: {key} must be an integer >= {low}, got {value!r}")
    device = torch.device(device or "cpu")
    with torch.inference_mode(False), torch.enable_grad():  # also when called from an evaluation loop
        x, y = images.detach().float().to(device).clone(), labels.detach().long().to(device).clone()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, 0))
            model = DigitsClassifier(int(y.max()) + 1, x.shape[1], width, feature_dim).to(device)
        _fit(model, x, y, epochs, batch_size, lr, weight_decay, max_shift, seed)
    return model.cpu().eval().requires_grad_(False)


def _fit(
    model: DigitsClassifier,
    x: Tensor,
    y: Tensor,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    max_shift: int,
    seed: int,
) -> None:
    """The training loop of :func:`train_classifier`."""
    generator = torch.Generator().manual_seed(derive_seed(seed, 1))
    steps = epochs * math.ceil(len(x) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator).to(x.device)
        for start in range(0, len(x), batch_size):
            index = order[start : start + batch_size]
            loss = F.cross_entropy(model(random_shift(x[index], max_shift, generator)), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()


TRAIN_SIGNATURE = inspect.signature(train_classifier)


def _settings(settings: dict[str, Any]) -> dict[str, Any]:
    """Every training setting of :func:`train_classifier` (defaults filled in), except the device."""
    parameters = TRAIN_SIGNATURE.parameters
    unknown = (set(settings) - set(parameters)) | ({"images", "labels"} & set(settings))
    if unknown:
        raise TypeError(
            f"unknown classifier settings {sorted(unknown)} (ClassifierMetrics.classifier); "
            f"known: {sorted(set(parameters) - {'images', 'labels'})}"
        )
    bound = TRAIN_SIGNATURE.bind_partial(**settings)
    bound.apply_defaults()
    resolved = dict(bound.arguments)
    for key in ("images", "labels", "device"):
        resolved.pop(key, None)
    return resolved


def classifier_cache_path(images: Tensor, labels: Tensor, cache_dir: str | Path | None = None, **settings: Any) -> Path:
    """``<cache_dir>/classifiers/digits_classifier-<hash>.pt``, the hash (SHA-256) covering the training images
    (shape and float32 values), the labels, every training setting and the code version."""
    resolved = _settings(settings)
    digest = hashlib.sha256(CACHE_VERSION.encode())
    x = images.detach().float().cpu().contiguous()
    digest.update(json.dumps({"shape": list(x.shape), "settings": resolved}, sort_keys=True).encode())
    digest.update(x.numpy().tobytes())
    digest.update(labels.detach().long().cpu().contiguous().numpy().tobytes())
    return cache_root(cache_dir) / "classifiers" / f"digits_classifier-{digest.hexdigest()[:24]}.pt"


def _load(path: Path) -> DigitsClassifier:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = DigitsClassifier(**payload["config"])
    model.load_state_dict(payload["state_dict"])
    return model.eval().requires_grad_(False)


def _save(model: DigitsClassifier, path: Path, settings: dict[str, Any]) -> None:
    atomic_save({"config": model.config, "state_dict": model.state_dict(), "settings": settings}, path)


def load_or_train_classifier(
    images: Tensor, labels: Tensor, cache_dir: str | Path | None = None, **settings: Any
) -> DigitsClassifier:
    """The classifier of :func:`train_classifier` for these images, labels and ``settings``: loaded from
    :func:`classifier_cache_path` (``weights_only=True``) if that file exists, else trained and saved there.
    An unreadable cached file is retrained and replaced (with a warning)."""
    _check_training_data(images, labels)
    path = classifier_cache_path(images, labels, cache_dir, **settings)
    if path.exists():
        try:
            return _load(path)
        except Exception as err:  # noqa: BLE001 - a damaged cache entry is rebuilt
            warnings.warn(f"cached classifier {path} could not be loaded ({err}); retraining it", stacklevel=2)
    model = train_classifier(images, labels, **settings)
    _save(model, path, _settings(settings))
    return model
