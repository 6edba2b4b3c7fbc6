"""``WandbLogger`` with the run directory of :class:`~lightning_fm.loggers.CSVLogger`.

Lightning's ``WandbLogger`` puts W&B's files in ``save_dir`` (ignoring ``WANDB_DIR``) and checkpoints in
``<save_dir>/<project>/<run id>/checkpoints``, and a config or plot written to ``trainer.log_dir`` lands in the
``save_dir`` shared by every run. Here a run owns ``<save_dir>/<name>/version_<n>/`` as with the CSV logger
(checkpoints, ``config.yaml``, plots, FID records, ``wandb_run_id``); W&B's own files go to ``$WANDB_DIR`` if set,
else into that directory. The W&B run id is written to ``<run dir>/wandb_run_id`` when the run starts, and a logger
opening an existing run directory (a resume: ``fit --ckpt_path last``) takes that id, so W&B continues the same run.
The id also travels in the checkpoints (:meth:`WandbLogger.wandb_record`, read by the CLI): a resume from a copy of a
checkpoint kept anywhere continues its W&B run too (``id: new`` starts another).

Beside a :class:`~lightning_fm.loggers.CSVLogger` (``trainer.logger: [CSVLogger, WandbLogger]``, what
``configs/logger/wandb.yaml`` makes of a recipe's logger) both write into one run directory: the CLI gives them one
``save_dir``, ``name`` and ``version`` (:func:`lightning_fm.cli.run_config.share_run_directory`).
"""

from __future__ import annotations

import os
import secrets
import string
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger as _WandbLogger
from lightning.pytorch.utilities import rank_zero_only

from lightning_fm.cli.run_dirs import next_version
from lightning_fm.compat import drop_unset_wandb_init_argument

RUN_ID_FILE = "wandb_run_id"
#: ``id: new``: a new W&B run, whatever the run directory or the checkpoint resumed records
NEW_RUN = "new"


class WandbLogger(_WandbLogger):
    """W&B logging into the run directory ``<save_dir>/<name>/<version>`` (module docstring).

    Args:
        name: the run family: its directory under ``save_dir`` and the W&B group (the W&B run is named
            ``<name>/<version>``); None: ``lightning_fm`` (beside another logger of the framework: its name).
        save_dir, version: the run directory (``save_dir`` None: ``runs``, the CLI: ``trainer.default_root_dir`` when
            given; ``version`` None: the next ``version_<n>``; an int n: ``version_<n>``).
        project: the W&B project (None: ``$WANDB_PROJECT``, else ``lightning_fm``).
        id: the W&B run id (None: the one saved in the run directory, else a new one; ``"new"``: a new one, also
            where the run directory or the checkpoint resumed records one).
        log_model: checkpoints as W&B artifacts (``True``: at the end of training, ``"all"``: as they are saved).
        offline, prefix, **kwargs: as Lightning's ``WandbLogger`` (``kwargs`` go to ``wandb.init``: ``entity``,
            ``tags``, ``notes``, ``mode``, ...).
    """

    def __init__(
        self,
        name: str | None = None,
        save_dir: str | None = None,
        version: int | str | None = None,
        project: str | None = None,
        id: str | None = None,
        log_model: bool | str = False,
        offline: bool = False,
        prefix: str = "",
        **kwargs: Any,
    ) -> None:
        save_dir = "runs" if save_dir is None else save_dir
        name = "lightning_fm" if name is None else name
        root = Path(save_dir) / name
        self._run_name, self._run_save_dir = name, str(save_dir)
        self._run_version = f"version_{version}" if isinstance(version, int) else (version or next_version(root))
        self._run_dir = root / self._run_version
        saved = self._run_dir / RUN_ID_FILE
        if id == NEW_RUN:
            id = None
        elif id is None and saved.is_file():
            id = saved.read_text().strip()
        if id is None:
            id = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))
        kwargs = {k: v for k, v in kwargs.items() if v is not None}  # the CLI passes every wandb.init argument
        self._wandb_dir = os.environ.get("WANDB_DIR") or str(self._run_dir)  # W&B's own files (wandb.init's dir)
        self._run_id, self._run_started = id, False
        self._run_project = project or os.environ.get("WANDB_PROJECT") or "lightning_fm"
        self._run_group = kwargs.pop("group", name)
        super().__init__(
            name=f"{name}/{self._run_version}",
            save_dir=self._wandb_dir,
            id=id,
            project=self._run_project,
            log_model=log_model,
            offline=offline,
            prefix=prefix,
            group=self._run_group,
            **kwargs,
        )
        # Lightning's logger passes ``anonymous=None`` to wandb.init, on which W&B warns that the setting has no
        # effect: an argument not given is not passed
        drop_unset_wandb_init_argument(self, "anonymous")

    @property
    def experiment(self):
        """The W&B run (created on first use, on rank 0), its id saved in the run directory."""
        starting = not self._run_started and rank_zero_only.rank == 0
        if starting:
            Path(self._wandb_dir).mkdir(parents=True, exist_ok=True)
        run = super().experiment
        if starting:
            self._run_dir.mkdir(parents=True, exist_ok=True)
            (self._run_dir / RUN_ID_FILE).write_text(f"{run.id}\n")
            self._run_started = True
        return run

    @property
    def name(self) -> str:
        return self._run_name

    @property
    def version(self) -> str:
        return self._run_version

    @property
    def save_dir(self) -> str:
        return self._run_save_dir

    @property
    def log_dir(self) -> str:
        return str(self._run_dir)

    @property
    def run_id(self) -> str:
        """The W&B run id (the one given, saved or made up when the logger was created)."""
        return self._run_id

    def wandb_record(self) -> dict[str, str]:
        """What a checkpoint records of the W&B run (``checkpoint["lightning_fm"]["wandb"]``, written by the module's
        ``on_save_checkpoint``): its ``id``, ``project`` and ``group``, which the CLI gives a logger resuming from the
        checkpoint where none is set."""
        return {"id": self._run_id, "project": self._run_project, "group": self._run_group}
