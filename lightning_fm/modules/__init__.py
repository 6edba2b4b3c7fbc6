"""LightningModules: thin glue that draws a batch, asks the maths for a target, computes a loss and logs."""
from lightning_fm.modules.base import FlowMatchingModule, SampleResult, ValidationResult
from lightning_fm.modules.cfm import CFMModule

__all__ = ["CFMModule", "FlowMatchingModule", "SampleResult", "ValidationResult"]
