"""Evaluation by sampling, the Lightning hooks: every validation, test and predict step samples the batch's sources
through the module's objective and streams the pass's metrics (:class:`~lightning_fm.modules.evaluation.Evaluation`)."""

from __future__ import annotations

import warnings

import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor

from lightning_fm.modules.evaluation import NonFiniteSamplesWarning, nonfinite_warning
from lightning_fm.sampling import LinesNotReturnedWarning


class SamplingEvaluation:
    """Mixin of :class:`~lightning_fm.modules.base.FlowMatchingModule` (which provides ``evaluation``, ``loss``,
    ``sample``, ``objective``, ``log`` and ``log_dict``)."""

    @property
    def validation_result(self):
        """What the last validation or test pass kept for plots (:class:`~.evaluation.ValidationResult`)."""
        return self.evaluation.result

    def on_validation_epoch_start(self) -> None:
        self.evaluation.start(self.objective.time_label)

    def on_test_epoch_start(self) -> None:
        self.evaluation.start(self.objective.time_label)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self.evaluation_step(batch)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self.evaluation_step(batch)

    def on_validation_epoch_end(self) -> None:
        self.end_evaluation("val")

    def on_test_epoch_end(self) -> None:
        self.end_evaluation("test")

    def evaluation_step(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Sample the batch's sources and update the pass's metrics; returns ``{"generated": samples, "kept": mask}``
        (what callbacks such as :class:`~lightning_fm.callbacks.ClassifierMetrics` receive as ``outputs``):
        the samples of the lines that returned and, over the batch, which those are (``SampleResult.kept``)."""
        with torch.no_grad():
            loss = self.loss(batch, distributed=False)  # no collective inside a step: ranks may differ in batches
            record = self.hparams.val_trajectories if self.evaluation.wants_trajectories() else 0
            with warnings.catch_warnings():  # the pass logs their count: {prefix}/not_returned
                warnings.simplefilter("ignore", LinesNotReturnedWarning)
                result = self.sample(batch["x0"], y=batch.get("y1"), record=record)
        self.evaluation.update(loss, batch, result)
        kept = result.kept()
        return {"generated": result.x[kept], "kept": kept}

    def end_evaluation(self, prefix: str) -> None:
        values, info = self.evaluation.compute()  # already gathered over processes: the mean below changes nothing
        self.log_dict({f"{prefix}/{k}": v.float() for k, v in values.items()}, prog_bar=prefix == "val", sync_dist=True)
        warning = nonfinite_warning(
            prefix,
            float(values["nonfinite"]),
            float(values["nonfinite_frac"]),
            float(self.hparams.get("nonfinite_tolerance", 0.0)),
        )
        if warning:
            rank_zero_warn(warning, category=NonFiniteSamplesWarning)
        if info:
            self.log_dict(
                {f"{prefix}/{k}": torch.tensor(v, device=self.device) for k, v in info.items()},
                sync_dist=True,
                reduce_fx="sum",
            )
        self.evaluation.finish()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.sample(batch["x0"], y=batch.get("y1")).x
