"""The one command line the benchmarks train a shipped config with: ``python -m lightning_fm fit -c CONFIG``."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def fit_command(config: str, *args: str) -> list[str]:
    """``fit -c <repo>/config`` without a progress bar (the benchmarks capture the output), then ``args``."""
    return [
        sys.executable,
        "-m",
        "lightning_fm",
        "fit",
        "-c",
        str(REPO / config),
        "--trainer.enable_progress_bar=false",
        *args,
    ]
