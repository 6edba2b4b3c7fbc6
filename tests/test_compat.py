"""The package reaches Lightning, jsonargparse and torch through their public API only; everything else is in
:mod:`lightning_fm.compat`, and each of its helpers is tested here against the installed versions, so that an upgrade
that changes what they rely on fails here, with a message naming the helper, rather than somewhere in a run.

The audit (:func:`test_no_private_access_outside_compat`): every ``.py`` file of the package but ``compat.py`` is
parsed; an access ``X._name`` (``getattr``/``setattr``/``hasattr``/``delattr`` with a constant name included) is a
violation unless ``_name`` is defined in the package itself and by none of the foreign classes its classes derive
from; an import of a private name or module of another library is one too; and a package class that defines a
method ``_name`` found on a base class from outside the package overrides a foreign private method."""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from functools import cache
from pathlib import Path

import pytest

import lightning_fm

PACKAGE = Path(lightning_fm.__file__).resolve().parent
COMPAT = PACKAGE / "compat.py"
ACCESSORS = ("getattr", "setattr", "hasattr", "delattr")
#: names with a leading underscore that are documented public API of the standard library
PUBLIC_UNDERSCORE = {
    "_fields",
    "_field_defaults",
    "_replace",
    "_asdict",
    "_make",
    "_exit",
    "_missing_",
    "_generate_next_value_",
    "_ignore_",
    "_order_",
    "_value_",
    "_name_",
}


def _private(name: str) -> bool:
    """A single leading underscore (``_name``; ``_Class__name`` too): not a dunder, not a name-mangled ``__name``."""
    return name.startswith("_") and not name.startswith("__") and name not in PUBLIC_UNDERSCORE


def _sources() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _constant_name(call: ast.Call) -> str | None:
    """``"_name"`` of ``getattr(x, "_name", ...)`` and its kin (``object.__setattr__(x, "_name", v)`` too)."""
    func = call.func
    accessor = (isinstance(func, ast.Name) and func.id in ACCESSORS) or (
        isinstance(func, ast.Attribute) and func.attr in {f"__{a}__" for a in ACCESSORS} | {"__getattribute__"}
    )
    if not accessor:
        return None
    for arg in call.args[:2]:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            return arg.value
    return None


