"""LightningModules: thin glue that draws a batch, asks the maths for a target, computes a loss and logs."""
from lightning_fm.modules.base import FlowMatchingModule, SampleResult, ValidationResult
from lightning_fm.modules.cfm import CFMModule
from lightning_fm.modules.forward_only import ForwardOnlyIFMModule
from lightning_fm.modules.ifm import IFMModule

__all__ = ["CFMModule", "FlowMatchingModule", "ForwardOnlyIFMModule", "IFMModule", "SampleResult", "ValidationResult"]
