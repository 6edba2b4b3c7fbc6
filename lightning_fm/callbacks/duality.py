"""``DualityCheck``: the duality checks of docs/concepts/checks.md#checks on the model being trained (C1, C2, C4, C5,
C9, C12).

What runs depends on the module (duck-typed on the method names, so subclasses work too):

* a CFM model (``velocity(x, t)`` and ``path``): the exact identities of ``Phi(path)``, the space-time current of
  its path (:func:`~lightning_fm.duality.run_exact_checks`: C1, C2, C4, C5, C9, C12), plus the learned network's
  own identities: C4 round trip ``v -> f -> v`` on its outputs, C5 (each Euler step in t of the network = the
  Euler step in z of :class:`~lightning_fm.duality.VelocityAsField`, along its sampler's trajectories) and the C9
  guard of that field (``f_z > 0``: must be 0).
* a forward-only IFM model (``field_output(z, x)`` and a ``field`` with ``forward_only``, e.g.
  ``ForwardOnlyIFMModule``): the exact identities of its field (when it is the current of a path), C4 and the
  per-step C5 on the learned field seen as a velocity (:class:`~lightning_fm.duality.FieldAsVelocity`), and the
  learned guard C9 (diagnostic): the fraction of points, on the training distribution and along the sampler's
  lines, where the learned ``f_z <= 0`` (there the network cannot be read as a CFM velocity).
* an IFM model with a field that is not forward-only (``field.forward_only`` false: EFM, ``CoulombField``): only the
  checks that apply to such a field: C9 on the exact field behind the plates (the fraction of backward field, a
  diagnostic, expected > 0: its lines leave the slab, no CFM reproduces them), the learned guard and C12. The
  checks that need a forward-only field (C1, C2, C4, C5: :data:`SKIPPED_NOT_FORWARD_ONLY`) are skipped, and the
  callback says so once (an info message naming them; :attr:`DualityCheck.skipped`, ``duality/skipped_checks``).

The path/field identities depend only on the path and L, which never change during training: they are computed
once (at the first check) and logged again with every later check. The learned checks use ``n_points`` pairs
of the latest training batch and their own random generator (seeded with ``seed + global_step``): the training's
random state is untouched.

Every check is logged as ``duality/<check>`` (e.g. ``duality/C1_divergence_fp64``) to every logger of the trainer,
with ``duality/exact_failures`` (failed exact identities) and ``duality/overhead`` (time spent in this callback
divided by the time since the fit started). An *exact* identity that fails its tolerance warns
(``on_failure="warn"``) or stops training (``"stop"``: ``trainer.should_stop = True``) with a message naming the
check, its value and its tolerance; statistical and diagnostic rows never stop anything. The results of the last
run are in :attr:`DualityCheck.results` (and the whole history in :attr:`DualityCheck.history`).
"""

from __future__ import annotations

import re
import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from lightning_fm.duality import CheckResult
from lightning_fm.duality.checks.learned import field_checks, learned_cfm_checks, learned_ifm_checks, model_family

ON_FAILURE = ("warn", "stop")
#: the checks that need a forward-only field (the current of a path, read as a velocity), skipped on a field that is
#: not forward-only (EFM)
SKIPPED_NOT_FORWARD_ONLY = (
    "C1 divergence",
    "C2 unit flux",
    "C4 round trip",
    "C5 Euler step in z = in t",
)


