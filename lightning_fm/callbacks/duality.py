"""``DualityCheck``: the duality checks of MATH.md §9 on the model being trained (C1, C2, C4, C5, C9, C12).

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
* an IFM model with a field that is not forward-only (EFM, ``CoulombField``): C9 on the exact field behind the
  plates (a diagnostic, expected > 0: its lines leave the slab, no CFM reproduces them) and the learned guard.

The path/field identities depend only on the path and L, which never change during training: they are computed
once (first check, about 0.3 s) and logged again with every later check. The learned checks use ``n_points`` pairs
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
from dataclasses import replace
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_fm.duality import (
    CheckResult,
    FieldAsVelocity,
    VelocityAsField,
    check_forward_only,
    check_poisson_kernel,
    check_round_trip,
    run_exact_checks,
    velocity_from_field,
)
from lightning_fm.duality.checks import TRAJECTORY_TOL
from lightning_fm.field_lines import integrate_field_lines
from lightning_fm.solvers import integrate

ON_FAILURE = ("warn", "stop")


def metric_name(check_name: str) -> str:
    """The metric key of a check: ``"C1 divergence (fp64)"`` -> ``"C1_divergence_fp64"``."""
    return re.sub(r"[^0-9A-Za-z]+", "_", check_name).strip("_")


def model_family(module: Any) -> str | None:
    """``"cfm"`` (a velocity model with a path), ``"ifm"`` (a field model), or None (nothing to check)."""
    if hasattr(module, "velocity") and hasattr(module, "path") and not hasattr(module, "field_output"):
        return "cfm"
    if hasattr(module, "field_output") and hasattr(module, "field"):
        return "ifm"
    return None


# -- checks on a learned network (also used by lightning_fm.duality_experiment) -------------------------------
def euler_step_identity(velocity_fn, field_fn, z_grid: Tensor, trajectory: Tensor, L: float, name: str,
                        flag_fz: float = 1e-3) -> CheckResult:
    """C5 on a learned network, one step at a time: from every point ``x_k`` of a recorded sampler path at
    ``z_k = t_k L``, one Euler step in t of ``velocity_fn`` (:func:`lightning_fm.solvers.integrate`, ``dt``) and one
    Euler step in z of ``field_fn`` (:func:`lightning_fm.field_lines.integrate_field_lines`, ``dz = L dt``) land on
    the same point (MATH.md §6.3: the z-Euler step *is* the t-Euler step). Value: the largest
    ``|x_z - x_t| / (1 + max(|x_k|, |x_t|))`` over the points (rounding of ``x + h s`` is relative to the size of
    both terms); tolerance 1e-5 (fp32), 1e-12 (fp64).

    Unlike whole trajectories (where a steep, e.g. untrained, field amplifies rounding), this holds for any network.
    Points where ``f_z <= flag_fz`` (``v = L f_x/f_z`` huge or undefined: not forward-only there, C9) are not held to
    the tolerance; they are counted in ``details["excluded"]``.
    """
    k_steps, n = trajectory.shape[0] - 1, trajectory.shape[1]
    worst, worst_abs, excluded = 0.0, 0.0, 0
    with torch.no_grad():
        for k in range(k_steps):
            x, z0, z1 = trajectory[k], float(z_grid[k]), min(float(z_grid[k + 1]), L)
            fz, _ = field_fn(torch.full((n,), z0, dtype=x.dtype, device=x.device), x)
            xz = integrate_field_lines(field_fn, x, L, method="euler", steps=1, eps=z0, z_end=z1).x
            xt = integrate(lambda t, y: velocity_fn(y, t), x, z0 / L, z1 / L, method="euler", steps=1).x
            keep = (fz > flag_fz) & torch.isfinite(xz).flatten(1).all(1) & torch.isfinite(xt).flatten(1).all(1)
            excluded += int((~keep).sum())
            if bool(keep.any()):
                err = (xz[keep] - xt[keep]).flatten(1).abs().amax(1)
                size = 1 + torch.maximum(x[keep].flatten(1).abs().amax(1), xt[keep].flatten(1).abs().amax(1))
                worst = max(worst, float((err / size).max()))
                worst_abs = max(worst_abs, float(err.max()))
    value = worst
    tol = TRAJECTORY_TOL.get(trajectory.dtype, 1e-5)
    return CheckResult(name, value, tol, bool(value <= tol), "exact",
                       {"max_abs": worst_abs, "excluded": excluded, "points": k_steps * n})


def guard_fraction(field_fn, z: Tensor, x: Tensor, name: str) -> CheckResult:
    """C9 diagnostic on a learned field: the fraction of points ``(z, x)`` with ``f_z <= 0``."""
    result = check_forward_only(field_fn, z, x, expect_forward_only=None)
    return replace(result, name=name)


def learned_cfm_checks(module: Any, x0: Tensor, x1: Tensor, L: float, steps: int = 20,
                       generator: torch.Generator | None = None, step_identity: bool = True) -> list[CheckResult]:
    """C4, C9 and (``step_identity``) C5 on a velocity model: points ``x_t ~ p_t(.|x0_i, x1_i)`` of its path
    (pairs as given), C5 along its ``steps``-step Euler trajectories from ``x0``."""
    n, dtype, device = x0.shape[0], x0.dtype, x0.device
    t = torch.rand(n, generator=generator, dtype=dtype).to(device)
    noise = torch.randn(x0.shape, generator=generator, dtype=dtype).to(device)
    path = module.path
    with torch.no_grad():
        xt = path.sample(x0, x1, t, noise=None if path.requires_gaussian_source else noise).xt
        v = module.velocity(xt, t)
    dual = VelocityAsField(module, L)
    results = [replace(check_round_trip(v, L), name="C4 round trip, learned v (fp32)"
                       if v.dtype == torch.float32 else "C4 round trip, learned v")]
    guard = check_forward_only(dual.field_output, t * L, xt, expect_forward_only=True)
    results.append(replace(guard, name="C9 guard of VelocityAsField(learned v)"))
    if not step_identity:
        return results
    with torch.no_grad():
        run = integrate(lambda tt, xx: module.velocity(xx, tt), x0, 0.0, 1.0, method="euler", steps=steps,
                        record=True)
    results.append(euler_step_identity(module.velocity, dual.field_output, run.times * L, run.trajectory, L,
                                       "C5 learned v: each Euler step in t = in z"))
    return results


def _sampler_lines(module: Any, x0: Tensor, L: float, steps: int):
    """The z-Euler lines of the learned field from ``x0`` (recorded), and the points ``(z, x)`` where the sampler
    evaluated the field (every recorded point but the last)."""
    with torch.no_grad():
        lines = integrate_field_lines(module.field_output, x0, L, method="euler", steps=steps, eps=0.0, record=True)
    z = lines.z[:-1, None].expand(-1, x0.shape[0]).reshape(-1)
    return lines, z, lines.trajectory[:-1].reshape(-1, *x0.shape[1:])


def learned_ifm_checks(module: Any, x0: Tensor, x1: Tensor, L: float, steps: int = 20,
                       generator: torch.Generator | None = None, step_identity: bool = True) -> list[CheckResult]:
    """C9 guard (training points, sampler lines); for a forward-only field also C4 and C5 on ``FieldAsVelocity``."""
    with torch.no_grad():
        z, x = module.volume(x0.cpu(), x1.cpu(), L, generator=generator)
        z, x = z.to(x0.device), x.to(x0.device)
        fz, fx = module.field_output(z, x)
    results = [guard_fraction(module.field_output, z, x, "C9 learned guard f_z<=0 (training points)")]
    lines, zs, xs = _sampler_lines(module, x0, L, steps)
    results.append(guard_fraction(module.field_output, zs, xs, "C9 learned guard f_z<=0 (sampler lines)"))
    if getattr(module.field, "forward_only", False):
        psi = velocity_from_field(fz, fx, L, min_ez=1e-3)
        round_trip = check_round_trip(psi.velocity[~psi.invalid], L) if bool((~psi.invalid).any()) else None
        if round_trip is not None:
            round_trip.details["guarded"] = psi.n_invalid
            results.append(replace(round_trip, name="C4 round trip, learned f (fp32)"
                                   if fx.dtype == torch.float32 else "C4 round trip, learned f"))
        if step_identity:
            results.append(euler_step_identity(FieldAsVelocity(module).velocity, module.field_output, lines.z,
                                               lines.trajectory, L, "C5 learned f: each Euler step in z = in t"))
    return results


def behind_plates(x: Tensor, L: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Points behind the two plates, near the data: ``z ~ U(-L/2, 0)`` for half of ``x``, ``U(L, 3L/2)`` for the
    other half (``x`` as given)."""
    n = x.shape[0]
    u = 0.5 * L * torch.rand(n, generator=generator, dtype=x.dtype).to(x.device)
    z = torch.where(torch.arange(n, device=x.device) % 2 == 0, -u, L + u)
    return z, x


