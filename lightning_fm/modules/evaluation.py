"""Evaluation by sampling, streamed batch by batch: the metrics of a validation or test pass (accumulated over
batches and processes) and the few samples kept for plots."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric, SumMetric

from lightning_fm.metrics import SampleW2
from lightning_fm.sampling import SampleResult


class NonFiniteSamplesWarning(UserWarning):
    """A validation or test pass generated more non-finite samples than ``model.nonfinite_tolerance`` allows."""


@dataclass
class ValidationResult:
    """What the last validation kept for plots: the first samples of the pass (``source``, ``generated``,
    ``target``, ``labels`` of the targets), and the recorded lines of its first batch (``times`` in the sampler's
    variable, named ``time_label``; ``trajectory`` ``(K, R, *dims)``; ``arcs`` beyond the target plate)."""

    source: Tensor
    generated: Tensor
    target: Tensor
    times: Tensor | None
    trajectory: Tensor | None
    time_label: str
    labels: Tensor | None = None
    arcs: Tensor | None = None


class EvaluationMetrics(nn.Module):
    """The metrics of one pass: ``loss`` (mean over samples, ``sum_b n_b loss_b / sum_b n_b``: a non-finite batch
    loss makes it non-finite, it is not dropped), ``w2`` (exact W2 between the generated samples and all held-out
    targets, on the union over processes; only the lines that returned, ``SampleResult.kept``, the others are
    counted in ``not_returned``; see :class:`~lightning_fm.metrics.SampleW2`: NaN when a kept sample is not finite),
    ``w2_floor`` (W2 between the held-out targets and an independent target sample ``x1_ref`` of the same size: what
    a perfect model scores), ``nfe`` (mean per batch), ``nonfinite`` (generated samples with a non-finite
    entry), ``nonfinite_frac`` (``nonfinite`` / generated samples) and the sampler's diagnostics (sums of
    ``SampleResult.info``)."""

    def __init__(self, w2_max_samples: int) -> None:
        super().__init__()
        # sums without torchmetrics' NaN filter: a NaN must reach the logged value (and the filter syncs the host)
        self.loss_sum, self.count = SumMetric(nan_strategy="disable"), SumMetric(nan_strategy="disable")
        self.nfe, self.nonfinite = MeanMetric(), SumMetric(nan_strategy="disable")
        self.w2, self.w2_floor = SampleW2(w2_max_samples), SampleW2(w2_max_samples)
        self.info: dict[str, float] = {}

    def reset(self) -> None:
        for metric in (self.loss_sum, self.count, self.nfe, self.nonfinite, self.w2, self.w2_floor):
            metric.reset()
        self.info = {}

    def update(self, loss: Tensor, batch: dict[str, Tensor], result: SampleResult) -> None:
        n = batch["x0"].shape[0]
        self.loss_sum.update(loss.detach().float() * n)
        self.count.update(torch.tensor(float(n), device=loss.device))
        self.nfe.update(float(result.nfe))
        self.nonfinite.update((~torch.isfinite(result.x.flatten(1)).all(1)).sum().float())
        self.w2.update(result.x[result.kept()], batch["x1"])  # lines that did not return are not samples
        if "x1_ref" in batch:
            self.w2_floor.update(batch["x1_ref"], batch["x1"])
        for key, value in result.info.items():
            self.info[key] = self.info.get(key, 0.0) + float(value)

    def compute(self) -> dict[str, Tensor]:
        """The pass's values (gathered over processes), keyed by metric name; the ``info`` sums are this process's
        only (log them with a sum over processes)."""
        count, nonfinite = self.count.compute(), self.nonfinite.compute()
        values = {
            "loss": self.loss_sum.compute() / count,
            "w2": self.w2.compute(),
            "nfe": self.nfe.compute(),
            "nonfinite": nonfinite,
            "nonfinite_frac": nonfinite / count,
        }
        if self.w2_floor.update_count:
            values["w2_floor"] = self.w2_floor.compute()
        return values


def nonfinite_warning(prefix: str, nonfinite: float, fraction: float, tolerance: float) -> str | None:
    """The warning of a pass in which a ``fraction`` above ``tolerance`` of the generated samples (``nonfinite`` of
    them) is not finite; None otherwise."""
    if not fraction > tolerance:
        return None
    return (
        f"{prefix}: {int(nonfinite)} generated samples ({fraction:.1%}) are not finite (above "
        f"model.nonfinite_tolerance={tolerance:g}): the sampler diverged on them; {prefix}/w2 is NaN when one "
        f"of them is among its samples (logged: {prefix}/nonfinite_frac)"
    )


class PlotSamples:
    """Keeps the first ``limit`` samples of a pass and the recorded lines of its first batch."""

    def __init__(self, limit: int, time_label: str) -> None:
        self.limit, self.time_label = int(limit), time_label
        self.parts: dict[str, list[Tensor]] = {"source": [], "generated": [], "target": [], "labels": []}
        self.first: SampleResult | None = None

    def add(self, batch: dict[str, Tensor], result: SampleResult) -> None:
        if self.first is None:
            self.first = result
        room = self.limit - sum(len(p) for p in self.parts["source"])
        if room <= 0:
            return
        for key, value in (
            ("source", batch["x0"]),
            ("generated", result.x),
            ("target", batch["x1"]),
            ("labels", batch.get("y1")),
        ):
            if value is not None:
                self.parts[key].append(value[:room].detach().cpu())

    def result(self) -> ValidationResult | None:
        if self.first is None:
            return None
        cat = {k: torch.cat(v) if v else None for k, v in self.parts.items()}
        first = self.first
        cpu = lambda v: None if v is None else v.detach().cpu()  # noqa: E731
        return ValidationResult(
            cat["source"],
            cat["generated"],
            cat["target"],
            cpu(first.times),
            cpu(first.trajectory),
            self.time_label,
            cat["labels"],
            cpu(first.arcs),
        )


class Evaluation(nn.Module):
    """One validation or test pass: its metrics (:class:`EvaluationMetrics`) and the samples kept for plots
    (:class:`PlotSamples`); ``result`` is what the last pass kept (a :class:`ValidationResult`, or None)."""

    def __init__(self, w2_max_samples: int, plot_samples: int) -> None:
        super().__init__()
        self.metrics = EvaluationMetrics(w2_max_samples)
        self.plot_samples = int(plot_samples)
        self.plots: PlotSamples | None = None
        self.result: ValidationResult | None = None

    def start(self, time_label: str) -> None:
        self.metrics.reset()
        self.plots = PlotSamples(self.plot_samples, time_label)

    def wants_trajectories(self) -> bool:
        """Whether the next batch is the pass's first (its lines are recorded for plots)."""
        return self.plots is not None and self.plots.first is None

    def update(self, loss: Tensor, batch: dict[str, Tensor], result: SampleResult) -> None:
        self.metrics.update(loss, batch, result)
        if self.plots is not None:
            self.plots.add(batch, result)

    def compute(self) -> tuple[dict[str, Tensor], dict[str, float]]:
        """The pass's values (gathered over processes) and this process's sums of the sampler's diagnostics."""
        return self.metrics.compute(), dict(self.metrics.info)

    def finish(self) -> None:
        self.result = self.plots.result() if self.plots is not None else None
        self.metrics.reset()
