"""LightningModules: thin glue that draws a batch, asks the family's objective (:mod:`lightning_fm.objectives`)
for the step's problem and loss, and logs."""

from lightning_fm.modules.base import FlowMatchingModule
from lightning_fm.modules.cfm import CFMModule
from lightning_fm.modules.evaluation import EvaluationMetrics, ValidationResult
from lightning_fm.modules.forward_only import ForwardOnlyIFMModule
from lightning_fm.modules.ifm import IFMModule
from lightning_fm.objectives import Pairs

__all__ = [
    "CFMModule",
    "EvaluationMetrics",
    "FlowMatchingModule",
    "ForwardOnlyIFMModule",
    "IFMModule",
    "Pairs",
    "ValidationResult",
]
