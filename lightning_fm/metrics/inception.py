"""Inception v3 features for FID and KID: torch-fidelity's ``FeatureExtractorInceptionV3`` with the 2015-12-05
TensorFlow weights that FID is defined with (the network of TTUR, clean-fid and torchmetrics). Pure torch, no
Lightning.

Images ``(B, C, H, W)`` in [-1, 1] become uint8 as torchcfm's FID script makes them, ``(x * 127.5 + 128).clip(0,
255)`` truncated (grey images are repeated to three channels); torch-fidelity resizes the uint8 images to 299x299
with its TensorFlow-1-compatible bilinear interpolation (the reference resize, not torchmetrics' default
``antialias=True`` one) and returns the 2048 pooled features.

Weights never come from the network here: ``weights_path``, else torch hub's cache
``<torch hub dir>/checkpoints/weights-inception-2015-12-05-6726825d.pth`` (where torch-fidelity's own download
puts them); without either a ``FileNotFoundError`` says which file to fetch and where to put it.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from pathlib import Path

import torch
from torch import Tensor, nn

WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{WEIGHTS_FILE}"
#: the first hex digits of the reference file's sha256 (torch hub's naming convention)
WEIGHTS_SHA256_PREFIX = "6726825d"
RESIZE = "torch-fidelity TF1-compatible bilinear, uint8 -> 299x299"
TO_UINT8 = "(x * 127.5 + 128).clip(0, 255) truncated to uint8 (torchcfm's compute_fid.py)"


def default_weights_path() -> Path:
    """Where torch hub (and torch-fidelity's download) keeps the weights: ``<torch.hub.get_dir()>/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def resolve_weights(weights_path: str | None) -> Path:
    """The weights file to load, or a FileNotFoundError naming the file, the URL and the folder."""
    path = Path(weights_path).expanduser() if weights_path else default_weights_path()
    if path.is_file():
        return path
    if weights_path:
        raise FileNotFoundError(
            f"FID weights_path={weights_path!r}: no such file (the Inception v3 weights of "
            f"FID, {WEIGHTS_FILE}, from {WEIGHTS_URL})"
        )
    raise FileNotFoundError(
        f"the Inception v3 weights of FID are not in torch hub's cache: download {WEIGHTS_URL} to {path} (e.g. "
        f"`mkdir -p {path.parent} && curl -L -o {path} {WEIGHTS_URL}`), or give the file's path as weights_path"
    )


def to_uint8(images: Tensor) -> Tensor:
    """Images in [-1, 1] as uint8 RGB ``(B, 3, H, W)`` (see the module docstring)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"FID takes images (B, 1 or 3, H, W), got {tuple(images.shape)}")
    u8 = (images.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return u8.expand(-1, 3, -1, -1) if u8.shape[1] == 1 else u8


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class InceptionFeatures(nn.Module):
    """``features(images in [-1, 1]) -> (B, 2048)`` float32 Inception v3 pool features (module docstring).

    Args:
        weights_path: the weights file (None: torch hub's cache, :func:`default_weights_path`).
        batch_size: images per forward pass.
    """

    feature_dim = 2048

    def __init__(self, weights_path: str | None = None, batch_size: int = 200) -> None:
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        self.weights_path = resolve_weights(weights_path)
        self.batch_size = int(batch_size)
        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048"], feature_extractor_weights_path=str(self.weights_path)
        )

    @cached_property
    def weights_sha256(self) -> str:
        return file_sha256(self.weights_path)

    @property
    def reference_weights(self) -> bool:
        """Whether the file is the reference one (its sha256 starts as the published name says): only then are the
        numbers comparable with published FIDs."""
        return self.weights_sha256.startswith(WEIGHTS_SHA256_PREFIX)

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        device = next(self.net.parameters()).device
        parts = [
            self.net(to_uint8(images[i : i + self.batch_size]).to(device))[0]
            for i in range(0, len(images), self.batch_size)
        ]
        return torch.cat(parts).float()

    def settings(self) -> dict:
        """What a FID number depends on in this extractor (written next to every number)."""
        import torch_fidelity

        return {
            "extractor": "torch-fidelity FeatureExtractorInceptionV3 (inception-v3-compat), 2048 pool features",
            "weights": str(self.weights_path),
            "weights_sha256": self.weights_sha256,
            "reference_weights": self.reference_weights,
            "resize": RESIZE,
            "to_uint8": TO_UINT8,
            "torch_fidelity": torch_fidelity.__version__,
        }
