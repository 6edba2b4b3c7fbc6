"""Reading a checkpoint file before anything is built from it, with an error that says what is wrong with it: it
does not exist, is not a checkpoint, is truncated, holds pickled Python objects (``weights_only``), was not written
by this framework, or names classes outside the allow-list (:func:`lightning_fm.utils.spec.only_allowed_classes`).
Tensors are memory-mapped, not read: only the small records (hyperparameters, step) are.
"""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from lightning_fm.utils.spec import (
    allowed_prefixes,
    import_class,
    only_allowed_classes,
    refusal,
    untrusted_class_paths,
)

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format is a zip archive
#: the DataModules a checkpoint may name (beside the model's classes: :func:`~lightning_fm.utils.spec.allowed_prefixes`)
DATA_CLASSES = ("lightning_fm.data",)


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used, and why."""


def read_checkpoint(path: str | Path, key: str = "ckpt_path") -> dict[str, Any]:
    """The checkpoint at ``path`` (``torch.load(weights_only=True, mmap=True)``), or :class:`CheckpointError` naming
    the config ``key`` and the file."""
    path = Path(path)
    where = f"{key}={str(path)!r}"
    if not path.exists():
        raise CheckpointError(
            f"{where}: no such file (a training run keeps its checkpoints in "
            "<save_dir>/<name>/version_<n>/checkpoints/; 'last' resumes the newest run)"
        )
    if path.is_dir():
        raise CheckpointError(f"{where} is a directory, not a checkpoint file (e.g. {path / 'last.ckpt'})")
    with open(path, "rb") as file:
        head = file.read(len(ZIP_MAGIC))
    if head != ZIP_MAGIC:
        raise CheckpointError(
            f"{where} is not a checkpoint: not a file written by torch.save "
            f"({path.stat().st_size} bytes starting with {head!r})"
        )
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{where} is truncated or damaged: the end of its archive is missing (an interrupted "
            "save or copy); use an earlier checkpoint of the run"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"{where} holds pickled Python objects, not only tensors and plain values, and was "
            f"refused (weights_only loading; nothing in it was run): {str(err).splitlines()[-1]}"
        ) from None
    except (RuntimeError, EOFError, OSError, KeyError, ValueError) as err:
        raise CheckpointError(f"{where} cannot be read as a checkpoint: {str(err).splitlines()[0]}") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{where} is a torch file but not a Lightning checkpoint (no 'state_dict')")
    return checkpoint


def stored_model(
    checkpoint: dict[str, Any], path: str | Path, key: str = "ckpt_path", allowed: Iterable[str] = ()
) -> dict[str, Any]:
    """The model spec ``{"class_path", "init_args"}`` a checkpoint of this framework records (the module's class,
    ``checkpoint["lightning_fm"]["module"]``, and its hyperparameters), once every class it names is allowed
    (``allowed``: more modules or classes, beside the defaults and ``$LIGHTNING_FM_ALLOWED_CLASSES``)."""
    where = f"{key}={str(path)!r}"
    record = checkpoint.get("lightning_fm")
    module = record.get("module") if isinstance(record, dict) else None
    if not isinstance(module, str):
        raise CheckpointError(
            f"{where} was not written by lightning_fm (it records no lightning_fm module class): "
            "a checkpoint of another model family or framework"
        )
    spec = {"class_path": module, "init_args": dict(checkpoint.get("hyper_parameters") or {})}
    found = untrusted_class_paths(spec, allowed_prefixes(allowed))
    if found:
        raise refusal(f"{where}", found)
    return spec


def stored_data(
    checkpoint: dict[str, Any], path: str | Path, key: str = "ckpt_path", allowed: Iterable[str] = ()
) -> dict[str, Any] | None:
    """The DataModule spec ``{"class_path", "init_args"}`` a checkpoint of this framework records (its class,
    ``checkpoint["lightning_fm"]["data"]``, and Lightning's ``datamodule_hyper_parameters``), once every class it
    names is allowed (the framework's DataModules, :data:`DATA_CLASSES`, too); None for a checkpoint that records no
    DataModule (written before it did, or without one)."""
    record = checkpoint.get("lightning_fm")
    data = record.get("data") if isinstance(record, dict) else None
    hparams = checkpoint.get("datamodule_hyper_parameters")
    if not isinstance(data, str) or not isinstance(hparams, dict):
        return None
    spec = {"class_path": data, "init_args": dict(hparams)}
    found = untrusted_class_paths(spec, allowed_prefixes((*DATA_CLASSES, *allowed)))
    if found:
        raise refusal(f"{key}={str(path)!r}", found)
    return spec


def load_module(
    cls: type, path: Any, load: Callable[..., Any], allowed: Iterable[str] = (), *args: Any, **kwargs: Any
) -> Any:
    """``cls.load_from_checkpoint(path)`` made safe: the file is checked first (:func:`read_checkpoint`,
    :func:`stored_model`: nothing is imported from a checkpoint that names a class outside the allow-list), a
    checkpoint of a subclass of ``cls`` is loaded by that subclass (``FlowMatchingModule.load_from_checkpoint``
    loads any family), one of another family is an error naming the class to use, and Lightning's ``load`` then
    reads it with ``weights_only=True`` (unless given) while :func:`~lightning_fm.utils.spec.build` imports only
    allowed classes. A file-like object or URL ``path`` is not pre-checked (the import restriction holds)."""
    allowed = tuple(allowed)
    if isinstance(path, (str, Path)) and "://" not in str(path):
        spec = stored_model(read_checkpoint(path, "checkpoint_path"), path, "checkpoint_path", allowed)
        with only_allowed_classes(f"checkpoint_path={str(path)!r}", allowed):
            recorded = import_class(spec["class_path"])
        if not (isinstance(recorded, type) and issubclass(recorded, cls)):
            raise CheckpointError(
                f"checkpoint_path={str(path)!r} holds a {spec['class_path']}, which "
                f"{cls.__name__} cannot load: use {getattr(recorded, '__name__', recorded)}"
                ".load_from_checkpoint (or FlowMatchingModule.load_from_checkpoint)"
            )
        if recorded is not cls:
            return recorded.load_from_checkpoint(path, *args, allowed_classes=allowed, **kwargs)
    kwargs.setdefault("weights_only", True)
    with only_allowed_classes(f"checkpoint_path={path!r}", allowed):
        return load(path, *args, **kwargs)
