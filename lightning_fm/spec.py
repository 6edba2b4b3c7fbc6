"""Rebuildable components: every path, coupling, field and backbone records the arguments it was built with.

A component's *spec* is the plain dict ``{"class_path": "pkg.mod.Class", "init_args": {...}}`` (the format of
LightningCLI configs). Modules store the specs of their parts in their hyperparameters, so
``Module.load_from_checkpoint(path)`` alone rebuilds backbone, path, coupling and field, with no pickled objects.
"""
from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any


class Buildable:
    """Mixin: records the bound ``__init__`` arguments of the most derived class in ``self.init_args``."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            if "_init_args" not in self.__dict__:  # the outermost (most derived) __init__ records
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                recorded = {k: v for k, v in bound.arguments.items() if k != "self"}
                for name, param in signature.parameters.items():
                    if param.kind is param.VAR_KEYWORD:
                        recorded.update(recorded.pop(name, {}))
                    elif param.kind is param.VAR_POSITIONAL:
                        recorded.pop(name, None)
                object.__setattr__(self, "_init_args", recorded)
            init(self, *args, **kw)

        cls.__init__ = recording_init

    @property
    def init_args(self) -> dict[str, Any]:
        return dict(self.__dict__.get("_init_args", {}))


def class_path(obj_or_cls: Any) -> str:
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    return f"{cls.__module__}.{cls.__qualname__}"


def to_spec(value: Any) -> Any:
    """Turn a Buildable (recursively, also inside lists and dicts) into its plain-dict spec."""
    if isinstance(value, Buildable):
        return {"class_path": class_path(value), "init_args": {k: to_spec(v) for k, v in value.init_args.items()}}
    if isinstance(value, (list, tuple)):
        return [to_spec(v) for v in value]
    if isinstance(value, dict):
        return {k: to_spec(v) for k, v in value.items()}
    if hasattr(value, "__dict__") and not isinstance(value, type) and not callable(value):
        raise TypeError(f"cannot store {type(value).__name__} in a checkpoint spec: it does not record its arguments")
    return value


def _import(path: str) -> type:
    module_name, _, name = path.rpartition(".")
    if not module_name:
        raise ValueError(f"class_path {path!r} must be a dotted path such as 'lightning_fm.paths.LinearPath'")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"class_path {path!r} cannot be imported: {err}") from err


def build(spec: Any) -> Any:
    """Inverse of :func:`to_spec`: instantiate a ``{"class_path", "init_args"}`` dict; pass objects through."""
    if isinstance(spec, dict) and "class_path" in spec:
        cls = _import(spec["class_path"])
        kwargs = {k: build(v) for k, v in (spec.get("init_args") or {}).items()}
        return cls(**kwargs)
    if isinstance(spec, list):
        return [build(v) for v in spec]
    return spec
