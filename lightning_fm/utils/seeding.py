"""Seeds derived from tuples of integers, so that every (seed, stream, epoch, rank, step) has its own generator."""

from __future__ import annotations

import numpy as np
import torch


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from a tuple of non-negative ints (numpy's SeedSequence hash: distinct tuples of the same
    length give unrelated seeds). Used for the ``(seed, stream, epoch, rank, step)`` seeds of the DataModules."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1, np.uint64)[0]) & (2**63 - 1)


def make_generator(*keys: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`derive_seed` of ``keys``."""
    return torch.Generator().manual_seed(derive_seed(*keys))


def numpy_seed(generator: torch.Generator) -> int:
    """A numpy/scikit-learn seed drawn from a torch generator (so that the torch generator alone fixes the output)."""
    return int(torch.randint(0, 2**32 - 1, (1,), generator=generator))
