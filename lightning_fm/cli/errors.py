"""One short message for a configuration error: ``error: <key> (<class>): <what is wrong>``, instead of a usage dump or
a chained traceback. Pure Python (no Lightning).

* A parser error (jsonargparse's ``ArgumentError``: an unknown key, a value of the wrong type, a class that cannot
  be found) is condensed from jsonargparse's tree of union attempts to the deepest real complaint and the dotted key
  it concerns: a value of the wrong type names the expected type and the given value (``expected a float, got
  'fast'``); an unknown class name lists the classes that fit that key (:func:`known_classes`) and suggests the
  closest; an unknown key (on the command line, in a ``-c`` file, or an argument a class does not have) suggests
  the closest valid keys (:func:`close_keys`, difflib). jsonargparse (4.x) keeps no structured record of its
  attempts (its ``ArgumentError`` holds only the message; the chained exceptions are the same text, nested), so
  the text of its tree is read: every line it writes there is matched by one of the patterns below.
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
import difflib
import importlib
import inspect
import re
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

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
#: a union attempt of a plain type (``Expected a <class 'int'>. Got value: many``) or a type's refusal
EXPECTED = re.compile(r"^Expected a <class '([^']+)'>(?:\. Got value: (.*))?$")
#: the value a key was given (what a callable-typed parent appends: ``. Got value: Namespace(...)``, cut off)
GIVEN_VALUE = re.compile(r"^Given value: (.*?)(?:\. Got value: Namespace\(.*)?$")
GIVEN_TYPE = re.compile(r"^Given value type: <class '([^']+)'>$")
#: a class-typed callable (``optimizer: Callable[[Iterable], Optimizer]``) given a class_path: jsonargparse puts
#: the complaint about its ``init_args`` (``Parser key "lr":`` and the lines below, or one line) after this prefix
CALLABLE_CLASS = re.compile(r"^Type .* expects a function or a callable class: (.*)$")
GOT_CLASS = re.compile(r"\. Got value: Namespace\(class_path='([^']+)'.*$")
#: a key no parser knows: on the command line (argparse's words), or in a ``-c`` file (jsonargparse's)
UNRECOGNIZED = re.compile(r"^unrecognized arguments: (.*)$")
NOT_AN_OPTION = re.compile(r"^Subcommand '[^']+' does not accept option '([^']+)'")
#: what a key of these types takes, in the user's words
TYPE_WORDS = {
    "int": "an int",
    "float": "a float",
    "str": "a string",
    "bool": "a bool (true or false)",
    "NoneType": "null",
    "list": "a list",
    "tuple": "a list",
    "collections.abc.Iterable": "a list",
    "collections.abc.Sequence": "a list",
    "dict": "a mapping",
    "collections.abc.Mapping": "a mapping",
}
#: the call a component of a parameter must accept, by the parameter's name: a backbone is called
#: ``net(x, t, y=None)`` (:mod:`lightning_fm.models`); a class whose ``forward`` lacks these is no backbone
CALL_PROTOCOLS = {"backbone": ("x", "t", "y")}
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


#: the valid dotted keys, asked for only when a message suggests one (the parsers' defaults)
KeysOf = Callable[[], Iterable[str]]


def short_message(err: BaseException, config: Any = None, keys: KeysOf | None = None) -> str:
    """The one-line (or few-line) message for a configuration error (module docstring); ``config``: the parsed
    config, to name the key of the component whose construction failed; ``keys``: the valid keys, for a
    misspelt one (:func:`close_keys`)."""
    if isinstance(err, argparse.ArgumentError):
        return condense_parser_message(str(err), keys)
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


def condense_parser_message(message: str, keys: KeysOf | None = None) -> str:
    """jsonargparse's nested message to ``<dotted key>: <deepest complaint>`` (module docstring); ``keys``: the
    valid keys, to suggest one for an unknown key."""
    first = message.strip().splitlines()[0] if message.strip() else ""
    if m := UNRECOGNIZED.match(first):
        options = [a[2:].partition("=")[0] for a in m.group(1).split() if a.startswith("--")]
        if options:
            return unknown_key(options[0], keys)
    if m := NOT_AN_OPTION.match(first):
        return unknown_key(m.group(1), keys)
    tree = _Tree()
    for raw in message.splitlines():
        if raw.strip():
            tree.read(len(raw) - len(raw.lstrip(" -")), raw.strip())
    if not tree.leaves:
        return first or "invalid configuration"
    raw_key, text, owner = max(tree.leaves, key=lambda leaf: leaf[0].count("."))  # the deepest complaint
    key = _jsonargparse_key(raw_key)
    option = NOT_ACCEPTED.match(text)
    if option and owner:
        names = accepted_arguments(owner)
        close = _close(option.group(1), names)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        listed = f" (its arguments: {', '.join(names)})" if names else ""
        return f"{key}.{option.group(1)}: not an argument of {owner}{hint}{listed}"
    types = tree.expected.get(raw_key, [])
    plain = [t for t in types if t != "NoneType"]
    if plain:
        wanted = " or ".join(dict.fromkeys(TYPE_WORDS.get(t, f"a {t}") for t in plain + types[len(plain) :]))
        value, given_type = tree.given.get(raw_key, (None, None))
        if value is None:
            return f"{key}: expected {wanted}"
        return f"{key}: expected {wanted}, got {shown(value, given_type)}"
    unknown = UNKNOWN_CLASS.search(text)
    if unknown:
        name = next(g for g in unknown.groups()[1:] if g)
        known = known_classes(tree.subtypes.get(raw_key, []), key.rpartition(".")[2])
        close = _close(name.rpartition(".")[2], known)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        choices = f"; choose one of {known} (or a full class_path)" if known else ""
        return f"{key}: unknown class {name!r}{hint}{choices}"
    text = re.sub(r"Expected a <class '([^']+)'>\. Got value: (.*)", r"expected \1, got \2", text)
    text = re.sub(r"<class '([^']+)'>", r"\1", text)
    return f"{key}: {text}" if key else text


class _Tree:
    """What :func:`condense_parser_message` reads from jsonargparse's tree of messages, line by line: the complaints
    (``leaves``: key, text, the innermost class around it), and per key the subtypes of its union, the plain types
    its value was tried as (``expected``) and the value it was given (``given``: text, type name or None)."""

    def __init__(self) -> None:
        self.stack: list[tuple[int, str, str | None]] = []  # (indent, key segment, the class whose init_args it opens)
        self.subtypes: dict[str, list[str]] = {}
        self.expected: dict[str, list[str]] = {}
        self.given: dict[str, tuple[str, str | None]] = {}
        self.leaves: list[tuple[str, str, str | None]] = []

    def key(self) -> str:
        return ".".join(segment for _, segment, _ in self.stack)

    def read(self, indent: int, line: str) -> None:
        while self.stack and self.stack[-1][0] >= indent:
            self.stack.pop()
        if m := KEY_LINE.match(line):
            self.stack.append((indent, m.group(2), None))
            rest = m.group(3)
        elif m := CLASS_LINE.match(line):
            self.stack.append((indent, "init_args", m.group(2)))
            rest = m.group(3)
        elif m := CALLABLE_CLASS.match(line):
            rest = m.group(1)
            owner = GOT_CLASS.search(rest)
            self.stack.append((indent, "init_args", owner.group(1) if owner else None))
            rest = GOT_CLASS.sub("", rest)
            if m := KEY_LINE.match(rest):
                self.stack.append((indent, m.group(2), None))
                rest = m.group(3)
        else:
            rest = line.lstrip("- ")
        key = self.key()
        if m := SUBTYPES_LINE.match(rest):
            self.subtypes[key] = re.findall(r"<class '([^']+)'>", m.group(1))
        elif m := GIVEN_TYPE.match(rest):
            value, _ = self.given.get(key, ("", None))
            self.given[key] = (value, m.group(1))
        elif m := GIVEN_VALUE.match(rest):
            _, given_type = self.given.get(key, ("", None))
            self.given[key] = (m.group(1), given_type)
        elif m := EXPECTED.match(rest):
            self.expected.setdefault(key, []).append(m.group(1))
            if m.group(2) is not None:
                self.given.setdefault(key, (m.group(2), None))
        if rest and not NOISE.match(rest) and not SUBTYPES_LINE.match(rest):
            self.leaves.append((key, rest, next((c for _, _, c in reversed(self.stack) if c), None)))


def shown(value: str, type_name: str | None = None) -> str:
    """A value as jsonargparse printed it, as the user would write it: a string quoted (``'fast'``), a number or
    list as it is (``4``, ``[1, 2]``). ``type_name``: its Python type, where jsonargparse says."""
    if type_name is None:
        try:
            type_name = "str" if isinstance(yaml.safe_load(value), str) else None
        except yaml.YAMLError:
            type_name = "str"
    return repr(value) if type_name == "str" else value


def unknown_key(key: str, keys: KeysOf | None) -> str:
    """``<key>: unknown key``, with the closest valid keys (:func:`close_keys`)."""
    close = close_keys(key, list(keys()) if keys is not None else [])
    return f"{key}: unknown key" + (f"; did you mean {' or '.join(close)}?" if close else "")


def close_keys(key: str, known: list[str]) -> list[str]:
    """The valid keys closest to ``key`` (difflib): its siblings (the keys under the same parent) by their last
    name; for a misspelt parent, the key under the parent's closest valid spelling (``trainr.max_steps`` ->
    ``trainer.max_steps``)."""
    parent, _, name = key.rpartition(".")
    prefix = f"{parent}." if parent else ""
    siblings = list(dict.fromkeys(k[len(prefix) :].split(".")[0] for k in known if k.startswith(prefix)))
    if siblings:
        return [prefix + c for c in _close(name, siblings)]
    if not parent:  # no keys at all
        return []
    for fixed in close_keys(parent, known):
        if close := close_keys(f"{fixed}.{name}", known):
            return close
    return []


def _close(name: str, choices: list[str]) -> list[str]:
    """difflib's closest of ``choices`` to ``name``, ignoring case (``Unet`` -> ``UNet``): the best match and any
    as close as it (within 0.05 of its similarity ratio)."""
    lowered = {c.lower(): c for c in choices}
    matches = difflib.get_close_matches(name.lower(), list(lowered), n=3)
    ratios = [difflib.SequenceMatcher(None, name.lower(), m).ratio() for m in matches]
    return [lowered[m] for m, r in zip(matches, ratios, strict=True) if r >= ratios[0] - 0.05]


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
    ``**kwargs``) or of an already imported module (``torch.optim.Adam``), sorted; [] for other classes."""
    imported = class_path.rpartition(".")[0] in sys.modules
    cls = _import(class_path) if class_path.startswith("lightning_fm") or imported else None
    if not isinstance(cls, type):
        return []
    if hasattr(cls, "accepted_hparams"):
        return sorted(cls.accepted_hparams())
    parameters = inspect.signature(cls).parameters.values()
    return sorted(p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def known_classes(bases: list[str], parameter: str = "") -> list[str]:
    """Names of the classes of this package that fit a parameter typed ``bases`` (full dotted names; only of
    modules already imported: nothing new is imported for a message) and named ``parameter``: the concrete public
    subclasses that the package offers (:func:`offered`) and that take the parameter's call
    (:data:`CALL_PROTOCOLS`: a ``backbone`` of type ``nn.Module`` is one of ``lightning_fm.models``' MLP, UNet,
    FieldHead, not a U-Net block, an embedding, a metric's network or a LightningModule)."""
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
                and offered(sub)
                and takes_call(sub, CALL_PROTOCOLS.get(parameter, ()))
                and sub.__name__ not in names
            ):
                names.append(sub.__name__)
    return names


def offered(cls: type) -> bool:
    """Whether the package offers ``cls`` to its users: it is in the ``__all__`` of its subpackage
    (``lightning_fm.models`` for ``lightning_fm.models.unet.UNet``), or that subpackage names no ``__all__``."""
    package = sys.modules.get(".".join(cls.__module__.split(".")[:2]))
    exported = getattr(package, "__all__", None)
    return exported is None or cls.__name__ in exported


def takes_call(cls: type, names: tuple[str, ...]) -> bool:
    """Whether ``cls``'s ``forward`` names the parameters ``names`` (all of them; True for none)."""
    if not names:
        return True
    try:
        parameters = inspect.signature(cls.forward).parameters  # type: ignore[attr-defined]
    except (AttributeError, TypeError, ValueError):
        return False
    return all(name in parameters for name in names)


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)
