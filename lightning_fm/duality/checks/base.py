"""What every duality check shares: :class:`CheckResult`, the tolerances (docs/concepts/checks.md#tolerances), the
plain-text table (:func:`format_checks`) and the drivers' setup (:func:`default_toy`). The checks themselves are in
:mod:`~lightning_fm.duality.checks.exact` and :mod:`~lightning_fm.duality.checks.statistical`; the table of every
check and its tolerance is in :mod:`~lightning_fm.duality.checks`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from lightning_fm.duality.gaussian_toy import GaussianToy
from lightning_fm.duality.maps import field_from_path
from lightning_fm.fields import InteractionField
from lightning_fm.paths import GaussianPath

DIVERGENCE_TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
ROUND_TRIP_TOL = {torch.float64: 1e-13, torch.float32: 1e-6}
TRAJECTORY_TOL = {torch.float64: 1e-12, torch.float32: 1e-5}
QUADRATURE_TOL = 1e-10


@dataclass
class CheckResult:
    """One check: ``passed`` is ``value <= tolerance`` unless the check's docstring says otherwise."""

    name: str
    value: float
    tolerance: float
    passed: bool
    kind: str  # "exact" | "statistical" | "diagnostic"
    details: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        flag = "ok" if self.passed else "FAIL"
        return f"{self.name:<34} {self.value:11.3e}  tol {self.tolerance:9.2e}  {flag:<4} [{self.kind}]"


def format_checks(results: Sequence[CheckResult]) -> str:
    """A plain-text table, one line per check."""
    return "\n".join(str(r) for r in results)


def _result(name: str, value: float | torch.Tensor, tolerance: float, kind: str, **details: Any) -> CheckResult:
    value = float(value)
    return CheckResult(name, value, float(tolerance), bool(value <= tolerance), kind, details)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "").replace("float", "fp")


# -- the drivers' setup --------------------------------------------------------------------------------------
def _setup(path_or_field: GaussianPath | InteractionField, L: float | None) -> tuple[InteractionField, GaussianPath]:
    if isinstance(path_or_field, InteractionField):
        field_ = path_or_field
        path = getattr(field_, "path", None)
        if L is not None and float(L) != field_.L:
            raise ValueError(f"L={L} differs from the field's L={field_.L}")
        if not field_.forward_only or getattr(field_, "exact", True) is False or not isinstance(path, GaussianPath):
            raise ValueError(f"{field_!r}: the exact checks need a forward-only field that is the current of a path")
        return field_, path
    return field_from_path(path_or_field, 1.0 if L is None else L), path_or_field


def default_toy(path: GaussianPath, D: int = 2) -> GaussianToy:
    """The toy used by the drivers: ``N(0, I) -> N(m1, 0.5^2 I)``, ``m1 = (2, -1, -1, ...)``."""
    m1 = -torch.ones(D, dtype=torch.float64)
    m1[0] = 2.0
    return GaussianToy(path, m0=0.0, s0=1.0, m1=m1, s1=0.5, dim=D)
