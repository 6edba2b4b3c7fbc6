"""The one result type of every sampler: ODE solvers in t, field lines in z, and the duality wrappers."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


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
    returned: ``(B,)`` bool, False for field lines that never came back to the target plate, or None.
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
