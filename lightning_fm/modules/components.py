"""How a module keeps its parts: every component (backbone, path or field, coupling, volume, sampler, optimiser,
schedule) stored in the hyperparameters as a plain ``{"class_path", "init_args"}`` spec, so that
``Module.load_from_checkpoint(path)`` alone rebuilds the model."""

from __future__ import annotations

import inspect
from typing import Any

from lightning_fm.models import FieldHead
from lightning_fm.utils.hparams import StoredHyperparameters
from lightning_fm.utils.spec import build, class_path, to_spec


class Components(StoredHyperparameters):
    """Mixin of :class:`~lightning_fm.modules.base.FlowMatchingModule`: its components as specs, and checkpoints
    that name the module's class.

    ``derived_hparams``: arguments of a parent class that a subclass sets itself (not stored, not accepted when
    rebuilding)."""

    derived_hparams: tuple[str, ...] = ()

    def store_hyperparameters(self) -> None:
        """Keep the constructor arguments that rebuild this class (:meth:`accepted_hparams`), no CLI bookkeeping;
        called from ``__init__`` after ``save_hyperparameters``."""
        self.drop_cli_keys(*self.derived_hparams)
        accepted = self.accepted_hparams()
        for name in [name for name in self.hparams if name not in accepted]:
            del self.hparams[name]

    @classmethod
    def accepted_hparams(cls) -> set[str]:
        """The constructor arguments that rebuild this class: its own and those its ``**kwargs`` reach."""
        names: set[str] = set()
        for klass in cls.__mro__:
            if not (isinstance(klass, type) and issubclass(klass, Components)) or klass is Components:
                continue
            parameters = inspect.signature(klass.__init__).parameters.values()
            names |= {p.name for p in parameters if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"}
            if not any(p.kind is p.VAR_KEYWORD for p in parameters):
                break
        return names - set(cls.derived_hparams)

    def component(self, name: str, value: Any, default: Any) -> Any:
        """Build the component ``name`` (an object, a spec dict, or None for ``default``) and store its spec (unless
        a subclass derives it from its own arguments: ``derived_hparams``)."""
        built = build(value) if value is not None else default
        if name not in self.derived_hparams:
            self.hparams[name] = to_spec(built)
        return built

    def build_backbone(self, value: Any, default: Any, gives_field: bool) -> Any:
        """The ``backbone`` component, checked to give what the family regresses: the field ``(f_z, f_x)`` of a
        :class:`~lightning_fm.models.FieldHead` (IFM) or a velocity ``v(x, t)`` (CFM)."""
        backbone = self.component("backbone", value, default)
        if gives_field and not isinstance(backbone, FieldHead):
            raise ValueError(
                f"model.backbone must give the field (f_z, f_x): wrap it as lightning_fm.models.FieldHead "
                f"(got {type(backbone).__name__})"
            )
        if not gives_field and isinstance(backbone, FieldHead):
            raise ValueError(
                "model.backbone is a FieldHead (an IFM output (f_z, f_x)); CFMModule needs a velocity "
                "backbone such as lightning_fm.models.MLP"
            )
        return backbone

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Record the module's class beside its hyperparameters (``checkpoint["lightning_fm"]["module"]``): the CLI's
        ``--ckpt_path`` rebuilds that class from them. Under a trainer, also the DataModule's class beside the
        hyperparameters Lightning stores of it (``["data"]``, with ``datamodule_hyper_parameters``: the CLI rebuilds
        the data too) and the W&B run of a logger that keeps one (``["wandb"]``: its id, project and group, so that
        a resume from a copy of the file continues that run)."""
        record = checkpoint.setdefault("lightning_fm", {})
        record["module"] = class_path(self)
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a trainer
            return
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is not None and checkpoint.get("datamodule_hyper_parameters") is not None:
            record["data"] = class_path(datamodule)
        for logger in getattr(trainer, "loggers", ()):
            run = getattr(logger, "wandb_record", None)
            if callable(run):
                record["wandb"] = run()

    @classmethod
    def load_from_checkpoint(
        cls, checkpoint_path: Any, *args: Any, allowed_classes: tuple[str, ...] = (), **kwargs: Any
    ) -> Any:
        """Lightning's ``load_from_checkpoint`` (``weights_only=True`` by default), building nothing a checkpoint
        names outside the allow-list (``allowed_classes``: more trusted modules or classes), loading any family from
        ``FlowMatchingModule`` and refusing another family's checkpoint
        (:func:`lightning_fm.modules.loading.load_module`)."""
        from lightning_fm.modules.loading import load_module

        return load_module(cls, checkpoint_path, super().load_from_checkpoint, allowed_classes, *args, **kwargs)
