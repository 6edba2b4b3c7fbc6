"""One short message for a configuration error: ``error: <key> (<class>): <what is wrong>``, instead of a usage dump or
a chained traceback. Pure Python (no Lightning).

* A parser error (jsonargparse's ``ArgumentError``: an unknown key, a value of the wrong type, a class that cannot
  be found) is condensed from jsonargparse's tree of union attempts to the deepest real complaint and the dotted key
  it concerns; an unknown class name lists the classes that are known for that key.
* An error raised while the configured objects are built or set up (before or during training) counts as a
  configuration error when this package raised it explicitly (``raise ...`` in a ``lightning_fm`` file) or when
  jsonargparse raised it while building a component: the message of the outermost such exception of the chain is
  kept, prefixed with the config key of the component being built where jsonargparse names it.
* Also configuration errors: Lightning's ``MisconfigurationException``, whatever the ``Trainer`` raises while
  LightningCLI builds it (a bad ``trainer.*`` value: prefixed ``trainer``), and whatever the optimiser or schedule
  raises while :meth:`configure_optimizers` of this package builds it (``torch.optim`` checks its own arguments
  there: prefixed ``model.init_args.optimizer / lr_scheduler``).
* Anything else (a bug: ``NotImplementedError``, a failed assertion, an error raised inside a library during
  training) is not ours to shorten: it keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PACKAGE_DIR = str(Path(__file__).resolve().parents[1])  # lightning_fm/
#: lines of jsonargparse's union messages that say nothing about the problem
NOISE = re.compile(
    r"^(- )?(Does not validate against any of the Union subtypes|Errors:|Given value( type)?:.*|"
    r"Expected a <class 'NoneType'>|Expected a path but .* either not accessible or invalid)$"
)
KEY_LINE = re.compile(r'^(- )?Parser key "([^"]+)":\s*(.*)$')
CLASS_LINE = re.compile(r"^(- )?Problem with given class_path '([^']+)':\s*(.*)$")
SUBTYPES_LINE = re.compile(r"^Subtypes: \[(.*)\]$")
UNKNOWN_CLASS = re.compile(
    r"(Expected a dot import path string: (?P<a>\S+)|Import path (?P<b>\S+) does not exist"
    r"|No module named '?(?P<c>[^' ]+)'?)"
)
GIVEN_CLASS = re.compile(r"Given value: Namespace\(class_path='([^']+)'")
NOT_ACCEPTED = re.compile(r"^Option '([^']+)' is not accepted")
#: functions (of this package, or LightningCLI's) inside which any error is about the config keys named
CONFIGURING = {"configure_optimizers": "model.init_args.optimizer / lr_scheduler", "instantiate_trainer": "trainer"}
LIGHTNING_CLI_FILE = str(Path("lightning", "pytorch", "cli.py"))


def chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and the exceptions it was raised from or during, outermost first."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def raised_here(err: BaseException) -> bool:
    """Whether a ``raise`` statement of this package raised ``err``."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    last = frames[-1]
    return last.filename.startswith(PACKAGE_DIR) and (last.line or "").lstrip().startswith("raise")


def raised_by_parser(err: BaseException) -> bool:
    """Whether jsonargparse raised ``err`` (its union of attempts, wrapping the error of a component it built)."""
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and "jsonargparse" in frames[-1].filename


def configuring_key(err: BaseException) -> str | None:
    """The config keys of the :data:`CONFIGURING` function of this package that ``err`` was raised inside."""
    for frame in traceback.extract_tb(err.__traceback__):
        ours = frame.filename.startswith(PACKAGE_DIR) or frame.filename.endswith(LIGHTNING_CLI_FILE)
        if ours and frame.name in CONFIGURING:
            return CONFIGURING[frame.name]
    return None


def is_configuration_error(err: BaseException) -> bool:
    """Module docstring: a parser error, or a chain holding an error raised by this package, by jsonargparse, while
    configuring (:data:`CONFIGURING`) or as Lightning's ``MisconfigurationException``."""
    if isinstance(err, argparse.ArgumentError):
        return True
    if not isinstance(err, Exception) or isinstance(err, (NotImplementedError, AssertionError)):
        return False  # a programming error: its traceback matters
    return any(
        raised_here(e)
        or raised_by_parser(e)
        or configuring_key(e) is not None
        or type(e).__name__ == "MisconfigurationException"
        for e in chain(err)
    )


def short_message(err: BaseException, config: Any = None) -> str:
    """The one-line (or few-line) message for a configuration error (module docstring); ``config``: the parsed
    config, to name the key of the component whose construction failed."""
    if isinstance(err, argparse.ArgumentError):
        return condense_parser_message(str(err))
    errors = list(chain(err))
    ours = next((e for e in errors if raised_here(e)), None)
    cause = ours or errors[-1]
    message = (str(cause) if not isinstance(cause, KeyError) else repr(cause)).strip() or type(cause).__name__
    configuring = next((key for e in errors if (key := configuring_key(e))), None)
    if ours is None and configuring:
        return f"{configuring}: {message}"
    if ours is None and type(cause).__name__ == "MisconfigurationException":
        return f"trainer: {message}"
    if ours is None or raised_by_parser(err):
        built = [m.group(1) for e in errors if (m := GIVEN_CLASS.search(str(e)))]
        if built:
            key = key_of_class(config, built[-1]) if config is not None else None
            where = f"{key} ({built[-1]})" if key else built[-1]
            message = f"{where}: {message}"
    return message.strip()


