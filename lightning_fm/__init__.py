"""lightning_fm: Conditional Flow Matching, Interaction Field Matching and their duality, on PyTorch Lightning.

The maths (``paths``, ``couplings``, ``sampling``, ``fields``, ``duality``, ``metrics``, ``utils``) is pure torch
(``metrics`` also uses torchmetrics' ``Metric`` for its DDP-aware accumulation) and imports no Lightning;
``models`` are plain ``nn.Module`` backbones; ``modules``, ``data``, ``callbacks``, ``experiments`` and ``cli`` are
the Lightning glue.
"""

import os

# POT's torch backend, when imported, creates tensors on every visible GPU: under DDP each process would open a CUDA
# context on GPU 0. The framework calls POT with numpy arrays only, so the backend is disabled before POT is imported.
os.environ.setdefault("POT_BACKEND_DISABLE_PYTORCH", "1")

__version__ = "0.1.0"
