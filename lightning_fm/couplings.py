"""Couplings ``pi(x0, x1)``: how the source and target samples of a batch are paired
(docs/concepts/flow-matching.md#couplings).

A coupling takes a batch of source samples ``x0 (B0, *dims)`` and of target samples ``x1 (B1, *dims)`` (independent
draws from P and Q) and returns pairs ``(x0[i], x1[j(i)])``, one per source row; the labels ``y0``, ``y1`` (class
ids, conditioning, or None) follow their samples. Pure torch (+ POT and SciPy for the transport plans).

Distributed training: the LightningModule gathers the global batch from all processes before it calls the coupling
(and keeps its own shard afterwards), so the plan is the OT plan of the global batch, not of each GPU's shard. That is
done by the module, not here: a coupling only ever sees the tensors it is given.
"""

from __future__ import annotations

import math
import warnings
from abc import ABC, abstractmethod
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from lightning_fm.utils.spec import Buildable


class Coupled(NamedTuple):
    """Re-paired batches: ``x0[i]`` is paired with ``x1[i]``; ``y0``, ``y1`` are their labels (or None)."""

    x0: Tensor
    x1: Tensor
    y0: Tensor | None
    y1: Tensor | None


def _check_batches(x0: Tensor, x1: Tensor, y0: Tensor | None, y1: Tensor | None) -> None:
    if x0.shape[1:] != x1.shape[1:]:
        raise ValueError(
            f"source x0 {tuple(x0.shape)} and target x1 {tuple(x1.shape)} must have the same per-sample shape"
        )
    for name, y, x in (("y0", y0, x0), ("y1", y1, x1)):
        if y is not None and y.shape[0] != x.shape[0]:
            raise ValueError(f"labels {name} have {y.shape[0]} rows but their samples have {x.shape[0]}")


