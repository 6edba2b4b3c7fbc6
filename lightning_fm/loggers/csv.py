"""``CSVLogger`` whose metrics file survives a resume.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it opens a directory that is not empty, so a run
resumed in its own directory would lose its history. Here an existing file is kept: its header is adopted, the rows
logged at or after ``keep_until_step`` (what the run logged after the checkpoint it resumes from, which the resumed
run logs again) are dropped, and new rows are appended.
"""
from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger as _CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _ContinuingWriter(ExperimentWriter):
    def __init__(self, log_dir: str, metrics_file: str, keep_until_step: int | None) -> None:
        self.NAME_METRICS_FILE = metrics_file
        self.keep_until_step = keep_until_step
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        """Adopt an existing metrics file instead of deleting it (module docstring)."""
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as file:
            reader = csv.DictReader(file)
            rows, keys = list(reader), list(reader.fieldnames or [])
        if self.keep_until_step is not None:
            rows = [row for row in rows if not row.get("step") or int(float(row["step"])) < self.keep_until_step]
        self.metrics_keys = sorted(keys)
        with open(self.metrics_file_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)


class CSVLogger(_CSVLogger):
    """Lightning's ``CSVLogger`` (``<save_dir>/<name>/version_<n>/metrics.csv``) that continues an existing metrics
    file (module docstring).

    Args:
        metrics_file: the file's name (the CLI's ``test``, ``validate`` and ``predict`` write ``metrics_<command>.csv``
            beside the training log of the checkpoint's run).
        keep_until_step: rows of an existing file at this step or later are dropped (set by the CLI on resume).
        save_dir: the runs' parent directory; None: ``runs`` (the CLI: ``trainer.default_root_dir`` when given).
        Others: as Lightning's ``CSVLogger``.
    """

    def __init__(self, save_dir: str | None = None, name: str | None = "lightning_fm", version: int | str | None = None,
                 prefix: str = "", flush_logs_every_n_steps: int = 100, metrics_file: str = "metrics.csv",
                 keep_until_step: int | None = None) -> None:
        super().__init__("runs" if save_dir is None else save_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)
        self.metrics_file, self.keep_until_step = metrics_file, keep_until_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuingWriter(self.log_dir, self.metrics_file, self.keep_until_step)
        return self._experiment
