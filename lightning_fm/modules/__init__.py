"""LightningModules: thin glue that draws a batch, asks the maths for a target, computes a loss and logs."""
from lightning_fm.modules.base import FlowMatchingModule, Pairs
from lightning_fm.modules.cfm import CFMModule
from lightning_fm.modules.evaluation import EvaluationMetrics, ValidationResult
from lightning_fm.modules.forward_only import ForwardOnlyIFMModule
from lightning_fm.modules.ifm import IFMModule

__all__ = ["CFMModule", "EvaluationMetrics", "FlowMatchingModule", "ForwardOnlyIFMModule", "IFMModule", "Pairs",
           "ValidationResult"]
