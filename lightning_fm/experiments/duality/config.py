"""The typed settings groups of the duality experiment's config (``train:``, ``checks:``, ``efm:``).

The whole schema is the signature of :class:`lightning_fm.experiments.duality.run.DualityExperiment`; these frozen
dataclasses are the types of its three settings groups, so that jsonargparse checks every value's type and refuses
an unknown key, naming it. Their defaults are the experiment's defaults (one place). Pure Python.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from jsonargparse.typing import NonNegativeInt, PositiveFloat, PositiveInt


@dataclass(frozen=True)
class TrainSettings:
    """How each of the two models is trained (the same for both).

    Args:
        max_steps: optimiser steps of each model (``--max_steps N`` on the command line).
        lr: Adam's learning rate (its peak: see ``lr_schedule``).
        lr_schedule: ``cosine``: :class:`lightning_fm.utils.schedules.CosineDecay` from ``lr`` to 0 over
            ``max_steps`` (the toy recipe of configs/toy/otcfm.yaml, the winner of benchmarks/toy_recipe_ablation.py);
            ``constant``: ``lr`` throughout.
        gradient_clip_val: gradient-norm clipping (null: none).
        ema_decay: decay of the EMA weights (the weights validated, sampled and saved).
        val_every_n_steps: validation interval in steps (the data's ``steps_per_epoch`` is
            ``min(val_every_n_steps, max_steps)``).
        log_every_n_steps: logging interval of the CSV logs.
        progress_bar: show Lightning's progress bar.
    """

    max_steps: PositiveInt = 3000
    lr: PositiveFloat = 2e-2
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    gradient_clip_val: float | None = 1.0
    ema_decay: float = 0.99
    val_every_n_steps: PositiveInt = 1000
    log_every_n_steps: PositiveInt = 50
    progress_bar: bool = True


@dataclass(frozen=True)
class CheckSettings:
    """The duality checks.

    Args:
        every_n_steps: interval of the ``DualityCheck`` callback during training (0: only after validations).
        n_points: held-out points (and lines) of the checks on the trained networks.
        c13_rel_tolerance: indicative scale of C13's relative L2 (no exact tolerance exists).
        c13_w2_tolerance: indicative scale of C13's W2 (null: the larger of the two models' own val/w2).
        noise_floor: also train a second CFM network with seed ``seed + 1`` and measure C13's metrics between the
            two CFM networks: the scale of "agree" (how close two trainings of one model come), against which the
            CFM vs forward-only IFM agreement is judged.
        statistical_n: lines of the Gaussian-toy checks C6, C7.
    """

    every_n_steps: NonNegativeInt = 500
    n_points: PositiveInt = 512
    c13_rel_tolerance: float = 0.1
    c13_w2_tolerance: float | None = None
    noise_floor: bool = True
    statistical_n: PositiveInt = 2000


@dataclass(frozen=True)
class EFMSettings:
    """EFM, the exact Coulomb field of the same data (the counter-example).

    Args:
        n_charges: charges per plate (data samples).
        n_points: points behind / between the plates for C9.
        n_lines: EFM sample lines from the source plate.
        max_arc_steps: cap of their continuation behind the target plate (null: 10 x sample_steps).
    """

    n_charges: PositiveInt = 256
    n_points: NonNegativeInt = 2000
    n_lines: PositiveInt = 256
    max_arc_steps: NonNegativeInt | None = 1000


def plain(value: Any) -> Any:
    """``value`` with jsonargparse's restricted numbers (``PositiveInt`` ...) as plain ``int``/``float``, recursively
    in dicts and lists."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    return value


def settings_dict(cls: type, value: Any, key: str) -> dict[str, Any]:
    """The settings ``value`` (a ``cls`` instance or a dict of its fields; missing fields take their defaults) as a
    plain dict; an unknown field is a ``ValueError`` naming ``key.field``."""
    if isinstance(value, cls):
        return plain(asdict(value))
    if not isinstance(value, dict):
        raise TypeError(f"duality config: {key} must be a {cls.__name__} or a mapping, got {type(value).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"duality config: unknown key {key}.{unknown[0]}; known: {sorted(known)}")
    return plain(asdict(cls(**value)))