class Coupling(Buildable, ABC):
    """Base class: ``coupling(x0, x1, y0=None, y1=None, generator=None) -> Coupled`` (labels follow their samples;
    random draws, if any, use ``generator``, a CPU ``torch.Generator``)."""

    @abstractmethod
    def __call__(
        self,
        x0: Tensor,
        x1: Tensor,
        y0: Tensor | None = None,
        y1: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Coupled:
        """Pair the rows of ``x0`` with rows of ``x1``."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.init_args.items())
        return f"{type(self).__name__}({args})"


class IndependentCoupling(Coupling):
    """``pi = P (x) Q``: the batches are independent draws already, so ``x0[i]`` is paired with ``x1[i]`` as given."""

    def __init__(self) -> None:
        pass

    def __call__(
        self,
        x0: Tensor,
        x1: Tensor,
        y0: Tensor | None = None,
        y1: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Coupled:
        _check_batches(x0, x1, y0, y1)
        return Coupled(x0, x1, y0, y1)


class KeepPairs(IndependentCoupling):
    """The batch is a coupling already: ``x0[i]`` stays paired with ``x1[i]`` (and ``y0[i]``, ``y1[i]`` with them),
    never re-paired within the batch. For data that come in pairs, such as a teacher's ``(x0, x1 = teacher(x0))``
    in reflow (:class:`~lightning_fm.data.TeacherPairsDataModule`, docs/guides/reflow.md): the plan is the pairs'
    joint law, ``pi(x0, x1) = P(x0) delta(x1 - T(x0))`` for a teacher's map ``T``. It returns what
    :class:`IndependentCoupling` returns, but says that the pairing matters and checks that there is one target per
    source (a re-pairing coupling such as :class:`OTCoupling` would discard the teacher's pairs)."""

    def __call__(self, x0, x1, y0=None, y1=None, generator=None):
        if x0.shape[0] != x1.shape[0]:
            raise ValueError(
                f"KeepPairs keeps the batch's pairs, one target per source, but got {x0.shape[0]} source and "
                f"{x1.shape[0]} target samples"
            )
        return super().__call__(x0, x1, y0, y1, generator)


OT_METHODS = ("exact", "sinkhorn")


class OTCoupling(Coupling):
    """Minibatch optimal transport (OT-CFM; entropic for SB-CFM) with the squared Euclidean cost.

    The cost of the flattened samples is ``M_ij = ||x0_i - x1_j||^2`` (divided by ``max_ij M_ij`` when
    ``normalize_cost``), computed on the inputs' device in at least float32 and solved in float64 on the CPU; the
    outputs stay on the inputs' device and dtype (rows are re-indexed, so gradients, if any, flow through). With
    uniform marginals
    ``a = 1/B0``, ``b = 1/B1``:

    * ``method="exact"``: ``P* = argmin_{P in U(a, b)} <P, M>``. For equal batch sizes ``P*`` is a permutation matrix
      (Birkhoff): ``ot.emd``'s network simplex ends on one, the permutation is read off it
      (``scipy.optimize.linear_sum_assignment`` should the solver stop early): x0 stays in order and x1 (with y1) is
      permuted, every target row used once. For unequal sizes ``P* = ot.emd(a, b, M)`` and each source row i draws its
      partner ``j ~ P*_ij / sum_j P*_ij``.
    * ``method="sinkhorn"``: ``P = argmin_{P in U(a, b)} <P, M> - reg H(P)`` (``ot.sinkhorn`` in the log domain,
      stable for small reg), then ``j ~ P_ij / sum_j P_ij`` for each source row. ``reg -> 0`` recovers the exact plan,
      ``reg -> inf`` the independent coupling. SB-CFM with ``BrownianBridgePath(sigma)`` uses ``reg = 2 sigma^2``
      (with ``normalize_cost=False``).

    ``within_class=True`` pairs samples only inside a class: the plan above is computed separately for each class
    c between the source rows of class c and the target rows of class c (``y1`` is required; with ``y0=None``, a
    source without classes such as noise, the source rows are split into consecutive groups with the class counts
    of ``y1``: class-conditional OT-CFM, each class transported from its own share of the noise). A source class
    with no target sample in the batch raises an error.

    Args:
        method: "exact" or "sinkhorn".
        reg: entropic regularisation (sinkhorn only; > 0), in units of the (possibly normalised) cost.
        normalize_cost: divide the cost matrix by its maximum (makes ``reg`` scale-free).
        max_iter, stop_thr: Sinkhorn stops after ``max_iter`` iterations (POT's ``numItermax``, with a warning) or once
            the marginal error is below ``stop_thr`` (POT's ``stopThr``).
        within_class: pair only samples of the same class (see above).

    Random draws use ``generator`` (a CPU ``torch.Generator``) when one is passed to ``__call__``.
    """

    def __init__(
        self,
        method: str = "exact",
        reg: float = 0.05,
        normalize_cost: bool = False,
        max_iter: int = 1000,
        stop_thr: float = 1e-6,
        within_class: bool = False,
    ) -> None:
        if method not in OT_METHODS:
            raise ValueError(f"OTCoupling.method must be one of {list(OT_METHODS)}, got {method!r}")
        reg = float(reg)
        if method == "sinkhorn" and not (math.isfinite(reg) and reg > 0):
            raise ValueError(f"OTCoupling.reg must be > 0 and finite for method='sinkhorn', got {reg}")
        if int(max_iter) < 1:
            raise ValueError(f"OTCoupling.max_iter must be >= 1, got {max_iter}")
        if not float(stop_thr) > 0:
            raise ValueError(f"OTCoupling.stop_thr must be > 0, got {stop_thr}")
        self.method, self.reg, self.normalize_cost = method, reg, bool(normalize_cost)
        self.max_iter, self.stop_thr = int(max_iter), float(stop_thr)
        self.within_class = bool(within_class)

    # -- the plan ------------------------------------------------------------------------------------------------
    def cost_matrix(self, x0: Tensor, x1: Tensor) -> Tensor:
        """``M_ij = ||x0_i - x1_j||^2`` on flattened samples, ``(B0, B1)``: computed on the inputs' device in their
        dtype (at least float32; the ``B x D`` products are the costly part, and a GPU keeps them), then float64 on
        the CPU for the solver."""
        work = torch.promote_types(x0.dtype, torch.float32)
        a = x0.detach().reshape(x0.shape[0], -1).to(work)
        b = x1.detach().reshape(x1.shape[0], -1).to(work)
        cost = (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2.0 * (a @ b.T)).clamp_min_(0.0)
        cost = cost.to(device="cpu", dtype=torch.float64)
        if self.normalize_cost:
            top = cost.max()
            if top > 0:
                cost = cost / top
        return cost

    def plan(self, cost: Tensor) -> Tensor:
        """Transport plan ``(B0, B1)`` (float64, CPU) with uniform marginals, for the configured method."""
        import ot  # POT: imported lazily, it is slow to import

        cost = cost.to(device="cpu", dtype=torch.float64)
        if self.method == "exact":
            plan, problem = self.exact_plan(cost)
            if problem:
                warnings.warn(
                    f"OTCoupling: ot.emd stopped before the optimum ({problem})", RuntimeWarning, stacklevel=3
                )
            return plan
        n0, n1 = cost.shape
        a = torch.full((n0,), 1.0 / n0, dtype=torch.float64)
        b = torch.full((n1,), 1.0 / n1, dtype=torch.float64)
        # Plain (multiplicative) Sinkhorn in float64 numpy is much faster than the log-domain iterations, and exact
        # as long as the Gibbs kernel exp(-M/reg) does not underflow: every row and column must keep an entry
        # above ~1e-300, i.e. min cost / reg < 690. Otherwise the log-domain iterations. Both run on POT's numpy
        # backend (its torch backend is disabled, see lightning_fm/__init__.py).
        stable = max(cost.min(1).values.max().item(), cost.min(0).values.max().item()) / self.reg < 690
        method = "sinkhorn" if stable else "sinkhorn_log"
        plan = ot.sinkhorn(
            a.numpy(), b.numpy(), cost.numpy(), self.reg, method=method, numItermax=self.max_iter, stopThr=self.stop_thr
        )
        return torch.from_numpy(np.asarray(plan, dtype=np.float64))

    @staticmethod
    def exact_plan(cost: Tensor) -> tuple[Tensor, str | None]:
        """``ot.emd``'s plan with uniform marginals (float64, CPU) and, where the solver stopped before the optimum,
        why (else None; POT's own warning is not repeated). Its iteration cap is raised to ``50 B0 B1``: POT's
        default stops early from a few thousand points."""
        import ot

        n0, n1 = cost.shape
        a, b = np.full(n0, 1.0 / n0), np.full(n1, 1.0 / n1)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="numItermax reached before optimality")
            plan, log = ot.emd(a, b, cost.numpy(), numItermax=max(100_000, 50 * n0 * n1), log=True)
        problem = None if log["result_code"] == 1 else str(log["warning"])  # 1: optimal
        return torch.from_numpy(np.asarray(plan, dtype=np.float64)), problem

    def _draw(self, plan: Tensor, generator: torch.Generator | None) -> Tensor:
        """For each row i a column ``j ~ plan[i] / plan[i].sum()`` (CPU int64 ``(B0,)``)."""
        rows = plan.sum(1, keepdim=True)
        bad = ~torch.isfinite(plan).all(1, keepdim=True) | (rows <= 0)
        if bool(bad.any()):
            warnings.warn(
                f"OTCoupling: {int(bad.sum())} rows of the {self.method} plan are not finite or empty "
                f"(reg={self.reg} too small?); pairing those rows uniformly at random",
                RuntimeWarning,
                stacklevel=3,
            )
            plan = torch.where(bad, torch.ones_like(plan), plan)
        # inverse-CDF draw, j with cdf[j-1] <= u < cdf[j] (right=True: never a column of zero mass); a single
        # uniform per row, cheaper than torch.multinomial
        cdf = plan.cumsum(1)
        u = torch.rand(plan.shape[0], 1, dtype=cdf.dtype, generator=generator) * cdf[:, -1:]
        return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_max_(plan.shape[1] - 1)

    # -- pairing -------------------------------------------------------------------------------------------------
    def partners(self, x0: Tensor, x1: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """For each row i of ``x0`` its partner ``j(i)`` in ``x1`` (CPU int64 ``(B0,)``): a permutation from the
        exact plan of equal batches, else a draw from each row of the plan."""
        cost = self.cost_matrix(x0, x1)
        if self.method == "exact" and x0.shape[0] == x1.shape[0]:
            # ot.emd's network simplex ends on a vertex of the Birkhoff polytope, a permutation matrix / B: read the
            # permutation off it; should the solver stop early, solve the assignment directly
            plan, problem = self.exact_plan(cost)
            j = plan.argmax(1)
            if problem is None and torch.unique(j).numel() == j.numel():
                return j
            from scipy.optimize import linear_sum_assignment

            rows, cols = linear_sum_assignment(cost.numpy())
            j = torch.empty(x0.shape[0], dtype=torch.int64)
            j[torch.from_numpy(rows)] = torch.from_numpy(cols).to(torch.int64)
            return j
        return self._draw(self.plan(cost), generator)

    def _partners_within_class(
        self, x0: Tensor, x1: Tensor, y0: Tensor | None, y1: Tensor | None, generator: torch.Generator | None
    ) -> Tensor:
        if y1 is None:
            raise ValueError("OTCoupling(within_class=True) needs the target labels y1 (the batch has none)")
        y1 = y1.detach().cpu()
        if y0 is None:  # a source without classes (noise): consecutive groups with the class counts of y1
            if x0.shape[0] != x1.shape[0]:
                raise ValueError(
                    "OTCoupling(within_class=True) without source labels needs equal batch sizes, got "
                    f"{x0.shape[0]} source and {x1.shape[0]} target samples"
                )
            y0 = torch.sort(y1).values
        y0 = y0.detach().cpu()
        j = torch.empty(x0.shape[0], dtype=torch.int64)
        for c in torch.unique(y0).tolist():
            rows, cols = (y0 == c).nonzero().squeeze(1), (y1 == c).nonzero().squeeze(1)
            if cols.numel() == 0:
                raise ValueError(
                    f"OTCoupling(within_class=True): class {c} has {rows.numel()} source samples but no "
                    "target sample in this batch: source and target labels must share their classes "
                    "(e.g. a noise source without labels), and batches must hold every class"
                )
            j[rows] = cols[self.partners(x0[rows.to(x0.device)], x1[cols.to(x1.device)], generator)]
        return j

    def __call__(
        self,
        x0: Tensor,
        x1: Tensor,
        y0: Tensor | None = None,
        y1: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Coupled:
        """Pair each ``x0[i]`` with ``x1[j(i)]`` according to the plan (x0 and y0 stay in order)."""
        _check_batches(x0, x1, y0, y1)
        if x0.shape[0] == 0 or x1.shape[0] == 0:
            if x0.shape[0] != x1.shape[0]:
                raise ValueError(f"cannot pair {x0.shape[0]} source with {x1.shape[0]} target samples")
            return Coupled(x0, x1, y0, y1)
        if self.within_class:
            j = self._partners_within_class(x0, x1, y0, y1, generator)
        else:
            j = self.partners(x0, x1, generator)
        yj = None if y1 is None else y1[j.to(y1.device)]
        return Coupled(x0, x1[j.to(x1.device)], y0, yj)


COUPLINGS = {"independent": IndependentCoupling, "ot": OTCoupling, "keep": KeepPairs}
