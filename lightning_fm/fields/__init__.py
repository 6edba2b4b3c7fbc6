"""Interaction fields between the source plate ``z = 0`` and the target plate ``z = L``
(docs/concepts/interaction-fields.md#interaction-fields).

* :class:`InteractionField` - base: ``pair_field``, ``superpose``, ``direction``, ``target``, ``forward_only``.
* :class:`ForwardOnlyField` - the map Phi: the space-time current of any CFM path (forward-only).
* :class:`StrongInteractionField` - IFM's quark-antiquark field (exact sine-bridge current, or the reference code).
* :class:`CoulombField` - EFM's capacitor (not forward-only).
* :mod:`.volume` - where IFM training points are drawn between (and behind) the plates.

Pure torch, no Lightning. Superpositions are log-domain matrix products over the pairs, chunked over the points.
"""

from lightning_fm.fields.base import DEFAULT_CHUNK, InteractionField, SuperposedField, normalize
from lightning_fm.fields.coulomb import CoulombField, log_sphere_area
from lightning_fm.fields.forward_only import ForwardOnlyField, StrongInteractionField
from lightning_fm.fields.volume import (
    GaussianMixing,
    PathVolume,
    PFGMMixing,
    SlabAndBeyondVolume,
    TimeDensityVolume,
    UniformVolume,
    VolumeSampler,
)

FIELDS = {
    "forward_only": ForwardOnlyField,
    "strong": StrongInteractionField,
    "coulomb": CoulombField,
}

__all__ = [
    "DEFAULT_CHUNK",
    "FIELDS",
    "CoulombField",
    "ForwardOnlyField",
    "GaussianMixing",
    "InteractionField",
    "PFGMMixing",
    "PathVolume",
    "SlabAndBeyondVolume",
    "StrongInteractionField",
    "SuperposedField",
    "TimeDensityVolume",
    "UniformVolume",
    "VolumeSampler",
    "log_sphere_area",
    "normalize",
]
