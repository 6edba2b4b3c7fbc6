"""The one result type of every sampler: ODE solvers in t, field lines in z, and the duality wrappers."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
from torch import Tensor


class LinesNotReturnedWarning(UserWarning):
    """Some field lines did not come back to the target plate: their ``x`` is where they stopped, flagged in
    ``SampleResult.returned`` (docs/concepts/interaction-fields.md#lines-astray)."""


def warn_if_not_returned(result: SampleResult, stacklevel: int = 4) -> None:
    """Warn (:class:`LinesNotReturnedWarning`) when lines of ``result`` did not return, with the count and the fix;
    ``stacklevel`` 4 names the caller of a ``torch.no_grad``-decorated ``sample`` method that calls this."""
    kept = result.kept()
    lost = int((~kept).sum())
    if lost:
        warnings.warn(
            f"{lost} of {kept.numel()} field lines did not return to the target plate (SampleResult.returned is False "
            "for them; their x is where they stopped, not a sample): use result.x[result.kept()]",
            LinesNotReturnedWarning,
            stacklevel=stacklevel,
        )


@dataclass
class SampleResult:
    """Samples and what it took to produce them.

    x: the samples ``(B, *dims)``. nfe: network (or field) evaluations, one per batched call.
    times: ``(K,)`` the recorded grid in the sampler's own variable (t for an ODE in time, z for field lines).
    trajectory: ``(K, R, *dims)`` the positions of the first R recorded lines at ``times`` (R <= B; see
        :func:`recorded_lines`), or None.
    arcs: ``(M, R, 1 + D)`` augmented ``(z, x)`` positions of the recorded lines continued beyond the target plate
        (EFM), or None.
    end_z: ``(B,)`` the z where each field line ended (L, ``L + return_tol`` for lines that came back from behind
        the plate, ``> L`` for those that did not return), or None for an ODE in time.
    returned: ``(B,)`` bool, False for field lines that never came back to the target plate (their ``x`` is where
        they stopped, not a sample of the target: leave them out, :meth:`kept`), or None (every line counts).
    info: sampler diagnostics as counts of lines (``backward``, ``crossing``, ``not_returned``, ``absorbed`` for
        field lines; ``invalid``, ``evaluated`` for a guarded field-as-velocity ODE).
    """

    x: Tensor
    nfe: int
    times: Tensor | None = None
    trajectory: Tensor | None = None
    arcs: Tensor | None = None
    end_z: Tensor | None = None
    returned: Tensor | None = None
    info: dict[str, float] = field(default_factory=dict)

    def kept(self) -> Tensor:
        """``(B,)`` bool: the lines whose ``x`` is a sample (those that returned; all of them without field lines).
        ``result.x[result.kept()]`` are the samples to score or to use."""
        if self.returned is None:
            return torch.ones(self.x.shape[0], dtype=torch.bool, device=self.x.device)
        return self.returned

    def recorded(self) -> tuple[Tensor, Tensor]:
        """``(times, trajectory)`` of a run sampled with ``record``; a ValueError for a run that recorded nothing."""
        if self.times is None or self.trajectory is None:
            raise ValueError("this run recorded no trajectory: sample it with record=True (or a number of lines)")
        return self.times, self.trajectory


def recorded_lines(record: bool | int, batch: int) -> int:
    """How many lines a sampler records: ``True`` all ``batch``, ``False``/0 none, an int ``k`` the first ``k``."""
    if isinstance(record, bool):
        return batch if record else 0
    if int(record) != record or record < 0:
        raise ValueError(f"record must be a bool or an integer >= 0 (lines to record), got {record!r}")
    return min(int(record), batch)
