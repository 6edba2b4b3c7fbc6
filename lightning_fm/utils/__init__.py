"""Small shared helpers: rebuildable specs (:mod:`.spec`), tensor broadcasting (:mod:`.tensors`), seeds
(:mod:`.seeding`)."""

from lightning_fm.utils.seeding import derive_seed, make_generator, numpy_seed
from lightning_fm.utils.spec import Buildable, build, build_callable, callable_spec, class_path, describe, to_spec
from lightning_fm.utils.tensors import as_time, pad_like

__all__ = [
    "Buildable",
    "as_time",
    "build",
    "build_callable",
    "callable_spec",
    "class_path",
    "derive_seed",
    "describe",
    "make_generator",
    "numpy_seed",
    "pad_like",
    "to_spec",
]
