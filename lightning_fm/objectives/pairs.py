"""A training batch's coupled pairs: this process's rows and the charges of the global batch (all processes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from lightning_fm.couplings import Coupling

#: ``gather(tensor) -> (world, *tensor.shape)``: every process's copy of a tensor (``LightningModule.all_gather``)
Gather = Callable[[Tensor], Tensor]


@dataclass
class Pairs:
    """This process's coupled pairs ``(x0, x1)`` with their labels, and the pairs of the GLOBAL batch (all
    processes) with their target labels for superpositions; ``offset`` is the global index of this process's first
    row."""

    x0: Tensor
    x1: Tensor
    y0: Tensor | None
    y1: Tensor | None
    all_x0: Tensor
    all_x1: Tensor
    offset: int = 0
    all_y1: Tensor | None = None


def couple(
    coupling: Coupling, batch: dict[str, Tensor], gather: Gather | None = None, rank: int = 0, step: int = 0
) -> Pairs:
    """Pair the batch's ``x0``, ``x1`` (and labels ``y0``, ``y1``) with ``coupling``. With ``gather`` (several
    processes) over the GLOBAL batch: every process gathers all processes' samples and labels, computes the same plan
    (a generator seeded with the training ``step``) and keeps its own rows (``rank``); the global pairs are returned
    too, as the charges of a superposition."""
    x0, x1, y0, y1 = batch["x0"], batch["x1"], batch.get("y0"), batch.get("y1")
    if gather is None:
        x0, x1, y0, y1 = coupling(x0, x1, y0, y1)
        return Pairs(x0, x1, y0, y1, x0, x1, all_y1=y1)
    n = x0.shape[0]
    # gathered in this order on every rank (collectives)
    all_x0, all_x1 = (gather(v).flatten(0, 1) for v in (x0, x1))
    all_y0, all_y1 = (None if v is None else gather(v).flatten(0, 1) for v in (y0, y1))
    generator = torch.Generator().manual_seed(int(step))  # identical plans on every rank
    g0, g1, gy0, gy1 = coupling(all_x0, all_x1, all_y0, all_y1, generator=generator)
    local = slice(rank * n, (rank + 1) * n)
    pick = lambda v: None if v is None else v[local]  # noqa: E731
    return Pairs(g0[local], g1[local], pick(gy0), pick(gy1), g0, g1, rank * n, gy1)


def superposition_groups(
    row_groups: Tensor, charge_groups: Tensor, row_labels: Tensor | None, charge_labels: Tensor | None, null_class: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """The superpositions of a batch's targets, as ``(rows, charges)`` boolean masks: a row superposes the charges
    (pairs) of its own group and, when it carries a class ``c`` (a class-conditional model; not the null class of a
    dropped label), only the charges of class ``c``: the class-conditional field (or posterior) that the network
    given ``c`` must learn, while a null row learns the unconditional one over all classes. One superposition per
    (group, class) present."""
    labelled = row_labels is not None and charge_labels is not None
    keys = row_groups * (null_class + 1) + row_labels if labelled and row_labels is not None else row_groups
    for key in torch.unique(keys).tolist():
        group, label = divmod(key, null_class + 1) if labelled else (key, null_class)
        charges = charge_groups == group
        if label != null_class:
            charges = charges & (charge_labels == label)
        yield keys == key, charges
