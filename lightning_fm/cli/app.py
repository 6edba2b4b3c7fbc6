"""``python -m lightning_fm {fit,validate,test,predict} [-c config.yaml] [--model.x ...]``: a LightningCLI, built on
its public hooks (``add_arguments_to_parser``, ``before_instantiate_classes``) and a pure decision step before
parsing (:func:`split_checkpoint`).

``python -m lightning_fm duality -c configs/toy/duality.yaml`` runs the duality experiment (see
:mod:`lightning_fm.experiments.duality.run`).

Model and data are chosen by class (``--model CFMModule``, ``--data DigitsDataModule``, or ``class_path`` in YAML).
The data shape is given once, by the data: a backbone whose ``data_shape`` is left out takes ``data.data_shape``
(also through wrappers such as ``FieldHead``). What recipes share (seed, trainer block, callbacks) is read from
``configs/base/``: ``run.yaml`` under every run, then the base a ``-c`` file names with ``base: <name>`` (or
``--base``; default ``toy.yaml``), as the parser's defaults (:func:`chosen_base`, :func:`parser_defaults`;
docs/guides/configs.md). With no arguments, ``fit`` runs the default embedded job: OT-CFM on
the 2-D toy 8gaussians -> moons (read from the shipped ``configs/toy/otcfm.yaml``, :func:`default_job`), leaving a
checkpoint with EMA weights, the resolved config, metrics and sample plots in ``runs/<name>/version_<n>/``
(``runs``: the logger's ``save_dir`` if set, else ``--trainer.default_root_dir`` if given); ``fit --ckpt_path last``
resumes the newest run of a config in its own directory, and ``test``/``predict --ckpt_path
<run>/checkpoints/...`` write beside that run (:mod:`lightning_fm.cli.run_config`).

With ``--ckpt_path`` the checkpoint's model (class and stored hyperparameters) and data (the DataModule's class and
hyperparameters it records) take the place of the defaults, and with no class chosen by the command line the seed and
trainer block of the run's ``config.yaml`` too (:meth:`FlowMatchingCLI.use_checkpoint_model`); ``-c`` files and
command-line values override them, except for the settings that define the trained network, which
must match it (:mod:`lightning_fm.cli.checkpoint_rules`); every class a checkpoint names must be allowed
(:mod:`lightning_fm.utils.spec`). A configuration error ends with one line, ``error: <key>: <what is wrong>``, and
exit status 2 (:mod:`lightning_fm.cli.errors`; ``LIGHTNING_FM_TRACEBACK=1`` shows the traceback instead).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningCLI

import lightning_fm.data  # noqa: F401  (registers the DataModules for class-name lookup)
from lightning_fm.cli.checkpoint_rules import check_network
from lightning_fm.cli.errors import condense_parser_message, is_configuration_error, short_message
from lightning_fm.cli.run_config import (
    RunConfigCallback,
    check_schedule,
    continue_run,
    place_runs,
    resume_wandb_run,
    share_run_directory,
    validation_interval,
)
from lightning_fm.cli.run_dirs import run_of_checkpoint
from lightning_fm.modules import FlowMatchingModule
from lightning_fm.modules.loading import CheckpointError, read_checkpoint, stored_data, stored_model
from lightning_fm.utils.spec import build

PROG = "python -m lightning_fm"
DESCRIPTION = (
    "Flow matching (CFM), interaction field matching (IFM, EFM) and forward-only IFM. Subcommands: fit, validate, "
    "test, predict (Lightning's), and duality: the duality experiment, `python -m lightning_fm duality -c "
    "configs/toy/duality.yaml` (see `python -m lightning_fm duality --help`)."
)
#: ``--ckpt_path`` values that are not files (Lightning resolves them; ``last`` is resolved by the CLI)
CKPT_NAMES = ("last", "best", "hpc", "registry")
#: set to 1 to see the traceback of a configuration error instead of its one-line message
TRACEBACK_ENV = "LIGHTNING_FM_TRACEBACK"


#: the default job: ``python -m lightning_fm fit`` with no arguments (its model and data are also the defaults of
#: any run that chooses no class of its own; its trainer settings are every run's defaults)
DEFAULT_JOB = Path("configs", "toy", "otcfm.yaml")
#: the shared bases of the recipes (docs/guides/configs.md): ``configs/base/<name>.yaml``
BASE_DIR = Path("configs", "base")
#: the base under every run: the seed, the trainer block, the callbacks of the 2-D runs
ROOT_BASE = "run"
#: the base of a run whose config files name none (the toy recipes, the default job): ``run`` and the likelihood
DEFAULT_BASE = "toy"


def repository_file(relative: Path) -> Path:
    """A shipped file of the repository (``configs/...``): beside the package in a clone (or an editable install),
    else in the working directory (the Docker image's ``/workspace``)."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / relative).is_file():
            return root / relative
    raise ValueError(
        f"{relative} is neither beside the package nor in the working directory: run from a clone of the "
        "repository, or give a config with -c"
    )


@lru_cache(maxsize=1)
def default_job() -> dict[str, Any]:
    """The shipped ``configs/toy/otcfm.yaml``."""
    try:
        return yaml.safe_load(repository_file(DEFAULT_JOB).read_text())
    except ValueError:
        raise ValueError(
            f"the default job is the repository's {DEFAULT_JOB}, which is neither beside the package nor in "
            "the working directory: run from a clone of the repository, or give a config with -c"
        ) from None


@cache
def read_base(name: str) -> dict[str, Any]:
    """The base ``name``: ``configs/base/<name>.yaml``, or a path to a YAML file (a name with ``/`` or ending in
    ``.yaml``/``.yml``, relative to the working directory)."""
    if "/" in name or name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise ValueError(f"base: {name}: no such file")
    else:
        try:
            path = repository_file(BASE_DIR / f"{name}.yaml")
        except ValueError:
            raise ValueError(f"base: {name!r} names no file of {BASE_DIR}/ (nor a path to a YAML file)") from None
    content = yaml.safe_load(path.read_text()) or {}
    if not isinstance(content, dict) or set(content) - {"seed_everything", "trainer"}:
        raise ValueError(f"base: {name}: a base holds seed_everything and trainer: only, in a mapping")
    return content


def chosen_base(argv: list[str], configs: list[dict[str, Any]]) -> str:
    """The decision before parsing: the base of the run, named by ``base:`` in a ``-c`` file (the last one that names
    one; ``configs``: their contents, :func:`read_config_files`) or by ``--base NAME`` on the command line (which
    wins); :data:`DEFAULT_BASE` if none does."""
    base = DEFAULT_BASE
    for content in configs:
        if content.get("base") is not None:
            base = str(content["base"])
    for i, arg in enumerate(argv):
        if arg == "--base" and i + 1 < len(argv):
            base = argv[i + 1]
        elif arg.startswith("--base="):
            base = arg.split("=", 1)[1]
    return base


def apply_layer(defaults: dict[str, Any], layer: dict[str, Any]) -> None:
    """Put a base's settings into ``defaults`` (flat ``trainer.x`` keys) as jsonargparse would read the file:
    ``key+:`` appends its list to the current one, any other key replaces."""
    flat = {f"trainer.{key}": value for key, value in (layer.get("trainer") or {}).items()}
    if "seed_everything" in layer:
        flat["seed_everything"] = layer["seed_everything"]
    for key, value in flat.items():
        if key.endswith("+"):
            key = key[:-1]
            value = [*defaults.get(key, []), *(value if isinstance(value, list) else [value])]
        defaults[key] = value


def parser_defaults(chosen: set[str], base: str = DEFAULT_BASE) -> dict[str, Any]:
    """The parser's defaults (module docstring): ``configs/base/run.yaml`` (seed, trainer block, callbacks), then the
    chosen base over it (:func:`chosen_base`), then the default job's trainer settings (its length, validation
    interval and logger), and its model and data unless the command line chooses their classes (``chosen``)."""
    job = default_job()
    defaults: dict[str, Any] = {}
    for name in dict.fromkeys((ROOT_BASE, base)):
        apply_layer(defaults, read_base(name))
    apply_layer(defaults, {"trainer": job.get("trainer", {})})
    defaults.update({key: job[key] for key in ("model", "data") if key not in chosen and key in job})
    return defaults


def fill_data_shape(backbone: Namespace | None, data_shape: tuple[int, ...]) -> None:
    """Give ``data_shape`` to the backbone config, or to the innermost backbone of wrappers such as ``FieldHead``
    (``init_args.backbone``), where it is left out (None)."""
    while isinstance(backbone, Namespace) and isinstance(backbone.get("init_args"), Namespace):
        args = backbone.init_args
        if "data_shape" in args:
            if args.data_shape is None:
                args.data_shape = list(data_shape)
            return
        backbone = args.get("backbone")


def chooses_class(value: Any) -> bool:
    """Whether a config file's ``model:`` or ``data:`` entry names a class (a name or a ``class_path``), not only
    ``init_args`` for the class chosen elsewhere."""
    return isinstance(value, str) or isinstance(value, dict) and "class_path" in value


def chosen_components(argv: list[str], configs: list[dict[str, Any]]) -> set[str]:
    """The top-level components (``model``, ``data``) that the command line chooses itself: by a config file given
    with ``-c``/``--config`` (``configs``: their contents, :func:`read_config_files`) that names their class, or by a
    class on the command line (``--model X``, ``--data=X``, ``--data.class_path X``). Only the others take the
    default job's (toy) classes: jsonargparse carries the ``init_args`` of a default class over to another class
    wherever the names match, so a default under a chosen class would leak the toy's settings (e.g. ``n_val``) into
    it."""
    chosen = {key for content in configs for key in ("model", "data") if chooses_class(content.get(key))}
    for arg in argv:
        for key in ("model", "data"):
            if arg == f"--{key}" or arg.startswith((f"--{key}=", f"--{key}.class_path")):
                chosen.add(key)
    return chosen


def is_checkpoint_file(path: Any) -> bool:
    """Whether ``--ckpt_path`` names a local file (not ``last``/``best``/``hpc``/``registry``, not a URL)."""
    return (
        isinstance(path, str)
        and bool(path)
        and path not in CKPT_NAMES
        and not path.startswith("registry:")
        and "://" not in path
    )


class ErrorContext:
    """What the CLI had parsed when an error came: to name the key of the component that failed to build, and its
    subcommand parsers: to suggest a valid key for a misspelt one (:meth:`known_keys`)."""

    config: Namespace | None = None

    def __init__(self) -> None:
        self.parsers: list[Any] = []

    def known_keys(self) -> list[str]:
        """The dotted keys of the subcommand parsers (those of their defaults, jsonargparse's public
        ``get_defaults``: every trainer key, the default classes' arguments)."""
        keys: dict[str, None] = {}
        for parser in self.parsers:
            try:
                keys.update(dict.fromkeys(parser.get_defaults().keys()))
            except Exception:  # a message is being written: a parser that cannot list its defaults adds nothing
                continue
        return list(keys)


def split_checkpoint(argv: list[str]) -> tuple[list[str], str | None]:
    """The decision before parsing: ``argv`` without a ``--ckpt_path`` that names a checkpoint file, and that file
    (None if there is none). The CLI passes the file to the Trainer itself after parsing, so that Lightning does not
    parse the checkpoint's hyperparameters over the command line (this framework's precedence is
    :mod:`lightning_fm.cli.checkpoint_rules`'); ``last``, ``hpc`` and the like stay. With ``--print_config`` nothing is
    taken out (the printed config shows it)."""
    if "--print_config" in argv or any(a.startswith("--print_config=") for a in argv):
        return list(argv), None
    out, found, skip = [], None, False
    for i, arg in enumerate(argv):
        if skip:
            skip = False
            continue
        value = (
            argv[i + 1]
            if arg == "--ckpt_path" and i + 1 < len(argv)
            else arg.split("=", 1)[1]
            if arg.startswith("--ckpt_path=")
            else None
        )
        if value is not None and is_checkpoint_file(value) and Path(value).is_file():
            found, skip = value, arg == "--ckpt_path"
            continue
        out.append(arg)
    return out, found


class FlowMatchingCLI(LightningCLI):
    """LightningCLI with the framework's defaults (:func:`parser_defaults`), run directories, checkpoint rules and
    data-shape link, all decided in the public hooks ``add_arguments_to_parser`` and ``before_instantiate_classes``.
    ``argv``: the command line without a checkpoint file, ``ckpt_path``: that file (:func:`split_checkpoint`)."""

    def __init__(
        self,
        *args: Any,
        chosen: set[str] = frozenset(),
        base: str = DEFAULT_BASE,
        argv: list[str] | None = None,
        ckpt_path: str | None = None,
        context: ErrorContext | None = None,
        **kwargs: Any,
    ) -> None:
        self.chosen, self.base, self.argv, self.ckpt_path = set(chosen), base, list(argv or ["fit"]), ckpt_path
        self.context = context or ErrorContext()
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        # ``base:`` of a config file (or --base): read before parsing (:func:`chosen_base`); the key is accepted here
        # and left out of printed and saved configs (help=SUPPRESS), which are complete without it
        parser.add_argument("--base", type=str | None, default=None, help=argparse.SUPPRESS)
        parser.set_defaults(parser_defaults(self.chosen, self.base))
        self.context.parsers.append(parser)

    def parse_arguments(self, parser, args) -> None:
        """Lightning's parsing, then the values Lightning would take and fail on later, checked before it seeds
        (:func:`~lightning_fm.cli.run_config.check_schedule`)."""
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand:
            self.context.config = self.config[subcommand]
            check_schedule(self.config[subcommand], subcommand)

    def before_instantiate_classes(self) -> None:
        """Where the run lands (:func:`~lightning_fm.cli.run_config.place_runs`), which run it continues
        (:func:`~lightning_fm.cli.run_config.continue_run`) and, with a checkpoint file, the model: the checkpoint's
        class and hyperparameters (complete component specs) are parsed first, the command line and ``-c`` files
        over them, and the settings that define the network are checked against it
        (:mod:`lightning_fm.cli.checkpoint_rules`). Checkpoints load with ``weights_only=True`` unless the command
        line says otherwise. Then the validation cadence is fitted to the run's length
        (:func:`~lightning_fm.cli.run_config.validation_interval`) and the data's shape given to the backbone
        (``link_arguments`` cannot reach through a ``FieldHead``)."""
        subcommand = self.subcommand
        if subcommand:
            config = self.place(subcommand, self.ckpt_path)
            path = config.get("ckpt_path")
            if is_checkpoint_file(path):
                self.use_checkpoint_model(subcommand, path)
        config = self.config[subcommand] if subcommand else self.config
        self.context.config = config
        if subcommand and "weights_only" in config and config.weights_only is None:
            config.weights_only = True
        if subcommand == "fit":
            trainer = config.trainer
            trainer.val_check_interval = validation_interval(
                trainer.val_check_interval, trainer.check_val_every_n_epoch, trainer.max_steps
            )
        datamodule = build(_as_dict(config.data))
        fill_data_shape(config.model.init_args.get("backbone"), tuple(datamodule.data_shape))

    def use_checkpoint_model(self, subcommand: str, path: str) -> None:
        """Parse the command line again over what the checkpoint's run stored: its model (class and stored
        hyperparameters), its data where the command line chooses no data class (the DataModule's class and
        hyperparameters recorded in the checkpoint, else the ``data`` of the run's ``config.yaml``) and, where the
        command line chooses neither model nor data class (no recipe given), the run's seed and trainer block from
        the ``config.yaml`` beside its ``checkpoints/`` (:func:`run_settings`); then the W&B run the checkpoint
        records is continued by a W&B logger that names none (:func:`~lightning_fm.cli.run_config.resume_wandb_run`).
        """
        where = f"ckpt_path={path!r}"
        checkpoint = read_checkpoint(path)
        stored = stored_model(checkpoint, path)
        if "model" in self.chosen:  # a model class of the user's that is not the checkpoint's: say so first
            check_network(Namespace(class_path=self.config[subcommand].model.class_path), stored, where)
        run = run_config(path)
        layers = []
        if not self.chosen and run is not None:
            layers += ["--config", json.dumps(run_settings(run))]
        layers += ["--model", json.dumps(stored)]
        data = stored_data(checkpoint, path) or (run or {}).get("data")
        if "data" not in self.chosen and data is not None:
            layers += ["--data", json.dumps(data)]
        argv = [self.argv[0], *layers, *self.argv[1:]]
        try:
            self.config = self.parser.parse_args(argv)
        except argparse.ArgumentError as err:
            raise CheckpointError(
                f"{where}: its stored model does not fit {stored['class_path']} ({condense_parser_message(str(err))})"
            ) from None
        config = self.place(subcommand, path)
        check_network(config.model, stored, where)
        resume_wandb_run(config, (checkpoint.get("lightning_fm") or {}).get("wandb"))

    def place(self, subcommand: str, ckpt_path: str | None) -> Namespace:
        config = self.config[subcommand]
        if ckpt_path is not None:
            config.ckpt_path = ckpt_path
        self.context.config = config
        with share_run_directory(config):  # a list of loggers ([CSV, W&B]): one run directory
            place_runs(config)
            continue_run(config, subcommand)
        return config

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        """Lightning's, with :class:`RunProgressBar` where the progress bar is on and no progress bar is given."""
        trainer = self.config_init[self.subcommand].trainer if self.subcommand else self.config_init.trainer
        callbacks = trainer.get("callbacks")
        callbacks = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list) else [callbacks]
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs.setdefault("callbacks", [*callbacks, RunProgressBar()])
        return super().instantiate_trainer(**kwargs)


