"""The source density ``log p_0`` of a data module, as a plain record that a checkpoint can hold.

A model's likelihood ``log p_1(x) = log p_0(x(0)) - int_0^1 div v dt`` (:mod:`lightning_fm.likelihood`) needs the
density of the source it was trained from. :func:`source_record` describes a data module's source as
``{"density": name or None, "source": what it is}`` (and, where it says more than that there is no closed form, a
``"reason"``), with ``name`` one of :data:`SOURCE_DENSITIES`:

* ``"standard_normal"``: N(0, I) noise (``source_is_standard_normal``: the toy ``gaussian``, image noise);
* ``"8gaussians"``: the toy 8-Gaussian mixture (torchcfm's construction, :mod:`.toy_distributions`);
* None: a source without a closed-form density (another toy such as ``moons``, the images of a transfer).

:func:`source_log_prob` turns a record back into ``log p_0`` or raises a ValueError naming the source. The modules
record their fit's source and keep it in their checkpoints (:meth:`lightning_fm.modules.FlowMatchingModule.
log_likelihood`); the held-out likelihood callback reads the same records.
"""

from __future__ import annotations

from typing import Any

import torch

from lightning_fm.data.toy import ToyDataModule
from lightning_fm.data.toy_distributions import (
    EIGHT_CENTRES,
    EIGHT_GAUSSIANS_SCALE,
    EIGHT_GAUSSIANS_STD,
    TOY_DISTRIBUTIONS,
)
from lightning_fm.likelihood import LogProb, gaussian_mixture_log_prob, standard_normal_log_prob

STANDARD_NORMAL = "standard_normal"
EIGHT_GAUSSIANS = "8gaussians"
#: the source densities known in closed form, by record name
SOURCE_DENSITIES = (STANDARD_NORMAL, EIGHT_GAUSSIANS)
KNOWN = "known: N(0, I) noise, the toy '8gaussians'"


def eight_gaussians_log_prob() -> LogProb:
    """``log p`` of the toy ``8gaussians`` source."""
    return gaussian_mixture_log_prob(EIGHT_GAUSSIANS_SCALE * torch.tensor(EIGHT_CENTRES), EIGHT_GAUSSIANS_STD)


def describe_source(datamodule: Any) -> str:
    """The data module's source in words, as its config key (``data.source='moons'``)."""
    if datamodule is None:
        return "the source (no data module)"
    source = (getattr(datamodule, "hparams", None) or {}).get("source")
    if isinstance(source, str):
        return f"data.source={source!r}"
    if isinstance(source, dict):  # a component's spec, as the hyperparameters keep it
        return f"data.source (a {str(source.get('class_path', 'dict')).rsplit('.', 1)[-1]})"
    if source is not None:
        return f"data.source (a {type(source).__name__})"
    return f"the source of {type(datamodule).__name__}"


def source_record(datamodule: Any) -> dict[str, str | None]:
    """``{"density": name or None, "source": description}`` of the data module's source (module docstring); a data
    module that draws its sources from another (``wrapped_data``: the teacher's data of
    :class:`~lightning_fm.data.TeacherPairsDataModule`) has that one's source."""
    while getattr(datamodule, "wrapped_data", None) is not None:
        datamodule = datamodule.wrapped_data
    density: str | None = None
    if getattr(datamodule, "source_is_standard_normal", False):
        density = STANDARD_NORMAL
    elif isinstance(datamodule, ToyDataModule) and datamodule.hparams.get("source") == EIGHT_GAUSSIANS:
        density = EIGHT_GAUSSIANS
    return {"density": density, "source": describe_source(datamodule)}


def legacy_source_record(datamodule_hparams: Any) -> dict[str, str | None] | None:
    """The record of a checkpoint written before modules recorded their source, from the data module's
    hyperparameters Lightning stored beside the model's: a toy source's name (``"gaussian"``: N(0, I)), an image
    set (no density) or null (this framework's image data modules: N(0, I) noise); None where they name no source."""
    if not isinstance(datamodule_hparams, dict) or "source" not in datamodule_hparams:
        return None
    source = datamodule_hparams["source"]
    if source is None:
        return {"density": STANDARD_NORMAL, "source": "data.source=null (noise)"}
    if isinstance(source, str) and source in TOY_DISTRIBUTIONS:
        density = {"gaussian": STANDARD_NORMAL, EIGHT_GAUSSIANS: EIGHT_GAUSSIANS}.get(source)
        return {"density": density, "source": f"data.source={source!r}"}
    return {"density": None, "source": "data.source (an image set)" if isinstance(source, dict) else "data.source"}


def no_density(record: dict[str, Any]) -> str:
    """Why the recorded source gives no density: its ``"reason"``, or that it has no closed form."""
    if record.get("reason"):
        return str(record["reason"])
    return f"{record.get('source') or 'the source'} has no closed-form density log p_0 ({KNOWN})"


def source_log_prob(record: dict[str, Any]) -> LogProb:
    """``log p_0`` of a :func:`source_record`; a ValueError (:func:`no_density`) where it has none."""
    density = record.get("density")
    if density == STANDARD_NORMAL:
        return standard_normal_log_prob
    if density == EIGHT_GAUSSIANS:
        return eight_gaussians_log_prob()
    raise ValueError(no_density(record))
