"""``HeldOutLikelihood``: held-out log-likelihoods of a forward-only model at validation and test
(docs/concepts/likelihoods.md#forward-only-fields).

At every ``every_n_validations``-th validation of a fit (never the sanity check), at every standalone ``validate`` and
at every ``test``, the first ``n_points`` held-out targets ``x1`` of this process's evaluation batches are carried back
to t = 0 by the model's flow (:meth:`CFMModule.log_likelihood`; a forward-only IFM model's through the duality,
:meth:`IFMModule.log_likelihood`) while the evaluated weights (EMA) are in place, and the pass logs

* data that are not images (toys): ``<stage>/nll``, the mean of ``-log p_1(x)`` in nats per point;
* images ``(C, H, W)``: ``<stage>/bpd``, the mean bits per dimension of the dequantised images,
  ``bpd = -log p(y) / (D ln 2) + log2((levels - 1)/2)`` with ``y = x + delta (U - 1/2)``, ``delta = 2/(levels - 1)``
  (:mod:`lightning_fm.likelihood`): ``levels`` 17 for the 8x8 digits (pixels 0..16, ``pixel/8 - 1``), 256 for 8-bit
  images (``u8/127.5 - 1``);
* ``<stage>/likelihood_nfe`` (mean velocity evaluations per batch), ``<stage>/likelihood_seconds``,
  ``<stage>/likelihood_nonfinite`` (points whose value is not finite, left out of the mean) and, for a forward-only
  IFM model, ``<stage>/likelihood_guarded``: the fraction of lines where the learned ``f_z <= min_fz`` at some
  evaluation (``v = 0`` was used there, so those values are not the model's density; they stay in the mean).

The source density ``log p_0`` comes from the data module: its ``source_log_prob(x)`` method if it has one, N(0, I)
when ``source_is_standard_normal``, and the mixture of the toy ``8gaussians`` source (torchcfm's construction,
:mod:`lightning_fm.data.toy_distributions`): the records of :mod:`lightning_fm.data.sources`, which the modules keep
too (their ``log_likelihood(x)`` uses the same density). A model without a density (EFM: not forward-only) or a
source without a closed-form density (e.g. the toy ``moons`` source of a transfer) gets one warning naming why
(``on_unsupported="warn"``, the default: the callback is in the CLI's default list) or a ValueError at setup
(``"raise"``).
The probes and dequantisation noise are drawn from generators seeded by ``(seed, stage, batch, rank)``: every
validation of a run sees the same noise.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from lightning_fm.data.digits import DigitsDataModule
from lightning_fm.data.sources import no_density, source_log_prob, source_record
from lightning_fm.likelihood import (
    DIVERGENCES,
    LogProb,
    bits_per_dim,
    check_likelihood_options,
    dequantize,
    grid_spacing,
)
from lightning_fm.utils.seeding import make_generator

ON_UNSUPPORTED = ("warn", "raise")
STAGE_STREAM = {"val": 0, "test": 1}
DIGITS_LEVELS = 17  # the 8x8 digits' pixels are 0..16


def density_problem(pl_module: Any) -> str | None:
    """Why ``pl_module`` has no density (None when it has one)."""
    if not hasattr(pl_module, "log_likelihood"):
        return f"{type(pl_module).__name__} has no log_likelihood method"
    field = getattr(pl_module, "field", None)
    if field is not None and not getattr(field, "forward_only", False):
        return (
            f"{type(pl_module).__name__} with field {type(field).__name__} is not forward-only (E_z <= 0 "
            "somewhere: z is not a time), so it has no density"
        )
    return None


def source_density(datamodule: Any) -> LogProb:
    """``log p_0`` of the data module's source (see the module docstring); a ValueError names what is missing."""
    own = getattr(datamodule, "source_log_prob", None)
    if callable(own):
        return own
    record = source_record(datamodule)
    if record["density"] is None:
        raise ValueError(
            f"{no_density(record)}; give HeldOutLikelihood(source_log_prob=...) or a data module with "
            "source_log_prob(x)"
        )
    return source_log_prob(record)