class RunProgressBar(TQDMProgressBar):
    """Lightning's progress bar showing the run's whole version, ``v_num=version_0`` (Lightning's shows the last four
    characters of a version string, ``on_0``), and with W&B the W&B run id, ``wandb=<id>``."""

    def get_metrics(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, int | float | str]:
        items = super().get_metrics(trainer, pl_module)
        versions = [str(v if isinstance(v, str) else f"version_{v}") for v in (lg.version for lg in trainer.loggers)]
        if versions and None not in (lg.version for lg in trainer.loggers):
            items["v_num"] = ",".join(dict.fromkeys(versions))
        ids = [lg.run_id for lg in trainer.loggers if isinstance(getattr(lg, "run_id", None), str)]
        if ids:
            items["wandb"] = ",".join(dict.fromkeys(ids))
        return items


#: the run's settings read from its ``config.yaml`` (:func:`run_settings`): the seed and the trainer block
RUN_SETTINGS = ("seed_everything", "trainer")
#: logger settings of a run's ``config.yaml`` that belong to the command that wrote it, not to the run
COMMAND_LOGGER_KEYS = ("version", "keep_until_step", "metrics_file")


def run_config(ckpt_path: str) -> dict[str, Any] | None:
    """The resolved config the checkpoint's run wrote, ``<run>/config.yaml`` beside its ``checkpoints/``
    (:func:`~lightning_fm.cli.run_dirs.run_of_checkpoint`), or None (a checkpoint kept elsewhere, an unreadable
    file)."""
    run = run_of_checkpoint(Path(ckpt_path))
    path = run / "config.yaml" if run is not None else None
    if path is None or not path.is_file():
        return None
    try:
        content = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return None
    return content if isinstance(content, dict) else None