def field_checks(module: Any, x0: Tensor, x1: Tensor, L: float, dim: int, n_points: int = 256,
                 generator: torch.Generator | None = None) -> list[CheckResult]:
    """The identities of the module's path or field, which do not depend on the weights (computed once).

    A path or forward-only field that is the current of a path with ``sigma_t > 0``: :func:`run_exact_checks`
    (on the Gaussian toy of dimension ``dim``). A path with ``sigma = 0`` (a line current, whose density is a
    delta): the round trip on its conditional velocities and C12. A forward-only field that is not a path's current
    (the reference-code strong field): C9 on the batch. A field that is not forward-only (EFM): C9 behind the
    plates (diagnostic, > 0 expected) and C12.
    """
    target = module.path if model_family(module) == "cfm" else module.field
    if model_family(module) == "ifm" and not getattr(target, "forward_only", False):
        pts = behind_plates(x0.double(), L, generator)
        res = check_forward_only(target, *pts, x0.double(), x1.double(), expect_forward_only=False)
        return [replace(res, name="C9 backward points behind the plates (exact field)"), check_poisson_kernel()]
    try:
        return run_exact_checks(target, None if model_family(module) == "ifm" else L, D=dim, n_points=n_points,
                                n_pairs=min(64, n_points))
    except ValueError:
        pass
    path = getattr(target, "path", None) if model_family(module) == "ifm" else target
    results = []
    if path is not None:
        t = torch.rand(x0.shape[0], generator=generator, dtype=torch.float64)
        u = path.velocity(x0.double(), t, x0.double(), x1.double())
        results.append(check_round_trip(u, L))
    if model_family(module) == "ifm":
        z = L * (0.01 + 0.98 * torch.rand(x0.shape[0], generator=generator, dtype=torch.float64))
        xd = x0.double() + (z / L)[:, None] * (x1.double() - x0.double()).flatten(1).reshape(x0.shape)
        results.append(check_forward_only(target, z, xd, x0.double(), x1.double()))
    results.append(check_poisson_kernel())
    return results


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

    Cost: at the defaults, well under 1% of the training time of the 2-D toys (``duality/overhead`` measures it).
    """

    def __init__(self, every_n_steps: int = 500, on_validation: bool = True, on_failure: str = "warn",
                 L: float | None = None, n_points: int = 256, steps: int = 20, max_dim: int = 8,
                 seed: int = 0) -> None:
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
    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        start = time.perf_counter()
        if isinstance(batch, dict) and "x0" in batch and "x1" in batch:
            self._pairs = (batch["x0"][: self.n_points], batch["x1"][: self.n_points])
        step = trainer.global_step
        due = step != self._last_step and (self._static is None or
                                           (self.every_n_steps > 0 and step % self.every_n_steps == 0))
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

    def compute(self, pl_module: Any, step: int) -> list[CheckResult]:
        """All checks for ``pl_module`` at ``step`` on the stored training pairs (no logging, no action)."""
        family = model_family(pl_module)
        if family is None:
            self._warn_once("family", f"DualityCheck: {type(pl_module).__name__} is neither a CFM model (velocity, "
                                      "path) nor an IFM model (field_output, field): nothing to check")
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
        for r in failed:
            action = "stopping training (on_failure='stop')" if self.on_failure == "stop" else "training goes on"
            message = (f"DualityCheck: exact identity '{r.name}' failed at step {step} ({stage}): value "
                       f"{r.value:.3e} > tolerance {r.tolerance:.3e}; {action}")
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
