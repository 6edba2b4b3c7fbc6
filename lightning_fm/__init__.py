"""lightning_fm: Conditional Flow Matching, Interaction Field Matching and their duality, on PyTorch Lightning.

The maths (``paths``, ``couplings``, ``sampling``, ``fields``, ``duality``, ``metrics``, ``utils``) is pure torch
(``metrics`` also uses torchmetrics' ``Metric`` for its DDP-aware accumulation) and imports no Lightning;
``models`` are plain ``nn.Module`` backbones; ``modules``, ``data``, ``callbacks``, ``experiments`` and ``cli`` are
the Lightning glue.
"""

__version__ = "0.1.0"
