"""``python -m lightning_fm {fit,validate,test,predict} [-c config.yaml] [--model.x ...]``: a LightningCLI.

``python -m lightning_fm duality -c configs/toy/duality.yaml`` runs the duality experiment (see
:mod:`lightning_fm.experiments.duality.run`).

Model and data are chosen by class (``--model CFMModule``, ``--data DigitsDataModule``, or ``class_path`` in YAML).
The data shape is given once, by the data: a backbone whose ``data_shape`` is left out takes ``data.data_shape``
(also through wrappers such as ``FieldHead``). With no arguments, ``fit`` runs the default embedded job: OT-CFM on
the 2-D toy 8gaussians -> moons (the same settings as ``configs/toy/otcfm.yaml``), leaving a checkpoint with EMA
weights, the resolved config, metrics and sample plots in ``runs/<name>/version_<n>/`` (``runs``: the logger's
``save_dir`` if set, else ``--trainer.default_root_dir`` if given); ``fit --ckpt_path last`` resumes the newest run
of a config in its own directory, and ``test``/``predict --ckpt_path <run>/checkpoints/...`` write beside that run
(:mod:`lightning_fm.cli_runs`).

With ``--ckpt_path`` the checkpoint's model (class and stored hyperparameters) takes the place of the defaults, and
``-c`` files and command-line values override it, except for the settings that define the trained network, which
must match it (:mod:`lightning_fm.cli_checkpoint`); every class a checkpoint names must be allowed
(:mod:`lightning_fm.utils.spec`). A configuration error ends with one line, ``error: <key>: <what is wrong>``, and
exit status 2 (:mod:`lightning_fm.cli_errors`; ``LIGHTNING_FM_TRACEBACK=1`` shows the traceback instead).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentParser, Namespace
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

import lightning_fm.data  # noqa: F401  (registers the DataModules for class-name lookup)
from lightning_fm.cli_checkpoint import check_network
from lightning_fm.cli_errors import condense_parser_message, is_configuration_error, short_message
from lightning_fm.cli_runs import RunConfigCallback, check_schedule, continue_run, place_runs, validation_interval
from lightning_fm.modules import FlowMatchingModule
from lightning_fm.utils.checkpoint_files import CheckpointError, read_checkpoint, stored_model
from lightning_fm.utils.quiet import quiet
from lightning_fm.utils.spec import build

PROG = "python -m lightning_fm"
DESCRIPTION = (
    "Flow matching (CFM), interaction field matching (IFM, EFM) and forward-only IFM. Subcommands: fit, validate, "
    "test, predict (Lightning's), and duality: the duality experiment, `python -m lightning_fm duality -c "
    "configs/toy/duality.yaml` (see `python -m lightning_fm duality --help`).")
DUALITY_HELP = "Train a CFM and its dual forward-only IFM, check the duality, write a report"
#: ``--ckpt_path`` values that are not files (Lightning resolves them; ``last`` is resolved by the CLI)
CKPT_NAMES = ("last", "best", "hpc", "registry")
#: set to 1 to see the traceback of a configuration error instead of its one-line message
TRACEBACK_ENV = "LIGHTNING_FM_TRACEBACK"


def _spec(class_path: str, **init_args) -> dict:
    return {"class_path": class_path, "init_args": init_args}


# Validation every val_check_interval optimiser steps, not per epoch (check_val_every_n_epoch: None), at most
# max_steps // 2 apart (cli_runs.validation_interval).
TRAINER_DEFAULTS = {"max_steps": 3000, "log_every_n_steps": 50, "gradient_clip_val": 1.0,
                    "check_val_every_n_epoch": None, "val_check_interval": 1000}

# Set through the parser (not trainer_defaults) so that configs can override them and --print_config shows them.
PARSER_DEFAULTS = {
    "model": _spec(
        "lightning_fm.modules.CFMModule",
        backbone=_spec("lightning_fm.models.MLP", width=64, depth=3, activation="selu"),
        path=_spec("lightning_fm.paths.LinearPath", sigma=0.1),
        coupling=_spec("lightning_fm.couplings.OTCoupling", method="exact"),
        sampler=_spec("lightning_fm.sampling.ODESampler", method="euler", steps=100),
        optimizer=_spec("torch.optim.Adam", lr=2e-2),
        lr_scheduler=_spec("lightning_fm.utils.schedules.CosineDecay"),  # to 0 over trainer.max_steps
    ),
    "data": _spec("lightning_fm.data.ToyDataModule", source="8gaussians", target="moons", batch_size=256),
    "trainer.logger": _spec("lightning_fm.loggers.CSVLogger", name="toy_otcfm"),
    "trainer.callbacks": [
        _spec("lightning.pytorch.callbacks.EMAWeightAveraging", decay=0.99),
        _spec("lightning_fm.callbacks.CrashSafeModelCheckpoint", every_n_train_steps=1000),
        _spec("lightning.pytorch.callbacks.LearningRateMonitor", logging_interval="step"),
        _spec("lightning_fm.callbacks.SamplePlotCallback"),
        _spec("lightning_fm.callbacks.SampleWriter"),
        _spec("lightning_fm.callbacks.LikelihoodCallback"),  # val/nll, test/nll of forward-only models
    ],
}


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
    return isinstance(path, str) and bool(path) and path not in CKPT_NAMES and not path.startswith("registry:") \
        and "://" not in path


class ErrorContext:
    """What the CLI had parsed when an error came: to name the key of the component that failed to build."""

    config: Namespace | None = None


class FlowMatchingCLI(LightningCLI):
    def __init__(self, *args: Any, chosen: set[str] = frozenset(), argv: list[str] | None = None,
                 context: ErrorContext | None = None, **kwargs: Any) -> None:
        self.chosen, self.argv = set(chosen), list(argv or ["fit"])
        self.context = context or ErrorContext()
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({key: value for key, value in PARSER_DEFAULTS.items() if key not in self.chosen})

    def _add_subcommands(self, parser, **kwargs: Any) -> None:
        """Lightning's subcommands, loading checkpoints with ``weights_only=True`` by default, and ``duality`` in
        the help (:func:`main` runs it before this parser)."""
        super()._add_subcommands(parser, **kwargs)
        for subparser in self._subcommand_parsers.values():
            if any(action.dest == "weights_only" for action in subparser._actions):
                subparser.set_defaults({"weights_only": True})
        parser._subcommands_action.add_subcommand("duality", ArgumentParser(description=DUALITY_HELP),
                                                  help=DUALITY_HELP)

    def _parse_ckpt_path(self) -> None:
        """Where the run lands (:func:`~lightning_fm.cli_runs.place_runs`), which run it continues
        (:func:`~lightning_fm.cli_runs.continue_run`) and, with a checkpoint file, the model: the checkpoint's
        class and hyperparameters (complete component specs, ``FlowMatchingModule.on_save_checkpoint``) become the
        model's defaults, the command line and ``-c`` files are parsed again over them, and the settings that
        define the network are checked against it (:mod:`lightning_fm.cli_checkpoint`)."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self._place(subcommand)
        path = config.get("ckpt_path")
        if not is_checkpoint_file(path):
            return
        where = f"ckpt_path={path!r}"
        stored = stored_model(read_checkpoint(path), path)
        if "model" in self.chosen:  # a model class of the user's that is not the checkpoint's: say so first
            check_network(Namespace(class_path=config.model.class_path), stored, where)
        self._subcommand_parsers[subcommand].set_defaults({"model": stored})
        try:
            self.config = self.parser.parse_args(self.argv)
        except argparse.ArgumentError as err:
            raise CheckpointError(f"{where}: its stored model does not fit {stored['class_path']} "
                                  f"({condense_parser_message(str(err))})") from None
        config = self._place(subcommand)
        check_network(config.model, stored, where)

    def _place(self, subcommand: str) -> Namespace:
        config = self.config[subcommand]
        self.context.config = config
        check_schedule(config, subcommand)
        place_runs(config)
        continue_run(config, subcommand)
        return config

    def before_instantiate_classes(self) -> None:
        """Fit the validation cadence to the run's length (:func:`~lightning_fm.cli_runs.validation_interval`);
        link the data's shape to the backbone (``link_arguments`` cannot reach through a ``FieldHead``)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        self.context.config = config
        if self.subcommand == "fit":
            trainer = config.trainer
            trainer.val_check_interval = validation_interval(trainer.val_check_interval,
                                                             trainer.check_val_every_n_epoch, trainer.max_steps)
        datamodule = build(_as_dict(config.data))
        fill_data_shape(config.model.init_args.get("backbone"), tuple(datamodule.data_shape))


def _as_dict(namespace: Namespace) -> dict[str, Any]:
    return namespace.as_dict() if isinstance(namespace, Namespace) else dict(namespace)


def config_files(argv: list[str]) -> list[str]:
    """The values of ``-c``/``--config`` that name files (not inline YAML such as ``'{trainer: ...}'``)."""
    found = []
    for i, arg in enumerate(argv):
        value = argv[i + 1] if arg in ("-c", "--config") and i + 1 < len(argv) else \
            arg.split("=", 1)[1] if arg.startswith("--config=") else None
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
            raise ValueError(f"-c {value} must hold a mapping of config keys (trainer:, model:, data: ...), "
                             f"not a {type(content).__name__}")
        contents.append(content or {})
    return contents


def main(args: list[str] | None = None) -> FlowMatchingCLI | None:
    """Run the command line ``args`` (default: ``sys.argv``); returns the CLI (its ``trainer``, ``model``,
    ``datamodule``) after a LightningCLI subcommand. A configuration error prints ``error: <message>`` and exits
    with status 2 (a numerical fault, ``FloatingPointError``: 1); ``$LIGHTNING_FM_TRACEBACK=1`` re-raises it."""
    argv = sys.argv[1:] if args is None else args
    quiet()
    context = ErrorContext()
    try:
        configs = read_config_files(argv)
        if argv[:1] == ["duality"]:  # trains a CFM and its dual forward-only IFM, checks the duality, reports
            from lightning_fm.experiments.duality.run import main as duality_main

            return duality_main(argv[1:])
        return FlowMatchingCLI(
            chosen=chosen_components(argv, configs),
            argv=argv,
            context=context,
            model_class=FlowMatchingModule,
            datamodule_class=LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_defaults=TRAINER_DEFAULTS,
            seed_everything_default=0,
            save_config_callback=RunConfigCallback,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,  # the optimiser and schedule are the model's own arguments
            parser_kwargs=PARSER_KWARGS,
            args=None if (args is None and argv) else (argv or ["fit"]),  # no arguments at all: the default job
        )
    except Exception as err:
        if os.environ.get(TRACEBACK_ENV, "") not in ("", "0") or not is_configuration_error(err):
            raise
        print(f"error: {short_message(err, context.config)}", file=sys.stderr)
        raise SystemExit(1 if isinstance(err, FloatingPointError) else 2) from None


# the parsers raise their errors (main prints them in one line) instead of printing usage and exiting
PARSER_KWARGS: dict[str, Any] = {"prog": PROG, "description": DESCRIPTION, "exit_on_error": False,
                                 **{command: {"exit_on_error": False} for command in LightningCLI.subcommands()}}
