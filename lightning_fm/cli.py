"""``python -m lightning_fm {fit,validate,test,predict} [-c config.yaml] [--model.x ...]``: a LightningCLI.

``python -m lightning_fm duality -c configs/toy/duality.yaml`` runs the duality experiment (see
:mod:`lightning_fm.experiments.duality.run`).

Model and data are chosen by class (``--model CFMModule``, ``--data DigitsDataModule``, or ``class_path`` in YAML).
The data shape is given once, by the data: a backbone whose ``data_shape`` is left out takes ``data.data_shape``
(also through wrappers such as ``FieldHead``). With no arguments, ``fit`` runs the default embedded job: OT-CFM on
the 2-D toy 8gaussians -> moons (the same settings as ``configs/toy/otcfm.yaml``), leaving a checkpoint with EMA
weights, the resolved config, metrics and sample plots in ``runs/<name>/version_<n>/``; ``fit --ckpt_path last``
resumes the newest run of a config in its own directory, and ``test``/``predict --ckpt_path <run>/checkpoints/...``
write beside that run (:mod:`lightning_fm.cli_runs`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningCLI

import lightning_fm.data  # noqa: F401  (registers the DataModules for class-name lookup)
from lightning_fm.cli_runs import RunConfigCallback, continue_run
from lightning_fm.modules import FlowMatchingModule
from lightning_fm.utils.spec import build


def _spec(class_path: str, **init_args) -> dict:
    return {"class_path": class_path, "init_args": init_args}


TRAINER_DEFAULTS = {"max_steps": 5000, "log_every_n_steps": 50, "gradient_clip_val": 1.0}

# Set through the parser (not trainer_defaults) so that configs can override them and --print_config shows them.
PARSER_DEFAULTS = {
    "model": _spec(
        "lightning_fm.modules.CFMModule",
        backbone=_spec("lightning_fm.models.MLP", width=64, depth=3, activation="selu"),
        path=_spec("lightning_fm.paths.LinearPath", sigma=0.1),
        coupling=_spec("lightning_fm.couplings.OTCoupling", method="exact"),
        sampler=_spec("lightning_fm.sampling.ODESampler", method="euler", steps=100),
        optimizer=_spec("torch.optim.Adam", lr=1e-3),
    ),
    "data": _spec("lightning_fm.data.ToyDataModule", source="8gaussians", target="moons", batch_size=256),
    "trainer.logger": _spec("lightning_fm.loggers.CSVLogger", save_dir="runs", name="toy_otcfm"),
    "trainer.callbacks": [
        _spec("lightning.pytorch.callbacks.EMAWeightAveraging", decay=0.999),
        _spec("lightning.pytorch.callbacks.ModelCheckpoint", save_last=True, every_n_train_steps=1000),
        _spec("lightning.pytorch.callbacks.LearningRateMonitor", logging_interval="step"),
        _spec("lightning_fm.callbacks.SamplePlotCallback"),
        _spec("lightning_fm.callbacks.SampleWriter"),
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


def chosen_components(argv: list[str]) -> set[str]:
    """The top-level components (``model``, ``data``) that the command line chooses itself: by a config file given
    with ``-c``/``--config`` that sets them, or by a class on the command line (``--model X``, ``--data=X``,
    ``--data.class_path X``). Only the others take the default job's (toy) classes: jsonargparse carries the
    ``init_args`` of a default class over to another class wherever the names match, so a default under a chosen
    class would leak the toy's settings (e.g. ``n_val``) into it."""
    chosen: set[str] = set()
    for i, arg in enumerate(argv):
        if arg in ("-c", "--config") and i + 1 < len(argv) or arg.startswith("--config="):
            path = argv[i + 1] if "=" not in arg else arg.split("=", 1)[1]
            try:
                content = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError):
                continue  # jsonargparse reports the unreadable file itself
            chosen |= {key for key in ("model", "data") if isinstance(content, dict) and key in content}
        for key in ("model", "data"):
            if arg == f"--{key}" or arg.startswith((f"--{key}=", f"--{key}.class_path")):
                chosen.add(key)
    return chosen


class FlowMatchingCLI(LightningCLI):
    def __init__(self, *args: Any, chosen: set[str] = frozenset(), **kwargs: Any) -> None:
        self.chosen = set(chosen)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.set_defaults({key: value for key, value in PARSER_DEFAULTS.items() if key not in self.chosen})

    def _parse_ckpt_path(self) -> None:
        """``--ckpt_path``: the checkpoint's hyperparameters (complete component specs) configure the model, as
        ``init_args`` of the class the checkpoint records (``FlowMatchingModule.on_save_checkpoint``)."""
        subcommand = self.config.get("subcommand")
        path = self.config[subcommand].get("ckpt_path") if subcommand else None
        if not (path and Path(path).is_file()):
            return
        checkpoint = torch.load(path, weights_only=True, map_location="cpu")
        module = checkpoint.get("lightning_fm", {}).get("module")
        if module is None:  # not written by this framework: LightningCLI's own reading
            return super()._parse_ckpt_path()
        model = {"class_path": module, "init_args": checkpoint.get("hyper_parameters", {})}
        self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)

    def before_instantiate_classes(self) -> None:
        """Link the data's shape to the backbone (``link_arguments`` cannot reach through a ``FieldHead``); point
        the logger at the run directory that the command continues (:func:`~lightning_fm.cli_runs.continue_run`)."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        if self.subcommand:
            continue_run(config, self.subcommand)
        datamodule = build(_as_dict(config.data))
        fill_data_shape(config.model.init_args.get("backbone"), tuple(datamodule.data_shape))


def _as_dict(namespace: Namespace) -> dict[str, Any]:
    return namespace.as_dict() if isinstance(namespace, Namespace) else dict(namespace)


def main(args: list[str] | None = None) -> FlowMatchingCLI | None:
    """Run the command line ``args`` (default: ``sys.argv``); returns the CLI (its ``trainer``, ``model``,
    ``datamodule``) after a LightningCLI subcommand."""
    argv = sys.argv[1:] if args is None else args
    if argv[:1] == ["duality"]:  # trains a CFM and its dual forward-only IFM, checks the duality, reports
        from lightning_fm.experiments.duality.run import main as duality_main

        return duality_main(argv[1:])
    return FlowMatchingCLI(
        chosen=chosen_components(argv),
        model_class=FlowMatchingModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,
        seed_everything_default=0,
        save_config_callback=RunConfigCallback,
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the optimiser and schedule are the model's own arguments
        args=None if (args is None and argv) else (argv or ["fit"]),  # no arguments at all: the default job
    )