def key_of_class(config: Any, class_path: str, prefix: str = "") -> str | None:
    """The dotted key of the only component of ``config`` (nested dicts or jsonargparse Namespaces) whose
    ``class_path`` is ``class_path``; None when there is none or more than one."""
    found = list(_keys_of_class(config, class_path, prefix))
    return found[0] if len(found) == 1 else None


def _keys_of_class(node: Any, class_path: str, prefix: str) -> Iterator[str]:
    if hasattr(node, "as_dict"):
        node = node.as_dict()
    if isinstance(node, dict):
        if node.get("class_path") == class_path:
            yield prefix
        for k, v in node.items():
            yield from _keys_of_class(v, class_path, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _keys_of_class(v, class_path, f"{prefix}[{i}]")


def condense_parser_message(message: str) -> str:
    """jsonargparse's nested message to ``<dotted key>: <deepest complaint>`` (module docstring)."""
    stack: list[tuple[int, str, str | None]] = []  # (indent, key segment, the class whose init_args it opens)
    subtypes: dict[str, list[str]] = {}
    leaves: list[tuple[str, str, str | None]] = []  # (key, complaint, the innermost class around it)
    for raw in message.splitlines():
        if not raw.strip():
            continue
        indent = len(raw) - len(raw.lstrip(" -"))
        line = raw.strip()
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if m := KEY_LINE.match(line):
            stack.append((indent, m.group(2), None))
            rest = m.group(3)
        elif m := CLASS_LINE.match(line):
            stack.append((indent, "init_args", m.group(2)))
            rest = m.group(3)
        else:
            rest = line.lstrip("- ")
        key = ".".join(segment for _, segment, _ in stack)
        if m := SUBTYPES_LINE.match(rest):
            subtypes[key] = re.findall(r"<class '([^']+)'>", m.group(1))
        elif rest and not NOISE.match(rest):
            leaves.append((key, rest, next((c for _, _, c in reversed(stack) if c), None)))
    if not leaves:
        return message.strip().splitlines()[0] if message.strip() else "invalid configuration"
    key, text, owner = max(leaves, key=lambda leaf: leaf[0].count("."))  # the deepest complaint
    key = _jsonargparse_key(key)
    option = NOT_ACCEPTED.match(text)
    if option and owner:
        names = accepted_arguments(owner)
        listed = f" (its arguments: {', '.join(names)})" if names else ""
        return f"{key}.{option.group(1)}: not an argument of {owner}{listed}"
    unknown = UNKNOWN_CLASS.search(text)
    if unknown:
        name = next(g for g in unknown.groups()[1:] if g)
        known = known_classes(subtypes.get(key, []))
        choices = f"; choose one of {known} (or a full class_path)" if known else ""
        return f"{key}: unknown class {name!r}{choices}"
    text = re.sub(r"Expected a <class '([^']+)'>\. Got value: (.*)", r"expected \1, got \2", text)
    text = re.sub(r"<class '([^']+)'>", r"\1", text)
    return f"{key}: {text}" if key else text


def _jsonargparse_key(key: str) -> str:
    """``--model.init_args.x`` nests as ``model`` > ``init_args`` > ``init_args.x``: collapse the repeats."""
    return re.sub(r"(\.init_args)+", ".init_args", key.replace("init_args.init_args", "init_args"))


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def accepted_arguments(class_path: str) -> list[str]:
    """The constructor arguments of a class of this package (a module's: those it rebuilds from, with its
    ``**kwargs``), sorted; [] for other classes."""
    cls = _import(class_path) if class_path.startswith("lightning_fm") else None
    if cls is None:
        return []
    if hasattr(cls, "accepted_hparams"):
        return sorted(cls.accepted_hparams())
    parameters = inspect.signature(cls).parameters.values()
    return sorted(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def known_classes(bases: list[str]) -> list[str]:
    """Names of the concrete subclasses, in this package, of the classes ``bases`` (full dotted names; only of
    modules already imported: nothing new is imported for a message)."""
    names: list[str] = []
    for base in bases:
        cls = _import(base) if base.rpartition(".")[0] in sys.modules else None
        if not isinstance(cls, type):
            continue
        for sub in _subclasses(cls):
            if (
                sub.__module__.startswith("lightning_fm")
                and not sub.__name__.startswith("_")
                and not getattr(sub, "__abstractmethods__", None)
                and sub.__name__ not in names
            ):
                names.append(sub.__name__)
    return names


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)
