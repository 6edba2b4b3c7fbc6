"""``CSVLogger`` whose metrics file survives a resume.

Lightning's CSV writer deletes an existing ``metrics.csv`` when it opens a directory that is not empty, so a run
resumed in its own directory would lose its history. Here an existing file is kept: its header is adopted, the rows
logged at or after ``keep_until_step`` (what the run logged after the checkpoint it resumes from, which the resumed
run logs again) are dropped, and new rows are appended.
"""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from lightning_fm.cli.run_dirs import VERSION, next_version

#: Lightning's writer's warning on a directory that is not empty (it deletes only the metrics file, kept here)
NOT_EMPTY_WARNING = r"Experiment logs directory .* exists and is not empty"


class ContinuingWriter(ExperimentWriter):
    """Lightning's CSV experiment writer that continues an existing metrics file (module docstring).

    Its constructor reads the file's rows and header, lets Lightning's writer open the directory (which deletes the
    file), and writes the kept rows back (to a temporary file beside it, renamed over it) with their header, which
    the writer adopts (``metrics_keys``): new rows are appended under it, and a new key rewrites the file as
    Lightning's writer does."""

    def __init__(self, log_dir: str, metrics_file: str = "metrics.csv", keep_until_step: int | None = None) -> None:
        self.NAME_METRICS_FILE = metrics_file
        self.keep_until_step = keep_until_step
        path = os.path.join(log_dir, metrics_file)
        kept = self._kept_rows(path, keep_until_step) if os.path.isfile(path) else None
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=NOT_EMPTY_WARNING)  # it is not deleted here
            super().__init__(log_dir)
        if kept is not None:
            temporary, self.metrics_keys = kept
            os.replace(temporary, self.metrics_file_path)

    @staticmethod
    def _kept_rows(path: str, keep_until_step: int | None) -> tuple[str, list[str]]:
        """Write the rows of ``path`` to keep (all, or those before ``keep_until_step``) to a temporary file beside
        it under their sorted header; return that file and the header."""
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            rows, keys = list(reader), sorted(reader.fieldnames or [])
        if keep_until_step is not None:
            rows = [row for row in rows if not row.get("step") or int(float(row["step"])) < keep_until_step]
        temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
        with open(temporary, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
        return temporary, keys


class CSVLogger(LightningCSVLogger):
    """Lightning's ``CSVLogger`` (``<save_dir>/<name>/version_<n>/metrics.csv``) that continues an existing metrics
    file (module docstring).

    Args:
        metrics_file: the file's name (the CLI's ``test``, ``validate`` and ``predict`` write ``metrics_<command>.csv``
            beside the training log of the checkpoint's run).
        keep_until_step: rows of an existing file at this step or later are dropped (set by the CLI on resume).
        save_dir: the runs' parent directory; None: ``runs`` (the CLI: ``trainer.default_root_dir`` when given).
        version: None: the next ``version_<n>``, chosen when the logger is created (as
            :class:`~lightning_fm.loggers.WandbLogger` does: two loggers of one run choose the same directory).
        Others: as Lightning's ``CSVLogger``.
    """

    def __init__(
        self,
        save_dir: str | None = None,
        name: str | None = "lightning_fm",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
        metrics_file: str = "metrics.csv",
        keep_until_step: int | None = None,
    ) -> None:
        save_dir = "runs" if save_dir is None else save_dir
        if version is None:
            found = VERSION.match(next_version(Path(save_dir, name or "")))
            version = int(found.group(1)) if found else None
        super().__init__(
            save_dir,
            name=name,
            version=version,
            prefix=prefix,
            flush_logs_every_n_steps=flush_logs_every_n_steps,
        )
        self.metrics_file, self.keep_until_step = metrics_file, keep_until_step
        self._writer: ContinuingWriter | None = None

    @property
    @rank_zero_experiment
    def experiment(self) -> ContinuingWriter:
        """The writer (created on first use, on rank 0)."""
        if self._writer is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._writer = ContinuingWriter(self.log_dir, self.metrics_file, self.keep_until_step)
        return self._writer

    @rank_zero_only
    def finalize(self, status: str) -> None:
        """Write what is pending; nothing where no writer was opened (as Lightning's ``CSVLogger``, which tests its
        own writer attribute, left unset here)."""
        if self._writer is not None:
            self.save()
