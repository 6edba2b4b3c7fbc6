"""The figure of the duality experiment (:mod:`lightning_fm.experiments.duality.run`), ``duality.png``: samples of both
models, CFM trajectories vs forward-only IFM field lines (against t and in data space), and lines of the exact EFM
(Coulomb) field that leave the slab.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from lightning_fm.fields import CoulombField
from lightning_fm.sampling import follow_arclength, unit_vector


def efm_field_lines(
    field: CoulombField, P, Q, L: float, n_charges: int = 5, n_dirs: int = 16, max_steps: int = 1500
) -> list:
    """Field lines of the exact Coulomb field from a few source charges, started in all directions of the
    (z, x_1) plane, followed by arclength (midpoint steps ``h = clamp(0.25 d, 1e-3, 0.05 L)``, d: distance to the
    nearest charge) until the line reaches a target charge, leaves the box, or ``max_steps``. Returns a list of
    (K, 3) arrays."""
    order = torch.argsort(P[:, 0])
    chosen = P[order[torch.linspace(0, len(P) - 1, n_charges).long()]]
    theta = torch.linspace(0, 2 * math.pi, n_dirs + 1, dtype=torch.float64)[:-1] + 0.1
    r0 = 0.02
    starts = torch.cat(
        [
            torch.cat(
                [r0 * torch.cos(theta)[:, None], c + r0 * torch.stack([torch.sin(theta), torch.zeros_like(theta)], 1)],
                1,
            )
            for c in chosen
        ]
    )
    charges = torch.cat(
        [
            torch.cat([torch.zeros(len(P), 1, dtype=P.dtype), P], 1),
            torch.cat([torch.full((len(Q), 1), L, dtype=Q.dtype), Q], 1),
        ]
    )

    def direction(y):
        return unit_vector(*field.direction(y[:, 0], y[:, 1:], P, Q))

    def step_size(y):
        return (0.25 * torch.cdist(y, charges).min(1).values).clamp(1e-3, 0.05 * L)

    def stop(_index, _y, y_new):
        near_q = torch.cdist(y_new, charges[len(P) :]).min(1).values < 5e-3
        far = (y_new[:, 0] < -1.5 * L) | (y_new[:, 0] > 2.5 * L) | (y_new[:, 1:].abs().max(1).values > 30)
        return near_q | far, y_new

    lines = follow_arclength(direction, starts, step_size, max_steps, "midpoint", stop, record=len(starts))
    return list(lines.trajectory.transpose(0, 1))  # (lines, K, 3)


def make_figure(path: Path, target, samples: dict, efm: dict, L: float, n_lines: int = 24) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    cfm, ifm = samples["cfm"], samples["ifm"]
    fig, axes = plt.subplots(2, 2, figsize=(13, 11))
    ax = axes[0, 0]
    ax.scatter(target[:, 0], target[:, 1], s=3, c="0.7", label="target (held out)")
    ax.scatter(cfm.x[:, 0], cfm.x[:, 1], s=3, c="tab:blue", alpha=0.6, label="CFM samples (Euler in t)")
    ax.scatter(ifm.x[:, 0], ifm.x[:, 1], s=3, c="tab:orange", alpha=0.6, label="forward-only IFM samples (Euler in z)")
    ax.set_title("samples of both models from the same source points")
    ax.legend(markerscale=4, fontsize=8, loc="upper right")
    ax.set_aspect("equal", adjustable="datalim")

    ax = axes[0, 1]
    tc, ti = cfm.trajectory[:, :n_lines], ifm.trajectory[:, :n_lines]
    ax.plot(cfm.times.numpy(), tc[:, :, 0].numpy(), c="tab:blue", lw=1.2, alpha=0.8)
    ax.plot((ifm.times / L).numpy(), ti[:, :, 0].numpy(), c="tab:orange", lw=1.0, ls="--", alpha=0.9)
    ax.plot([], [], c="tab:blue", label="CFM trajectory x_1(t)")
    ax.plot([], [], c="tab:orange", ls="--", label="IFM field line x_1(z), plotted at t = z/L")
    ax.set_xlabel("t  (= z / L)")
    ax.set_ylabel("$x_1$")
    top = ax.secondary_xaxis("top", functions=(lambda t: t * L, lambda z: z / L))
    top.set_xlabel("z")
    ax.set_title("CFM trajectories vs forward-only IFM field lines", pad=28)
    ax.legend(fontsize=8, loc="lower left")

    ax = axes[1, 0]
    for k in range(tc.shape[1]):
        ax.plot(tc[:, k, 0].numpy(), tc[:, k, 1].numpy(), c="tab:blue", lw=1.2, alpha=0.7)
        ax.plot(ti[:, k, 0].numpy(), ti[:, k, 1].numpy(), c="tab:orange", lw=1.0, ls="--", alpha=0.9)
    ax.scatter(tc[0, :, 0], tc[0, :, 1], s=10, c="k", zorder=3, label="start (source)")
    ax.scatter(target[:, 0], target[:, 1], s=2, c="0.8", zorder=0, label="target")
    ax.set_title("the same paths in data space (solid: CFM, dashed: IFM)")
    ax.legend(markerscale=3, fontsize=8, loc="upper right")
    ax.set_aspect("equal", adjustable="datalim")

    ax = axes[1, 1]
    lines = efm_field_lines(efm["field"], efm["P"], efm["Q"], L)
    for line in lines:
        pts = line[:, [0, 1]].numpy()
        dz = line[1:, 0] - line[:-1, 0]
        moving = (line[1:] - line[:-1]).norm(dim=1) > 0
        segs = [[pts[i], pts[i + 1]] for i in range(len(dz)) if moving[i]]
        colors = ["tab:red" if float(dz[i]) < 0 else "tab:green" for i in range(len(dz)) if moving[i]]
        ax.add_collection(LineCollection(segs, colors=colors, linewidths=0.9))
    ax.scatter(torch.zeros(len(efm["P"])), efm["P"][:, 0], s=6, c="tab:blue", label="source charges (+), z = 0")
    ax.scatter(torch.full((len(efm["Q"]),), L), efm["Q"][:, 0], s=6, c="tab:purple", label="target charges (-), z = L")
    ax.axvline(0, c="k", lw=0.8, ls=":")
    ax.axvline(L, c="k", lw=0.8, ls=":")
    ax.axvspan(-1.5 * L, 0, color="0.93", zorder=-1)
    ax.axvspan(L, 2.5 * L, color="0.93", zorder=-1)
    ax.plot([], [], c="tab:green", label="moving forward in z")
    ax.plot([], [], c="tab:red", label="moving backward in z (no CFM time)")
    ax.set_xlim(-1.0 * L, 2.0 * L)
    ax.set_ylim(-14, 14)
    ax.set_xlabel("z")
    ax.set_ylabel("$x_1$")
    ax.set_title(
        "EFM (exact Coulomb field of the same data): lines leave the slab\n"
        "(projection of 3-D lines onto the (z, $x_1$) plane; grey = behind the plates)"
    )
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