def _self_like(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id in {"self", "cls"}


def _defined_names(tree: ast.AST) -> set[str]:
    """Private names a source defines: functions, classes, module-level and class-level names, imports bound to a
    private name, and ``self._name``/``cls._name`` assignments (``setattr(self, "_name", v)`` too)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update(alias.asname or alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _self_like(node.value):
            names.add(node.attr)
        elif isinstance(node, ast.Call) and _constant_name(node) and node.args and _self_like(node.args[0]):
            names.add(_constant_name(node))
    return {name for name in names if _private(name)}


@cache
def _package_trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(), filename=str(path)) for path in _sources()}


@cache
def _package_names() -> frozenset[str]:
    return frozenset(name for tree in _package_trees().values() for name in _defined_names(tree))


def _foreign(cls: type) -> bool:
    return not (cls.__module__ == "lightning_fm" or cls.__module__.startswith("lightning_fm."))


@cache
def _names_of_foreign_class(cls: type) -> frozenset[str]:
    """The private names a class from outside the package defines: its class attributes and methods, and the
    attributes its methods assign on ``self`` (read from its source where there is one)."""
    names = {name for name in vars(cls) if _private(name)}
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):  # a class without Python source (C extension, builtins)
        return frozenset(names)
    return frozenset(names | _defined_names(tree))


def _foreign_names(cls: type) -> frozenset[str]:
    """Private names defined by the foreign classes ``cls`` derives from (``cls`` itself when it is foreign)."""
    return frozenset().union(*(_names_of_foreign_class(base) for base in cls.__mro__ if _foreign(base)))


@cache
def _package_classes() -> tuple[type, ...]:
    """Every class defined in the package (all its modules imported)."""
    classes = []
    for path in _sources():
        module = importlib.import_module(_module_name(path))
        classes += [c for c in vars(module).values() if inspect.isclass(c) and c.__module__ == module.__name__]
    nested = [n for c in classes for n in vars(c).values() if inspect.isclass(n) and n.__module__ == c.__module__]
    return tuple(dict.fromkeys(classes + nested))


@cache
def _all_foreign_names() -> frozenset[str]:
    return frozenset().union(*(_foreign_names(c) for c in _package_classes()))


def _classes_by_name(module_name: str) -> dict[str, type]:
    module = importlib.import_module(module_name)
    return {c.__qualname__: c for c in _package_classes() if c.__module__ == module.__name__}


class _Accesses(ast.NodeVisitor):
    """The private accesses and private imports of one source, each as ``(line, what)``."""

    def __init__(self, classes: dict[str, type], known: frozenset[str]) -> None:
        self.classes, self.known, self.scope, self.found = classes, known, [], []

    def _enclosing_class(self) -> type | None:
        qualname = ".".join(name for kind, name in self.scope if kind == "class")
        return self.classes.get(qualname) if qualname else None

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.scope.append(("class", node.name))
        self.generic_visit(node)
        self.scope.pop()

    def _check(self, line: int, owner: ast.AST, name: str) -> None:
        if not _private(name):
            return
        cls = self._enclosing_class()
        if _self_like(owner) and cls is not None:
            inherited = name in _foreign_names(cls)
            what = (
                f"self.{name}" if not inherited else f"self.{name} (defined by a base class from outside the package)"
            )
            if inherited or name not in self.known:
                self.found.append((line, what))
        elif name not in self.known:
            self.found.append((line, f"{ast.unparse(owner)}.{name}"))
        elif name in _all_foreign_names():
            self.found.append((line, f"{ast.unparse(owner)}.{name} (also a private name of a foreign base class)"))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._check(node.lineno, node.value, node.attr)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = _constant_name(node)
        if name is not None and node.args:
            self._check(node.lineno, node.args[0], name)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if not alias.name.startswith("lightning_fm") and any(map(_private, alias.name.split("."))):
                self.found.append((node.lineno, f"import {alias.name}"))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if node.level or module.startswith("lightning_fm") or module == "__future__":
            return
        if any(map(_private, module.split("."))):
            self.found.append((node.lineno, f"from {module} import ..."))
        for alias in node.names:
            if _private(alias.name):
                self.found.append((node.lineno, f"from {module} import {alias.name}"))


def private_accesses() -> list[str]:
    """``file:line: what`` for every private access or import of the package outside ``compat.py``."""
    found = []
    for path, tree in _package_trees().items():
        if path == COMPAT:
            continue
        visitor = _Accesses(_classes_by_name(_module_name(path)), _package_names())
        visitor.visit(tree)
        where = path.relative_to(PACKAGE.parent)
        found += [f"{where}:{line}: {what}" for line, what in visitor.found]
    return found


def foreign_private_overrides() -> list[str]:
    """``file:line: Class._name overrides Base._name`` for every package class method that overrides a private
    method of a base class from outside the package."""
    found = []
    for cls in _package_classes():
        for name, value in vars(cls).items():
            if (
                not _private(name)
                or not isinstance(value, (staticmethod, classmethod, property))
                and not inspect.isfunction(value)
            ):
                continue
            bases = [b for b in cls.__mro__[1:] if _foreign(b) and name in vars(b)]
            if bases:
                function = value.fget if isinstance(value, property) else getattr(value, "__func__", value)
                path = Path(inspect.getsourcefile(function)).resolve().relative_to(PACKAGE.parent)
                line = inspect.getsourcelines(function)[1]
                found.append(
                    f"{path}:{line}: {cls.__qualname__}.{name} overrides "
                    f"{bases[0].__module__}.{bases[0].__qualname__}.{name}"
                )
    return found


def _report(title: str, found: list[str]) -> str:
    by_file = {}
    for entry in found:
        by_file.setdefault(entry.split(":", 1)[0], []).append(entry)
    lines = [
        (
            f"{title}: {len(found)} in {len(by_file)} files (move each into lightning_fm/compat.py as a named "
            "helper with a test in tests/test_compat.py, or use a public API):"
        )
    ]
    for file, entries in sorted(by_file.items()):
        lines += [f"  {file} ({len(entries)})"] + [f"    {entry}" for entry in entries]
    return "\n".join(lines)


def test_no_private_access_outside_compat():
    found = private_accesses()
    assert not found, _report("private attributes of other libraries touched outside compat.py", found)


def test_no_override_of_a_foreign_private_method():
    found = foreign_private_overrides()
    assert not found, _report("private methods of other libraries overridden", found)


def test_the_audit_catches_what_it_is_meant_to():
    """The audit itself, on a made-up source: a private attribute of a foreign object, an inherited private attribute
    set on ``self``, a private import and a ``getattr`` with a private name are reported; the source's own private
    names are not."""
    source = textwrap.dedent("""
        from lightning.pytorch import Callback
        from torch._dynamo import config
        _LIMIT = 3

        def _helper():
            return _LIMIT

        class Probe(Callback):
            def __init__(self):
                self._mine = _helper()

            def on_fit_start(self, trainer, pl_module):
                trainer._checkpoint_connector.dump_checkpoint()
                getattr(pl_module, "_trainer", None)
                self._mine += 1
                return self._generate_state_key()
    """)
    from lightning.pytorch import Callback

    tree = ast.parse(source)
    probe = type("Probe", (Callback,), {"__module__": "lightning_fm.audit_probe"})  # the class the source defines
    visitor = _Accesses({"Probe": probe}, _package_names() | _defined_names(tree))
    visitor.visit(tree)
    assert [line for line, _ in visitor.found] == [3, 14, 15, 17], visitor.found


# -- the helpers of lightning_fm.compat, and the public behaviour of Lightning the package relies on ---------------
def _trainer(tmp_path, callbacks, **kwargs):
    from lightning.pytorch import Trainer

    options = {
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "accelerator": "cpu",
        "devices": 1,
        "default_root_dir": tmp_path,
        "limit_val_batches": 0,
    }
    return Trainer(callbacks=callbacks, **{**options, **kwargs})


def test_request_stop_after_this_step_stops_as_sigterm_does(tmp_path):
    from lightning.pytorch import Callback
    from lightning.pytorch.demos.boring_classes import BoringModel
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from lightning_fm.compat import request_stop_after_this_step

    seen = {}

    class StopAtStep3(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            seen["steps"] = seen.get("steps", []) + [trainer.global_step]
            if trainer.global_step == 3:
                request_stop_after_this_step(trainer)
                seen["flag"] = trainer.received_sigterm

        def on_exception(self, trainer, pl_module, exception):
            seen["exception"] = exception

    trainer = _trainer(tmp_path, [StopAtStep3()], max_steps=10)
    with pytest.raises(SIGTERMException):
        trainer.fit(BoringModel())
    assert seen.get("flag") is True, (
        "compat.request_stop_after_this_step: Trainer.received_sigterm no longer reads "
        "trainer._signal_connector.received_sigterm"
    )
    assert seen["steps"] == [1, 2, 3] and trainer.global_step == 3, (
        f"compat.request_stop_after_this_step: Lightning no longer stops at the end of the step that set the flag "
        f"(steps run: {seen['steps']})"
    )
    assert isinstance(seen.get("exception"), SIGTERMException), "on_exception no longer sees the SIGTERMException"


def test_averaged_model_is_the_copy_that_weight_averaging_swaps_in_for_validation(tmp_path):
    """Before ``fit``: None. During ``fit``: an ``AveragedModel`` whose module holds the averaged weights between
    steps and holds the live ones during a validation, while the module holds the averaged ones (the callback swaps
    the two), as :mod:`lightning_fm.callbacks.ema` relies on."""
    import torch
    from lightning.pytorch import Callback
    from lightning.pytorch.callbacks import EMAWeightAveraging
    from lightning.pytorch.demos.boring_classes import BoringModel
    from torch.optim.swa_utils import AveragedModel

    from lightning_fm.compat import averaged_model

    ema = EMAWeightAveraging(decay=0.5)
    assert averaged_model(ema) is None, "compat.averaged_model: WeightAveraging has a model before setup('fit')"
    weights = {}

    def flat(module):
        return torch.cat([p.detach().flatten().clone() for p in module.parameters()])

    class Record(Callback):  # after the EMA callback: it sees the weights the EMA callback leaves
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            copy = averaged_model(ema)
            assert isinstance(copy, AveragedModel), f"compat.averaged_model: got {type(copy)} during fit"
            weights["train"] = flat(pl_module), flat(copy.module)

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            weights.setdefault("validation", (flat(pl_module), flat(averaged_model(ema).module)))

    trainer = _trainer(
        tmp_path, [ema, Record()], max_steps=3, limit_val_batches=1, val_check_interval=3, num_sanity_val_steps=0
    )
    trainer.fit(BoringModel())
    (live, copy), (live_validating, copy_validating) = weights["train"], weights["validation"]
    assert not torch.equal(live, copy), "the EMA copy equals the live weights: the test shows nothing"
    assert torch.equal(live_validating, copy) and torch.equal(copy_validating, live), (
        "WeightAveraging no longer swaps its averaged copy (compat.averaged_model) into the module for validation"
    )


@pytest.mark.slow
def test_is_compiled():
    import torch

    from lightning_fm.compat import is_compiled

    module = torch.nn.Linear(2, 2)
    assert not is_compiled(module)
    module.compile()
    assert is_compiled(module), "compat.is_compiled: nn.Module.compile() no longer sets nn.Module._compiled_call_impl"
    assert isinstance(module, torch.nn.Linear) and set(module.state_dict()) == {"weight", "bias"}


def test_attached_trainer(tmp_path):
    from lightning.pytorch import Callback
    from lightning.pytorch.demos.boring_classes import BoringModel

    from lightning_fm.compat import attached_trainer

    model, seen = BoringModel(), []
    assert attached_trainer(model) is None

    class Record(Callback):
        def on_train_start(self, trainer, pl_module):
            seen.append(attached_trainer(pl_module) is trainer)

    trainer = _trainer(tmp_path, [Record()], max_steps=1)
    trainer.fit(model)
    assert seen == [True]


def test_checkpoint_callbacks_see_the_whole_checkpoint_last(tmp_path):
    """What :class:`~lightning_fm.callbacks.checkpoints.CrashSafeModelCheckpoint` relies on: ``trainer.save_checkpoint``
    calls every callback's ``on_save_checkpoint`` with the checkpoint being built, checkpoint callbacks last (the
    EMA callback's entries are there: ``state_dict`` the averaged weights, ``current_model_state`` the live ones),
    before writing; an exception raised there writes nothing."""
    import torch
    from lightning.pytorch import Callback
    from lightning.pytorch.callbacks import EMAWeightAveraging, ModelCheckpoint
    from lightning.pytorch.demos.boring_classes import BoringModel

    from lightning_fm.compat import averaged_model

    seen = {}

    class Refuse(ModelCheckpoint):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            seen["keys"] = set(checkpoint)
            ema_copy = averaged_model(ema).module
            seen["ema"] = all(torch.equal(v, checkpoint["state_dict"][k]) for k, v in ema_copy.state_dict().items())
            seen["live"] = all(
                torch.equal(v, checkpoint["current_model_state"][k]) for k, v in pl_module.state_dict().items()
            )
            raise RuntimeError("refused")

    class SaveAtStep2(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                with pytest.raises(RuntimeError, match="refused"):
                    trainer.save_checkpoint(tmp_path / "refused.ckpt")

    ema = EMAWeightAveraging(decay=0.5)
    refuse = Refuse(dirpath=tmp_path, save_top_k=0, save_last=False)
    trainer = _trainer(tmp_path, [refuse, ema, SaveAtStep2()], max_steps=3, enable_checkpointing=True)
    trainer.fit(BoringModel())
    assert trainer.callbacks[-1] is refuse, "Lightning no longer puts checkpoint callbacks last"
    assert {"state_dict", "current_model_state", "averaging_state", "optimizer_states"} <= seen["keys"], seen["keys"]
    assert seen["ema"] and seen["live"], "WeightAveraging.on_save_checkpoint no longer stores EMA and live weights so"
    assert not (tmp_path / "refused.ckpt").exists(), "a checkpoint refused in on_save_checkpoint was written"


def test_crash_safe_checkpoint_keeps_raw_and_ema_weights_apart_during_validation(tmp_path):
    """Written inside a validation of ``fit`` (the EMA weights swapped into the module), ``last.ckpt`` holds the
    checkpoint written just before the validation: the EMA weights as ``state_dict``, the raw ones as
    ``current_model_state``."""
    import shutil

    import torch
    from lightning.pytorch import Callback
    from lightning.pytorch.callbacks import EMAWeightAveraging
    from lightning.pytorch.demos.boring_classes import BoringModel

    from lightning_fm.callbacks import CrashSafeModelCheckpoint

    class WriteBeforeAndDuring(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if trainer.global_step == 3:
                trainer.save_checkpoint(tmp_path / "before.ckpt")

        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            crash_safe.write_last_as_trained(trainer, pl_module)
            shutil.copy(tmp_path / "checkpoints" / "last.ckpt", tmp_path / "during.ckpt")  # the final one follows

    crash_safe = CrashSafeModelCheckpoint(every_n_train_steps=1000, dirpath=str(tmp_path / "checkpoints"))
    trainer = _trainer(
        tmp_path,
        [EMAWeightAveraging(decay=0.5), crash_safe, WriteBeforeAndDuring()],
        max_steps=4,
        limit_val_batches=1,
        val_check_interval=3,
        num_sanity_val_steps=0,
        enable_checkpointing=True,
    )
    trainer.fit(BoringModel())
    before = torch.load(tmp_path / "before.ckpt", weights_only=False)
    during = torch.load(tmp_path / "during.ckpt", weights_only=False)
    assert during["global_step"] == before["global_step"] == 3
    for key in ("state_dict", "current_model_state"):
        assert before[key].keys() == during[key].keys()
        assert all(torch.equal(before[key][k], during[key][k]) for k in before[key]), key
    assert not all(torch.equal(before["state_dict"][k], before["current_model_state"][k]) for k in before["state_dict"])


def test_csv_writer_continues_an_existing_metrics_file(tmp_path, recwarn):
    """Lightning's writer deletes the metrics file of a directory that is not empty; the package's writer keeps its
    rows before ``keep_until_step`` and its header, and appends under it."""
    import csv

    from lightning_fm.loggers.csv import ContinuingWriter

    log_dir = tmp_path / "version_0"
    log_dir.mkdir()
    (log_dir / "metrics.csv").write_text("loss,step\n" + "".join(f"{s / 10},{s}\n" for s in range(5)))
    writer = ContinuingWriter(str(log_dir), keep_until_step=3)

    def read():
        with open(log_dir / "metrics.csv", newline="") as file:
            return list(csv.DictReader(file))

    assert writer.metrics_keys == ["loss", "step"]
    writer.log_metrics({"loss": 0.9}, step=3)
    writer.save()
    assert [(r["step"], r["loss"]) for r in read()] == [("0", "0.0"), ("1", "0.1"), ("2", "0.2"), ("3", "0.9")]
    writer.log_metrics({"lr": 0.5}, step=4)  # a new key: Lightning's writer rewrites the file with it
    writer.save()
    rows = read()
    assert len(rows) == 5 and rows[-1]["lr"] == "0.5" and rows[0]["loss"] == "0.0"
    assert not [w for w in recwarn if "exists and is not empty" in str(w.message)]
    assert sorted(p.name for p in log_dir.iterdir()) == ["metrics.csv"]  # no temporary left


@pytest.mark.slow
def test_importing_the_ema_helpers_installs_no_warning_filter():
    """``OUTSIDE_FIT_WARNING`` is only named by :mod:`lightning_fm.callbacks.ema`; the command line filters it."""
    import subprocess
    import sys

    code = (
        "import warnings, lightning.pytorch; before = list(warnings.filters); "
        "from lightning_fm.callbacks.ema import OUTSIDE_FIT_WARNING; import lightning_fm.callbacks; "
        "print(sum(f[1] is not None and f[1].pattern == OUTSIDE_FIT_WARNING for f in warnings.filters))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PACKAGE.parent
    )
    assert result.stdout.strip() == "0", result.stdout


def test_drop_unset_wandb_init_argument(tmp_path, monkeypatch):
    """Lightning's WandbLogger keeps wandb.init's keywords in ``_wandb_init`` with ``anonymous=None``; the helper
    removes an unset one and keeps a set one."""
    from lightning.pytorch.loggers import WandbLogger

    from lightning_fm.compat import drop_unset_wandb_init_argument

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True)
    assert logger._wandb_init.get("anonymous", 0) is None, "Lightning changed _wandb_init"
    drop_unset_wandb_init_argument(logger, "anonymous")
    assert "anonymous" not in logger._wandb_init
    logger._wandb_init["tags"] = ["kept"]
    drop_unset_wandb_init_argument(logger, "tags")
    assert logger._wandb_init["tags"] == ["kept"]
