"""Rebuildable components: every path, coupling, field, sampler and backbone records the arguments it was built with.

A component's *spec* is the plain dict ``{"class_path": "pkg.mod.Class", "init_args": {...}}`` (the format of
LightningCLI configs). Modules store the specs of their parts in their hyperparameters, so
``Module.load_from_checkpoint(path)`` alone rebuilds backbone, path, coupling, field and sampler, with no pickled
objects. Injected factories (the optimiser ``params -> Optimizer``, the schedule ``optimizer -> LRScheduler``) are
stored the same way: :func:`callable_spec` / :func:`build_callable`.

Specs read from a checkpoint are not trusted: inside :func:`only_allowed_classes` (``load_from_checkpoint``, the
CLI's ``--ckpt_path``) a ``class_path`` is imported only if it lies in :data:`CHECKPOINT_ALLOWED` (the model
components of this package, ``torch.nn``, ``torch.optim``), in ``$LIGHTNING_FM_ALLOWED_CLASSES`` (comma-separated
modules or classes the user trusts) or in the ``allowed`` given; otherwise :class:`UntrustedClassError`, before any
import.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib
import inspect
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

#: modules (and everything below them) whose classes a checkpoint may name
CHECKPOINT_ALLOWED = (
    "lightning_fm.models",
    "lightning_fm.paths",
    "lightning_fm.couplings",
    "lightning_fm.fields",
    "lightning_fm.sampling",
    "lightning_fm.time_samplers",
    "lightning_fm.modules",
    "lightning_fm.duality",
    "lightning_fm.utils.schedules",
    "torch.nn",
    "torch.optim",
)
#: the environment variable of the modules or classes the user allows checkpoints to name, comma-separated
ALLOWED_ENV = "LIGHTNING_FM_ALLOWED_CLASSES"
#: the keys under which a spec (or Lightning's bookkeeping) names something to import
CLASS_KEYS = ("class_path", "_class_path", "_instantiator")
#: inside only_allowed_classes: the allowed prefixes and where the specs come from
_RESTRICTION: contextvars.ContextVar[tuple[tuple[str, ...], str] | None] = contextvars.ContextVar(
    "lightning_fm_class_restriction", default=None
)


class UntrustedClassError(ValueError):
    """A spec read from a checkpoint names a class outside the allow-list."""


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
    raise TypeError(
        f"cannot store {factory!r} in a checkpoint: give a class, functools.partial(Class, **kwargs) "
        "or a {'class_path', 'init_args'} dict"
    )


def build_callable(spec: Any) -> Any:
    """Inverse of :func:`callable_spec`: ``functools.partial(Class, **init_args)``; callables pass through."""
    if isinstance(spec, dict) and "class_path" in spec:
        return functools.partial(
            import_class(spec["class_path"]), **{k: build(v) for k, v in (spec.get("init_args") or {}).items()}
        )
    return spec


def allowed_prefixes(allowed: Iterable[str] = ()) -> tuple[str, ...]:
    """:data:`CHECKPOINT_ALLOWED`, the entries of ``$LIGHTNING_FM_ALLOWED_CLASSES`` and ``allowed``."""
    from_env = [entry.strip() for entry in os.environ.get(ALLOWED_ENV, "").split(",")]
    return (*CHECKPOINT_ALLOWED, *(e for e in from_env if e), *allowed)


def is_allowed(path: Any, prefixes: Iterable[str]) -> bool:
    """Whether the dotted ``path`` is one of ``prefixes`` or lies below one (``torch.nn`` allows
    ``torch.nn.Linear``, not ``torch.nnx.Y``)."""
    return isinstance(path, str) and any(path == p or path.startswith(p.rstrip(".") + ".") for p in prefixes)


#: a string jsonargparse could import (``module.attribute``)
DOTTED_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)+$")


def untrusted_class_paths(value: Any, prefixes: Iterable[str], key: str = "") -> list[tuple[str, Any]]:
    """``(key, name)`` of every value under a :data:`CLASS_KEYS` key, and of every other string that reads as a dotted
    import path, at any depth of dicts and lists, that :func:`is_allowed` refuses; ``key`` is the dotted position
    (``optimizer.class_path``)."""
    prefixes = tuple(prefixes)
    found: list[tuple[str, Any]] = []
    if isinstance(value, str) and DOTTED_NAME.match(value) and not is_allowed(value, prefixes):
        return [(key, value)]  # jsonargparse imports a dotted string given for a class- or callable-typed argument
    if isinstance(value, dict):
        for k, v in value.items():
            where = f"{key}.{k}" if key else str(k)
            if k in CLASS_KEYS and not is_allowed(v, prefixes):
                found.append((where, v))
            else:
                found += untrusted_class_paths(v, prefixes, where)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found += untrusted_class_paths(v, prefixes, f"{key}[{i}]")
    return found


def refusal(source: str, found: list[tuple[str, Any]]) -> UntrustedClassError:
    """The error for the names :func:`untrusted_class_paths` found in ``source``."""
    listed = ", ".join(f"{key}={name!r}" for key, name in found[:3]) + (" ..." if len(found) > 3 else "")
    return UntrustedClassError(
        f"{source} names {listed}, outside the classes a checkpoint may name ({', '.join(CHECKPOINT_ALLOWED)}): "
        f"nothing was imported. If you trust this file, add the module or class to ${ALLOWED_ENV} "
        "(comma-separated), e.g. LIGHTNING_FM_ALLOWED_CLASSES=mypackage.models"
    )


@contextlib.contextmanager
def only_allowed_classes(source: str, allowed: Iterable[str] = ()) -> Iterator[tuple[str, ...]]:
    """Inside: :func:`import_class` (and so :func:`build`) imports only allowed classes (module docstring);
    ``source`` names where the specs come from in the error."""
    prefixes = allowed_prefixes(allowed)
    token = _RESTRICTION.set((prefixes, source))
    try:
        yield prefixes
    finally:
        _RESTRICTION.reset(token)


def import_class(path: str) -> type:
    restriction = _RESTRICTION.get()
    if restriction is not None and not is_allowed(path, restriction[0]):
        raise refusal(restriction[1], [("class_path", path)])
    module_name, _, name = path.rpartition(".") if isinstance(path, str) else ("", "", path)
    if not module_name:
        raise ValueError(f"class_path {path!r} must be a dotted path such as 'lightning_fm.paths.LinearPath'")
    try:
        found = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"class_path {path!r} cannot be imported: {err}") from err
    if restriction is not None and not isinstance(found, type):
        raise refusal(restriction[1], [("class_path (not a class)", path)])
    if restriction is not None and not is_allowed(f"{found.__module__}.{found.__qualname__}", restriction[0]):
        raise refusal(
            restriction[1], [("class_path (defined elsewhere)", f"{path} = {found.__module__}.{found.__qualname__}")]
        )
    return found


def build(spec: Any) -> Any:
    """Inverse of :func:`to_spec`: instantiate a ``{"class_path", "init_args"}`` dict; pass objects through."""
    if isinstance(spec, dict) and "class_path" in spec:
        cls = import_class(spec["class_path"])
        kwargs = {k: build(v) for k, v in (spec.get("init_args") or {}).items()}
        return cls(**kwargs)
    if isinstance(spec, list):
        return [build(v) for v in spec]
    return spec
