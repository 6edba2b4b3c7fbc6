"""lightning_fm: Conditional Flow Matching, Interaction Field Matching and their duality, on PyTorch Lightning.

The maths (``paths``, ``couplings``, ``sampling``, ``fields``, ``duality``, ``likelihood``, ``metrics``,
``objectives``, ``models``) is pure torch and imports no Lightning (``metrics`` uses torchmetrics' ``Metric`` for its
DDP-aware accumulation); ``modules``, ``data``, ``callbacks``, ``loggers``, ``experiments`` and ``cli`` are the
Lightning glue. Importing the package changes no process-wide setting: the command line applies those
(:mod:`lightning_fm.runtime`).
"""

__version__ = "0.1.0"
