"""The source density a module was fit from (docs/guides/likelihoods.md#the-source-density): recorded at
``setup("fit")`` from the data module (:mod:`lightning_fm.data.sources`), kept in the checkpoint
(``checkpoint["lightning_fm"]["source"]``) and used by ``log_likelihood`` as ``log p_0``."""

from __future__ import annotations

from typing import Any

from lightning_fm.compat import attached_trainer
from lightning_fm.data.sources import legacy_source_record, no_density, source_log_prob, source_record
from lightning_fm.likelihood import LogProb, standard_normal_log_prob


class SourceDensity:
    """Mixin of :class:`~lightning_fm.modules.base.FlowMatchingModule`: the recorded source of a fit."""

    _source_record: dict[str, Any] | None = None  # the fit's source (None: none recorded, N(0, I))
    _source_own: LogProb | None = None  # a data module's own source_log_prob (this process only)

    def setup(self, stage: str) -> None:
        """The data checks (:class:`~.data_checks.DataChecks`), then, in ``fit``, record the data's source."""
        super().setup(stage)
        if stage == "fit":
            self.record_source(getattr(attached_trainer(self), "datamodule", None))

    def record_source(self, datamodule: Any) -> None:
        """Record ``datamodule``'s source as this model's (:attr:`source_density`); done by every fit."""
        record = source_record(datamodule)
        own = getattr(datamodule, "source_log_prob", None)
        self._source_own = own if callable(own) else None
        if datamodule is None:
            record["reason"] = (
                "the model was fit without a data module, so its source density is unknown; pass "
                "source_log_prob=<log p_0>"
            )
        elif self._source_own is not None and record["density"] is None:
            record["reason"] = (
                f"{record['source']} has its data module's own source_log_prob(x), which a checkpoint does not keep; "
                "pass it as source_log_prob"
            )
        self._source_record = record

    @property
    def source_density(self) -> dict[str, Any] | None:
        """The recorded source: ``{"density": "standard_normal" | "8gaussians" | None, "source": ...}``
        (:mod:`lightning_fm.data.sources`); None for a model that has recorded none (built in Python, never fit)."""
        return None if self._source_record is None else dict(self._source_record)

    def source_log_prob(self) -> LogProb:
        """``log p_0`` of :meth:`log_likelihood` by default: the recorded source's density, N(0, I) where none is
        recorded; a ValueError where the recorded source has no closed-form density."""
        if self._source_own is not None:
            return self._source_own
        if self._source_record is None:
            return standard_normal_log_prob
        try:
            return source_log_prob(self._source_record)
        except ValueError:
            raise ValueError(
                f"{type(self).__name__}.log_likelihood: the model's source density is unknown: "
                f"{no_density(self._source_record)}. log_likelihood(x, source_log_prob) takes log p_0 of the points "
                "carried back to t = 0 (docs/guides/likelihoods.md)"
            ) from None

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The module's class (:class:`~.components.Components`) and its recorded source, beside the
        hyperparameters (``checkpoint["lightning_fm"]["source"]``)."""
        super().on_save_checkpoint(checkpoint)
        if self._source_record is not None:
            checkpoint.setdefault("lightning_fm", {})["source"] = dict(self._source_record)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """The checkpoint's recorded source; for a checkpoint written before sources were recorded, the one its
        data module's hyperparameters name (:func:`~lightning_fm.data.sources.legacy_source_record`), else none
        known (``log_likelihood`` then needs ``source_log_prob``). A resumed fit keeps the source it recorded."""
        super().on_load_checkpoint(checkpoint)
        record = (checkpoint.get("lightning_fm") or {}).get("source")
        if isinstance(record, dict):
            self._source_record = dict(record)
        elif self._source_record is None:
            self._source_record = legacy_source_record(checkpoint.get("datamodule_hyper_parameters")) or {
                "density": None,
                "source": "the source",
                "reason": (
                    "the checkpoint records no source (written before lightning_fm recorded it, and without a data "
                    "module's hyperparameters naming it); pass source_log_prob (N(0, I): "
                    "lightning_fm.likelihood.standard_normal_log_prob)"
                ),
            }
