"""The framework's disk cache (trained metric classifiers, FID reference statistics): where it is, and writes that
never leave a half-written file."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

CACHE_ENV = "LIGHTNING_FM_CACHE"


def default_cache_dir() -> Path:
    """``$LIGHTNING_FM_CACHE`` if set, else ``~/.cache/lightning_fm``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "lightning_fm")


def cache_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir()


def settings_digest(settings: dict[str, Any]) -> str:
    """SHA-256 of the settings as sorted JSON: a cache key that changes with any setting."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()


def atomic_save(payload: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then a rename (concurrent writers are safe)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
