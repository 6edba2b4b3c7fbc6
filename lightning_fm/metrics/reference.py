"""Reference statistics of a data split in a feature space (FID's ``mu_r``, ``Sigma_r``, and features for KID),
computed once and cached on disk under a key that names every setting they depend on. Pure torch, no Lightning."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_fm.metrics.frechet import FeatureStatistics
from lightning_fm.utils.cache import atomic_save, cache_root, settings_digest

VERSION = "reference-statistics-v1"  # bump when the computation changes


def images_fingerprint(first_images: Tensor) -> str:
    """SHA-256 of a few of the split's images (float32 bytes): part of the key, so that other files under the same
    config give other statistics."""
    return hashlib.sha256(first_images.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def reference_path(key: dict[str, Any], cache_dir: str | Path | None) -> Path:
    """``<cache>/fid_reference/<name>-<sha256 of the key>.pt``."""
    name = str(key.get("name", "reference")).replace("/", "_")
    return cache_root(cache_dir) / "fid_reference" / f"{name}-{settings_digest({**key, 'version': VERSION})[:24]}.pt"


def reference_statistics(
    extractor: Callable[[Tensor], Tensor],
    feature_dim: int,
    chunks: Iterable[Tensor],
    key: dict[str, Any],
    cache_dir: str | Path | None = None,
    kid_features: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """``{"mu" (d,), "cov" (d, d) float64, "kid" (<= kid_features, d), "n", "key", "path"}`` of the images that
    ``chunks`` yields (batches in [-1, 1]) under ``extractor``: loaded from :func:`reference_path` when that file
    exists and holds this key, else computed (streamed by :class:`~lightning_fm.metrics.FeatureStatistics`; the
    first ``kid_features`` feature rows kept for KID) and saved. ``progress(n)`` hears the images done so far."""
    path = reference_path(key, cache_dir)
    if path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        if cached.get("key") == key and len(cached["kid"]) >= min(kid_features, cached["n"]):
            return {**cached, "kid": cached["kid"][:kid_features], "path": str(path)}
    statistics, kept, n = FeatureStatistics(feature_dim, sync_on_compute=False), [], 0  # this process's images only
    for batch in chunks:
        f = extractor(batch).cpu()
        statistics.update(f)
        kept.append(f[: max(0, kid_features - n)].float())
        n += len(f)
        if progress is not None:
            progress(n)
    mu, cov = statistics.compute()
    result = {"mu": mu, "cov": cov, "kid": torch.cat(kept), "n": n, "key": key}
    atomic_save(result, path)
    return {**result, "path": str(path)}
