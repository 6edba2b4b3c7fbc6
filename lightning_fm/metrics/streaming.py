"""Metrics that accumulate over evaluation batches and over processes (torchmetrics ``Metric`` objects).

Under DDP each process sees its share of the evaluation data; ``compute()`` gathers the states of all processes
first, so a distance between sample sets is the distance between the *unions* of the sets (not an average of
per-process distances): 1 and N processes report the same number for the same samples.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from lightning_fm.metrics.distances import wasserstein2


class SampleW2(Metric):
    """Exact W2 between the union of all ``samples`` and the union of all ``reference`` batches given to
    :meth:`update` (over batches and processes), on at most ``max_samples`` of each (exact EMD has cubic cost).

    Each process keeps its first ``max_samples`` rows of each side; after the gather the first ``max_samples`` of the
    union are used. Below the cap the result does not depend on the number of processes or the batch order (W2 of
    empirical measures is invariant under permutations). NaN when a kept sample is not finite, or when there is no
    sample at all (every field line of the pass stopped before the target plate: their count is logged beside it).
    """

    full_state_update = False
    higher_is_better = False
    # the states (add_state): lists of batches on each process (compute's dim_zero_cat also takes the gathered tensor)
    samples: list[Tensor]
    reference: list[Tensor]

    def __init__(self, max_samples: int = 5000) -> None:
        super().__init__()
        if int(max_samples) != max_samples or max_samples < 2:
            raise ValueError(f"SampleW2.max_samples must be an integer >= 2, got {max_samples!r}")
        self.max_samples = int(max_samples)
        self.add_state("samples", default=[], dist_reduce_fx="cat")
        self.add_state("reference", default=[], dist_reduce_fx="cat")

    def _room(self, kept: list[Tensor]) -> int:
        return self.max_samples - sum(len(k) for k in kept)

    def update(self, samples: Tensor, reference: Tensor) -> None:
        for state, value in ((self.samples, samples), (self.reference, reference)):
            room = self._room(state)
            if room > 0:
                state.append(value.detach()[:room].flatten(1))

    def compute(self) -> Tensor:
        samples, reference = dim_zero_cat(self.samples), dim_zero_cat(self.reference)
        if len(samples) == 0 or len(reference) == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        value = wasserstein2(samples[: self.max_samples], reference[: self.max_samples])
        return torch.tensor(value, dtype=torch.float64)