class HeldOutLikelihood(Callback):
    """Log ``<stage>/nll`` (toys) or ``<stage>/bpd`` (images) of held-out targets (module docstring).

    Args:
        every_n_validations: compute at every this many validations of a fit (1: all of them).
        n_points: held-out targets per process and pass (the first ones of the evaluation batches).
        divergence: ``"exact"``, ``"hutchinson"`` or ``"auto"``: exact up to ``exact_max_dim`` dimensions.
        probes, probe: Hutchinson probes per point and their kind (``"rademacher"``, ``"gaussian"``).
        method, steps, atol, rtol: the solver of :func:`lightning_fm.likelihood.log_likelihood`.
        levels: quantisation levels of image data (None: 17 for ``DigitsDataModule``, 256 for other images);
            ignored for data that are not images.
        min_fz: the guard of a forward-only IFM model's ``v = L f_x / f_z``.
        source_log_prob: ``log p_0`` (None: from the data module).
        seed: base seed of the probes and the dequantisation noise.
        on_unsupported: ``"warn"`` (log nothing) or ``"raise"`` for a model or source without a density.
    """

    def __init__(
        self,
        every_n_validations: int = 1,
        n_points: int = 1000,
        divergence: str = "auto",
        exact_max_dim: int = 16,
        probes: int = 1,
        probe: str = "rademacher",
        method: str = "dopri5",
        steps: int | None = None,
        atol: float = 1e-5,
        rtol: float = 1e-5,
        levels: int | None = None,
        min_fz: float = 1e-6,
        source_log_prob: LogProb | None = None,
        seed: int = 0,
        on_unsupported: str = "warn",
    ) -> None:
        for key, value in (
            ("every_n_validations", every_n_validations),
            ("n_points", n_points),
            ("exact_max_dim", exact_max_dim),
        ):
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"HeldOutLikelihood.{key} must be an integer >= 1, got {value!r}")
        if divergence not in (*DIVERGENCES, "auto"):
            raise ValueError(
                f"HeldOutLikelihood.divergence must be one of {[*DIVERGENCES, 'auto']}, got {divergence!r}"
            )
        check_likelihood_options(method, steps, atol, rtol, "exact", probes, probe)
        if levels is not None:
            grid_spacing(levels)
        if on_unsupported not in ON_UNSUPPORTED:
            raise ValueError(
                f"HeldOutLikelihood.on_unsupported must be one of {list(ON_UNSUPPORTED)}, got {on_unsupported!r}"
            )
        self.every_n_validations, self.n_points = int(every_n_validations), int(n_points)
        self.divergence, self.exact_max_dim, self.levels = divergence, int(exact_max_dim), levels
        self.solver = {
            "method": method,
            "steps": steps,
            "atol": atol,
            "rtol": rtol,
            "probes": int(probes),
            "probe": probe,
        }
        self.min_fz, self.source_log_prob, self.seed = float(min_fz), source_log_prob, int(seed)
        self.on_unsupported = on_unsupported
        self.validations = 0
        self.last: dict[str, float] = {}  # the values logged by the latest pass
        self._source: LogProb | None = None
        self._image_levels: int | None = None
        self._active, self._stage = False, "val"
        self._totals: dict[str, float] = {}

    # -- setup ---------------------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._source = None
        if stage == "predict":
            return
        datamodule = getattr(trainer, "datamodule", None)
        problem = density_problem(pl_module)
        if problem is None:
            try:
                source = self.source_log_prob or source_density(datamodule)
            except ValueError as err:
                problem = str(err)
        if problem is not None:
            if self.on_unsupported == "raise":
                raise ValueError(f"HeldOutLikelihood: {problem}")
            rank_zero_warn(f"HeldOutLikelihood: {problem}; no likelihood is logged")
            return
        self._source = source
        shape = tuple(getattr(datamodule, "target_shape", ()) or ())
        self._image_levels = None
        if len(shape) == 3:
            default = DIGITS_LEVELS if isinstance(datamodule, DigitsDataModule) else 256
            self._image_levels = int(self.levels or default)

    def divergence_for(self, dim: int) -> str:
        """The divergence used in dimension ``dim``: ``auto`` is exact up to ``exact_max_dim``."""
        if self.divergence != "auto":
            return self.divergence
        return "exact" if dim <= self.exact_max_dim else "hutchinson"

    # -- passes --------------------------------------------------------------------------------------------------
    def _start(self, active: bool, stage: str) -> None:
        self._active, self._stage = active and self._source is not None, stage
        self._totals = {
            "sum": 0.0,
            "count": 0.0,
            "nonfinite": 0.0,
            "guarded": 0.0,
            "lines": 0.0,
            "nfe": 0.0,
            "batches": 0.0,
            "seconds": 0.0,
        }

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.sanity_checking:
            self._start(False, "val")
            return
        self.validations += 1
        fitting = trainer.state.fn == "fit"
        self._start(not fitting or self.validations % self.every_n_validations == 0, "val")

    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start(True, "test")

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._evaluate(trainer, pl_module, batch, batch_idx, self._stage)

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._log(pl_module, self._stage)

    # a test pass evaluates and logs as a validation pass does (under test/*, its own seed stream)
    on_test_batch_end = on_validation_batch_end
    on_test_epoch_end = on_validation_epoch_end

    # -- the work ------------------------------------------------------------------------------------------------
    def _evaluate(self, trainer: Trainer, pl_module: Any, batch: dict[str, Tensor], batch_idx: int, stage: str) -> None:
        take = self.n_points - int(self._totals.get("lines", 0))
        if not self._active or take <= 0 or not isinstance(batch, dict) or "x1" not in batch:
            return
        start = time.perf_counter()
        x = batch["x1"][:take]
        labels = batch.get("y1")
        labels = labels[: len(x)] if labels is not None and pl_module.num_classes else None
        generator = make_generator(self.seed, STAGE_STREAM[stage], batch_idx, trainer.global_rank)
        if self._image_levels is not None:
            x = dequantize(x, self._image_levels, generator)
        options: dict[str, Any] = dict(self.solver, divergence=self.divergence_for(x[0].numel()), generator=generator)
        if hasattr(pl_module, "field"):
            options["min_fz"] = self.min_fz
        result = pl_module.log_likelihood(x, self._source, y=labels, **options)
        values = self.values(result.log_prob, x[0].numel())
        finite = torch.isfinite(values)
        totals = self._totals
        totals["sum"] += float(values[finite].sum())
        totals["count"] += float(finite.sum())
        totals["nonfinite"] += float((~finite).sum())
        totals["lines"] += len(x)
        totals["guarded"] += float(result.guarded.sum()) if result.guarded is not None else 0.0
        totals["nfe"] += result.nfe
        totals["batches"] += 1
        totals["seconds"] += time.perf_counter() - start

    def values(self, log_prob: Tensor, dim: int) -> Tensor:
        """Per point: ``-log p`` (nats) for continuous data, bits/dim for images."""
        if self._image_levels is None:
            return -log_prob
        return bits_per_dim(log_prob, dim, self._image_levels)

    def metric_name(self) -> str:
        return "nll" if self._image_levels is None else "bpd"

    def _log(self, pl_module: LightningModule, stage: str) -> None:
        """Log the pass's values, summed over the processes first (every process takes part in the same reduction,
        also one that evaluated no point): the mean over all points, not a mean of per-process means."""
        if not self._active:
            return
        self._active = False
        keys = ("sum", "count", "nonfinite", "nfe", "batches", "guarded", "lines")
        local = torch.tensor(
            [float(self._totals.get(k, 0.0)) for k in keys], dtype=torch.float64, device=pl_module.device
        )
        summed = (
            pl_module.trainer.strategy.reduce(local, reduce_op="sum") if pl_module.trainer.world_size > 1 else local
        )
        totals = dict(zip(keys, summed.tolist()))
        if not totals["batches"]:
            return
        metrics: dict[str, float] = {}
        if totals["count"]:
            metrics[self.metric_name()] = totals["sum"] / totals["count"]
        else:
            rank_zero_warn(
                f"HeldOutLikelihood: no finite {stage}/{self.metric_name()} at this pass "
                f"({int(totals['nonfinite'])} non-finite points)"
            )
        metrics["likelihood_nfe"] = totals["nfe"] / totals["batches"]
        metrics["likelihood_seconds"] = float(self._totals.get("seconds", 0.0))  # this process's
        if hasattr(pl_module, "field"):
            metrics["likelihood_guarded"] = totals["guarded"] / totals["lines"]
        metrics["likelihood_nonfinite"] = totals["nonfinite"]
        for key, value in metrics.items():  # the same value on every process: nothing left to synchronise
            pl_module.log(f"{stage}/{key}", torch.tensor(float(value), device=pl_module.device), rank_zero_only=True)
        self.last = {f"{stage}/{k}": float(v) for k, v in metrics.items()}