def run_settings(run: dict[str, Any]) -> dict[str, Any]:
    """The seed and trainer block of a run's ``config.yaml``, less the logger settings of the command that wrote it
    (:data:`COMMAND_LOGGER_KEYS`: the CLI decides them again for this command)."""
    settings = {key: run[key] for key in RUN_SETTINGS if key in run}
    trainer = settings.get("trainer")
    if isinstance(trainer, dict):
        logger = trainer.get("logger")
        for item in logger if isinstance(logger, list) else [logger]:
            if isinstance(item, dict) and isinstance(item.get("init_args"), dict):
                for key in COMMAND_LOGGER_KEYS:
                    item["init_args"].pop(key, None)
    return settings


def _as_dict(namespace: Namespace) -> dict[str, Any]:
    return namespace.as_dict() if isinstance(namespace, Namespace) else dict(namespace)


def config_files(argv: list[str]) -> list[str]:
    """The values of ``-c``/``--config`` that name files (not inline YAML such as ``'{trainer: ...}'``)."""
    found = []
    for i, arg in enumerate(argv):
        value = (
            argv[i + 1]
            if arg in ("-c", "--config") and i + 1 < len(argv)
            else arg.split("=", 1)[1]
            if arg.startswith("--config=")
            else None
        )
        if value is not None and not value.lstrip().startswith(("{", "[")) and "\n" not in value:
            found.append(value)
    return found


