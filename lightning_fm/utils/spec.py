"""Rebuildable components: every path, coupling, field, sampler and backbone records the arguments it was built with.

A component's *spec* is the plain dict ``{"class_path": "pkg.mod.Class", "init_args": {...}}`` (the format of
LightningCLI configs). Modules store the specs of their parts in their hyperparameters, so
``Module.load_from_checkpoint(path)`` alone rebuilds backbone, path, coupling, field and sampler, with no pickled
objects. Injected factories (the optimiser ``params -> Optimizer``, the schedule ``optimizer -> LRScheduler``) are
stored the same way: :func:`callable_spec` / :func:`build_callable`.
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


def describe(obj: Buildable) -> str:
    """``Class(arg=value, ...)`` from the recorded init args, recursively for nested components (e.g. paths)."""
    def fmt(v: Any) -> str:
        return describe(v) if isinstance(v, Buildable) else repr(v)

    return f"{type(obj).__name__}({', '.join(f'{k}={fmt(v)}' for k, v in obj.init_args.items())})"


def callable_spec(factory: Any) -> dict[str, Any] | None:
    """The spec of a factory that builds a class when called with the missing first argument (e.g. an optimiser
    given its parameters): the class itself, a ``functools.partial`` of the class (as written in Python, or as
    LightningCLI builds ``OptimizerCallable``/``LRSchedulerCallable`` arguments), or already a spec dict."""
    if factory is None or (isinstance(factory, dict) and "class_path" in factory):
        return factory
    if isinstance(factory, type):
        return {"class_path": class_path(factory), "init_args": {}}
    if isinstance(factory, functools.partial):
        # plain: partial(Class, **kw); jsonargparse: partial(call_without_instantiate_context, instantiator,
        # Class, **kw)
        cls = factory.func if not factory.args else factory.args[-1]
        if isinstance(cls, type) and (cls is factory.func or len(factory.args) == 2):
            return {"class_path": class_path(cls), "init_args": {k: to_spec(v) for k, v in factory.keywords.items()}}
    raise TypeError(f"cannot store {factory!r} in a checkpoint: give a class, functools.partial(Class, **kwargs) "
                    "or a {'class_path', 'init_args'} dict")


def build_callable(spec: Any) -> Any:
    """Inverse of :func:`callable_spec`: ``functools.partial(Class, **init_args)``; callables pass through."""
    if isinstance(spec, dict) and "class_path" in spec:
        return functools.partial(import_class(spec["class_path"]), **{k: build(v) for k, v in
                                                                 (spec.get("init_args") or {}).items()})
    return spec


def import_class(path: str) -> type:
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
        cls = import_class(spec["class_path"])
        kwargs = {k: build(v) for k, v in (spec.get("init_args") or {}).items()}
        return cls(**kwargs)
    if isinstance(spec, list):
        return [build(v) for v in spec]
    return spec