def metric_name(check_name: str) -> str:
    """The metric key of a check: ``"C1 divergence (fp64)"`` -> ``"C1_divergence_fp64"``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", check_name).strip("_")


class DualityCheck(Callback):
    """Run the duality checks that apply to the module being trained, log them, act on failed exact identities.

    Args:
        every_n_steps: check after every this many optimiser steps (and after the first one); 0: only at
            validation ends.
        on_validation: also check at the end of every validation (not during the sanity check).
        on_failure: ``"warn"`` or ``"stop"`` (``trainer.should_stop = True``) when an exact identity fails.
        L: plate distance of the field of a CFM model (``Phi(path)`` with ``t = z/L``); IFM models use their own.
        n_points: training pairs used by the learned checks (and points of the path checks).
        steps: Euler steps of the learned C5 and of the sampler lines of the learned C9.
        max_dim: the path identities are checked on a Gaussian toy of dimension ``min(data dim, max_dim)`` (they
            hold in every dimension; C1 costs one autograd pass per dimension).
        seed: base seed of the checks' own random generator.

    Its cost relative to training is logged as ``duality/overhead``.
    """

    def __init__(
        self,
        every_n_steps: int = 500,
        on_validation: bool = True,
        on_failure: str = "warn",
        L: float | None = None,
        n_points: int = 256,
        steps: int = 20,
        max_dim: int = 8,
        seed: int = 0,
    ) -> None:
        if on_failure not in ON_FAILURE:
            raise ValueError(f"DualityCheck.on_failure must be one of {list(ON_FAILURE)}, got {on_failure!r}")
        if every_n_steps < 0 or n_points < 2 or steps < 1 or max_dim < 1:
            raise ValueError("DualityCheck needs every_n_steps >= 0, n_points >= 2, steps >= 1, max_dim >= 1")
        if L is not None and not float(L) > 0:
            raise ValueError(f"DualityCheck.L must be > 0, got {L}")
        self.every_n_steps, self.on_validation, self.on_failure = int(every_n_steps), on_validation, on_failure
        self.L, self.n_points, self.steps, self.max_dim, self.seed = L, int(n_points), int(steps), max_dim, seed
        self.results: list[CheckResult] = []
        self.history: list[tuple[int, str, list[CheckResult]]] = []
        self.failures: list[tuple[int, CheckResult]] = []
        self.overhead = 0.0
        self.seconds = 0.0
        self._static: list[CheckResult] | None = None
        self._pairs: tuple[Tensor, Tensor] | None = None
        self._fit_start: float | None = None
        self._last_step = -1
        self._warned: set[str] = set()
        self.skipped: list[str] = []

    # -- timing ------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._fit_start = time.perf_counter()
        self.seconds, self.overhead = 0.0, 0.0
        self._static, self._pairs, self._last_step = None, None, -1

    def _update_overhead(self) -> float:
        if self._fit_start is not None:
            elapsed = time.perf_counter() - self._fit_start
            self.overhead = self.seconds / elapsed if elapsed > 0 else 0.0
        return self.overhead

    # -- hooks -------------------------------------------------------------------------------------------------
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        start = time.perf_counter()
        if isinstance(batch, dict) and "x0" in batch and "x1" in batch:
            self._pairs = (batch["x0"][: self.n_points], batch["x1"][: self.n_points])
        step = trainer.global_step
        due = step != self._last_step and (
            self._static is None or (self.every_n_steps > 0 and step % self.every_n_steps == 0)
        )
        self.seconds += time.perf_counter() - start
        if due:
            self._last_step = step
            self.run(trainer, pl_module, "train")

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.on_validation and not trainer.sanity_checking and trainer.state.fn == "fit":
            self.run(trainer, pl_module, "validation")

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        metrics = {"duality/overhead": self._update_overhead()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._update_overhead()

    # -- the work ----------------------------------------------------------------------------------------------
    def _plate_distance(self, pl_module: Any) -> float:
        if model_family(pl_module) == "ifm":
            return float(pl_module.L)
        return 1.0 if self.L is None else float(self.L)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)

    def _note_skipped(self, pl_module: Any) -> None:
        """On a field that is not forward-only: record (and say once) which checks do not apply."""
        if self.skipped:
            return
        self.skipped = list(SKIPPED_NOT_FORWARD_ONLY)
        rank_zero_info(
            f"DualityCheck: the field of {type(pl_module).__name__} ({type(pl_module.field).__name__}) is not "
            "forward-only (field.forward_only is False, e.g. EFM): only the checks that apply run (C9: the fraction "
            "of backward field behind the plates and the learned guard f_z<=0; C12); skipped: "
            + ", ".join(self.skipped)
        )

    def compute(self, pl_module: Any, step: int) -> list[CheckResult]:
        """All checks for ``pl_module`` at ``step`` on the stored training pairs (no logging, no action)."""
        family = model_family(pl_module)
        if family == "ifm" and not getattr(pl_module.field, "forward_only", False):
            self._note_skipped(pl_module)
        if family is None:
            self._warn_once(
                "family",
                f"DualityCheck: {type(pl_module).__name__} is neither a CFM model (velocity, "
                "path) nor an IFM model (field_output, field): nothing to check",
            )
            return []
        if self._pairs is None:
            self._warn_once("batch", "DualityCheck: the training batches have no 'x0'/'x1': learned checks skipped")
            return list(self._static or [])
        x0, x1 = (v.detach() for v in self._pairs)
        L = self._plate_distance(pl_module)
        g = torch.Generator().manual_seed(self.seed + step)
        if self._static is None:
            dim = min(x0[0].numel(), self.max_dim)
            flat0, flat1 = x0.flatten(1)[:, :dim].cpu(), x1.flatten(1)[:, :dim].cpu()
            self._static = field_checks(pl_module, flat0, flat1, L, dim, self.n_points, g)
        was_training = pl_module.training
        pl_module.eval()
        try:
            check = learned_cfm_checks if family == "cfm" else learned_ifm_checks
            learned = check(pl_module, x0, x1, L, self.steps, g)
        finally:
            pl_module.train(was_training)
        return [*self._static, *learned]

    def run(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> list[CheckResult]:
        """Compute, log, and warn or stop on a failed exact identity."""
        start = time.perf_counter()
        step = trainer.global_step
        results = self.compute(pl_module, step)
        self.results = results
        self.history.append((step, stage, results))
        failed = [r for r in results if r.kind == "exact" and not r.passed]
        self.failures.extend((step, r) for r in failed)
        metrics = {f"duality/{metric_name(r.name)}": float(r.value) for r in results}
        metrics["duality/exact_failures"] = float(len(failed))
        if self.skipped:
            metrics["duality/skipped_checks"] = float(len(self.skipped))
        for r in failed:
            action = "stopping training (on_failure='stop')" if self.on_failure == "stop" else "training goes on"
            message = (
                f"DualityCheck: exact identity '{r.name}' failed at step {step} ({stage}): value "
                f"{r.value:.3e} > tolerance {r.tolerance:.3e}; {action}"
            )
            if self.on_failure == "stop":
                rank_zero_warn(message)
            else:
                self._warn_once(f"fail:{r.name}", message)
        if self.on_failure == "stop":
            stop = trainer.strategy.reduce_boolean_decision(bool(failed), all=False)
            if stop:
                trainer.should_stop = True
        self.seconds += time.perf_counter() - start
        metrics["duality/overhead"] = self._update_overhead()
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        return results
