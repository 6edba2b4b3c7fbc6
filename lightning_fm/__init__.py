"""lightning_fm: Conditional Flow Matching, Interaction Field Matching and their duality, on PyTorch Lightning.

The maths (``paths``, ``couplings``, ``solvers``, ``fields``, ``duality``) is pure torch and imports no Lightning;
``modules``, ``data``, ``callbacks`` and ``cli`` are the Lightning glue.
"""

__version__ = "0.1.0"
