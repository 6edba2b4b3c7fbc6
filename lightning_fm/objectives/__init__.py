"""Each family's maths as a pure object (no Lightning): the training target and loss from a batch of coupled pairs,
the sampler call and the likelihood. The LightningModules of :mod:`lightning_fm.modules` compose them."""

from lightning_fm.objectives.field import FieldObjective
from lightning_fm.objectives.pairs import Pairs, couple, superposition_groups
from lightning_fm.objectives.regression import Regression
from lightning_fm.objectives.velocity import VelocityObjective

__all__ = ["FieldObjective", "Pairs", "Regression", "VelocityObjective", "couple", "superposition_groups"]