def read_config_files(argv: list[str]) -> list[dict[str, Any]]:
    """The contents of the ``-c`` files, in order; each must exist and hold a YAML mapping, else a ValueError naming
    the file (and the YAML line)."""
    contents = []
    for value in config_files(argv):
        path = Path(value)
        if not path.is_file():
            raise ValueError(f"-c {value}: no such config file" + (" (a directory)" if path.is_dir() else ""))
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ValueError(f"-c {value} is not valid YAML{where}: {err.problem or err.context}") from None
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            raise ValueError(f"-c {value} is not valid YAML: {' '.join(str(err).split())}") from None
        if content is not None and not isinstance(content, dict):
            raise ValueError(
                f"-c {value} must hold a mapping of config keys (trainer:, model:, data: ...), "
                f"not a {type(content).__name__}"
            )
        contents.append(content or {})
    return contents


def main(args: list[str] | None = None) -> FlowMatchingCLI | None:
    """Run the command line ``args`` (default: ``sys.argv``); returns the CLI (its ``trainer``, ``model``,
    ``datamodule``) after a LightningCLI subcommand. A configuration error prints ``error: <message>`` and exits
    with status 2 (a numerical fault, ``FloatingPointError``: 1); ``$LIGHTNING_FM_TRACEBACK=1`` re-raises it."""
    argv = sys.argv[1:] if args is None else args
    context = ErrorContext()
    try:
        configs = read_config_files(argv)
        if argv[:1] == ["duality"]:  # trains a CFM and its dual forward-only IFM, checks the duality, reports
            from lightning_fm.experiments.duality.run import main as duality_main

            return duality_main(argv[1:])
        given = argv
        argv, ckpt_path = split_checkpoint(argv)
        return FlowMatchingCLI(
            chosen=chosen_components(argv, configs),
            base=chosen_base(argv, configs),
            argv=argv or ["fit"],
            ckpt_path=ckpt_path,
            context=context,
            model_class=FlowMatchingModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            save_config_callback=RunConfigCallback,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,  # the optimiser and schedule are the model's own arguments
            parser_kwargs=PARSER_KWARGS,
            # sys.argv as Lightning reads it, unless a checkpoint file was taken out; no arguments: the default job
            args=None if (args is None and argv and argv == given) else (argv or ["fit"]),
        )
    except Exception as err:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or not is_configuration_error(err):
            raise
        print(f"error: {short_message(err, context.config, context.known_keys)}", file=sys.stderr)
        raise SystemExit(1 if isinstance(err, FloatingPointError) else 2) from None


# the parsers raise their errors (main prints them in one line) instead of printing usage and exiting
PARSER_KWARGS: dict[str, Any] = {
    "prog": PROG,
    "description": DESCRIPTION,
    "exit_on_error": False,
    **{command: {"exit_on_error": False} for command in LightningCLI.subcommands()},
}
