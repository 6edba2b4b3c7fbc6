"""``--ckpt_path`` in the CLI: what the checkpoint decides and what the user does. Pure Python (no Lightning).

Precedence: the CLI's defaults < the checkpoint's model (its class and stored hyperparameters, every component a
spec) < ``-c`` files and command-line values. So the settings that may change between runs (optimiser and schedule,
sampler, guidance, validation and logging settings, label dropout, ...) take the user's value wherever one is
given, and the checkpoint's elsewhere. The settings that define the trained network, :data:`NETWORK_KEYS` (and the
model's class), must be the checkpoint's: a value that differs is an error naming the key, both values and the file.
"""

from __future__ import annotations

import math
from typing import Any

from lightning_fm.modules.loading import CheckpointError
from lightning_fm.utils.spec import import_class

#: the model settings that define the trained network (its parameters' meaning): checked, never overridden
NETWORK_KEYS = ("backbone", "path", "field", "L", "coupling")


def same_class(a: Any, b: Any) -> bool:
    """Whether two class paths name one class (``lightning_fm.models.MLP`` is ``lightning_fm.models.mlp.MLP``)."""
    if a == b:
        return True
    try:
        return import_class(a) is import_class(b)
    except ValueError:
        return False


def _plain(value: Any) -> Any:
    return value.as_dict() if hasattr(value, "as_dict") else value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0) or (math.isnan(a) and math.isnan(b))
    return a == b


def differences(given: Any, stored: Any, key: str) -> list[tuple[str, Any, Any]]:
    """``(key, given, stored)`` for every leaf where ``given`` differs from ``stored``; a ``given`` None (left to the
    checkpoint or to the data, e.g. ``data_shape``) and keys present on one side only are not differences."""
    if given is None:
        return []
    if isinstance(given, dict) and isinstance(stored, dict):
        if not same_class(given.get("class_path"), stored.get("class_path")):
            return [(f"{key}.class_path", given.get("class_path"), stored.get("class_path"))]
        found: list[tuple[str, Any, Any]] = []
        for name in given.keys() & stored.keys() - {"class_path"}:
            found += differences(given[name], stored[name], f"{key}.{name}")
        return found
    if isinstance(given, (list, tuple)) and isinstance(stored, (list, tuple)):
        same = len(given) == len(stored) and all(not differences(a, b, key) for a, b in zip(given, stored))
        return [] if same else [(key, list(given), list(stored))]
    return [] if _same(given, stored) else [(key, given, stored)]


def network_mismatches(given: Any, stored: dict[str, Any], key: str = "model") -> list[tuple[str, Any, Any]]:
    """The differences of the model config ``given`` from the checkpoint's model ``stored`` in its class and
    :data:`NETWORK_KEYS`."""
    given = _plain(given)
    if not same_class(given.get("class_path"), stored["class_path"]):
        return [(f"{key}.class_path", given.get("class_path"), stored["class_path"])]
    given_args, stored_args = _plain(given.get("init_args")) or {}, stored.get("init_args") or {}
    found: list[tuple[str, Any, Any]] = []
    for name in NETWORK_KEYS:
        if name in given_args and name in stored_args:
            found += differences(_plain(given_args[name]), stored_args[name], f"{key}.init_args.{name}")
    return found


def check_network(given: Any, stored: dict[str, Any], where: str) -> None:
    """:class:`CheckpointError` listing :func:`network_mismatches` (``where``: the checkpoint, as the user gave it)."""
    found = network_mismatches(given, stored)
    if not found:
        return
    if found[0][0] == "model.class_path":
        raise CheckpointError(
            f"{where} holds a {stored['class_path']}, but model.class_path is {found[0][1]}: "
            "use the config the checkpoint was trained with (its run's config.yaml) or leave the "
            "model out (the checkpoint's is used)"
        )
    listed = "; ".join(f"{k}={g!r} but the checkpoint has {s!r}" for k, g, s in found[:3])
    more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
    raise CheckpointError(
        f"{where}: {listed}{more}. The {', '.join(NETWORK_KEYS)} define the trained network and must match the "
        "checkpoint: leave them out (the checkpoint's are used) or use the run's config.yaml"
    )
