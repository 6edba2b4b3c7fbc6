"""Why do some lines of a learned EFM field not come back? A look at one trained toy run's field lines.

    python benchmarks/efm_lines.py RUN_DIR [--out benchmarks/results/efm_lines]

RUN_DIR is a run of ``configs/toy/efm.yaml`` (``config.yaml`` and ``checkpoints/last.ckpt``). Its model (EMA weights)
maps torchcfm's own ``sample_8gaussians(2000)`` (:mod:`torchcfm_reference`) with its stored sampler, every line
recorded; the same source points are also carried by the EXACT Coulomb field of 2000 + 2000 charges (independent draws
of torchcfm's 8gaussians and moons constructions, float64) with the same sampler settings. Reported (JSON): lines
crossing the target plate, absorbed, not returned, samples farther than ``--far`` from the origin, W2 to torchcfm's
``sample_moons(2000)`` of all samples and of those that returned, and for every line that went astray: where it crossed
the plate, how high and how far it went, the learned and the exact ``E_z`` there and the share of the training volume's
points at least as far out. The figure (``.png``): the lines in ``(x_1, z)`` and ``(|x|, z)`` over the training
volume's points, the sign of the learned ``f_z`` just behind the plate against the exact ``E_z(L+)``, and the end
points' distances.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from torchcfm_reference import reference_samples  # noqa: E402
from trained_runs import load_run  # noqa: E402

from lightning_fm.data import sample_toy  # noqa: E402
from lightning_fm.fields import CoulombField  # noqa: E402
from lightning_fm.metrics import wasserstein2  # noqa: E402


def learned_field(module):
    def field(z: torch.Tensor, x: torch.Tensor):
        return module.predict(x, z, None)

    return field


def volume_points(module, source: torch.Tensor, target: torch.Tensor, n: int = 20000) -> torch.Tensor:
    """``(n, 1 + D)`` training points ``(z, x)`` of the run's volume, from independent pairs of the two samples."""
    g = torch.Generator().manual_seed(0)
    i = torch.randint(len(source), (n,), generator=g)
    j = torch.randint(len(target), (n,), generator=g)
    z, x = module.volume(source[i], target[j], module.L, g)
    return torch.cat([z[:, None], x.flatten(1)], 1)


def line_paths(result, index: int) -> torch.Tensor:
    """``(K, 1 + D)``: line ``index``'s phase-1 path in ``(z, x)`` followed by its arclength continuation."""
    times, trajectory = result.recorded()
    phase1 = torch.cat([times[:, None], trajectory[:, index]], 1)
    if result.arcs is None:
        return phase1
    return torch.cat([phase1, result.arcs[:, index]], 0)


def max_on_the_way(result) -> float:
    """The largest ``||x||`` any line reached, in phase 1 or behind the plate."""
    _, trajectory = result.recorded()
    far = float(trajectory.flatten(2).norm(dim=2).max())
    if result.arcs is not None:
        far = max(far, float(result.arcs[..., 1:].norm(dim=2).max()))
    return far


def describe(module, result, exact_ez, volume: torch.Tensor, far: float) -> dict:
    L = float(module.L)
    distance = result.x.norm(dim=1)
    astray = (~result.returned) | (distance > far)
    radius = volume[:, 1:].norm(dim=1)
    lines = []
    for index in astray.nonzero().squeeze(1).tolist():
        path = line_paths(result, index)
        behind = path[path[:, 0] > L]
        crossed = path[(path[:, 0] - L).abs().argmin(), 1:]
        lines.append(
            {
                "line": index,
                "returned": bool(result.returned[index]),
                "end": result.x[index].tolist(),
                "end_distance": float(distance[index]),
                "end_z": float(result.end_z[index]),
                "crossed_at": crossed.tolist(),
                "max_z": float(path[:, 0].max()),
                "max_distance": float(path[:, 1:].norm(dim=1).max()),
                "learned_fz_behind_plate": float(
                    module.predict(crossed[None], torch.tensor([L + 0.2]), None)[0].squeeze()
                ),
                "exact_Ez_behind_plate": float(exact_ez(crossed[None].double(), L + 0.2)),
                "volume_share_as_far_out": float((radius >= behind[:, 1:].norm(dim=1).max()).float().mean())
                if len(behind)
                else None,
                "volume_share_as_high": float((volume[:, 0] >= path[:, 0].max()).float().mean()),
            }
        )
    return {"astray": int(astray.sum()), "lines": lines}


def figure(module, learned, exact, volume, exact_ez, far: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = float(module.L)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4.8))
    for ax, (xs, label) in zip(
        axes[:2], ((lambda p: p[:, 1], "x_1"), (lambda p: p[:, 1:].norm(dim=1), "|x|")), strict=True
    ):
        ax.scatter(xs(volume), volume[:, 0], s=1, c="0.8", label="training volume")
        distance = learned.x.norm(dim=1)
        astray = (~learned.returned) | (distance > far)
        for i in (learned.arcs is not None and learned.returned.nonzero().squeeze(1)[:60].tolist()) or []:
            p = line_paths(learned, i)
            ax.plot(xs(p), p[:, 0], lw=0.5, c="tab:blue", alpha=0.5)
        for i in astray.nonzero().squeeze(1).tolist():
            p = line_paths(learned, i)
            ax.plot(xs(p), p[:, 0], lw=1.2, c="tab:red")
        ax.axhline(L, c="k", lw=0.8)
        ax.set(xlabel=label, ylabel="z", title=f"lines (blue: returned; red: astray) over the volume ({label}, z)")
    # the sign of the learned f_z just behind the plate, and the exact E_z(L+) there
    grid = torch.linspace(-14, 14, 281)  # wide enough for where the astray lines cross the plate
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    points = torch.stack([gx.flatten(), gy.flatten()], 1)
    with torch.no_grad():
        fz = module.predict(points, torch.full((len(points),), L + 0.2), None)[0].reshape(gx.shape)
    ez = exact_ez(points.double(), L + 0.2).reshape(gx.shape)
    ax = axes[2]
    ax.contourf(gx, gy, fz.sign(), levels=[-1.5, 0, 1.5], colors=["#f4c7c3", "#c6dbef"])
    ax.contour(gx, gy, ez, levels=[0], colors="k", linewidths=0.8)
    crossed = learned.returned.logical_not() | (learned.x.norm(dim=1) > far)
    starts = (
        torch.stack(
            [
                line_paths(learned, i)[(line_paths(learned, i)[:, 0] - L).abs().argmin(), 1:]
                for i in crossed.nonzero().squeeze(1).tolist()
            ]
        )
        if crossed.any()
        else torch.empty(0, 2)
    )
    ax.scatter(starts[:, 0], starts[:, 1], c="tab:red", s=25, marker="x", label="astray lines cross here")
    ax.set(title="sign of learned f_z at z = L + 0.2 (blue > 0);\nblack: exact E_z(L+) = 0", aspect="equal")
    ax.legend(fontsize=7, loc="lower left")
    ax = axes[3]
    bins = torch.logspace(-1, 3, 60)
    ax.hist(learned.x.norm(dim=1).clamp(0.1, 999), bins=bins, alpha=0.6, label="learned field")
    ax.hist(exact.x.norm(dim=1).clamp(0.1, 999), bins=bins, alpha=0.6, label="exact field")
    ax.axvline(far, c="k", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="|x| of the sample", title="distance of the samples from the origin")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "efm_lines")
    parser.add_argument("--far", type=float, default=8.0, help="a sample farther than this is astray (moons: 5.7)")
    args = parser.parse_args()
    torch.manual_seed(0)
    module, config = load_run(args.run)
    ref = reference_samples()
    source, target = ref["source"].float(), ref["target"].float()
    field = CoulombField(float(module.L))
    # the exact field's charges: independent draws of the same constructions (lines do not start on a charge)
    P = sample_toy("8gaussians", len(source), torch.Generator().manual_seed(1))[0].double()
    Q = sample_toy("moons", len(target), torch.Generator().manual_seed(2))[0].double()

    def exact(z, x):
        return field.direction(z, x, P, Q)

    def exact_ez(x: torch.Tensor, z: float) -> torch.Tensor:
        return exact(torch.full((len(x),), z, dtype=torch.float64), x)[0]

    with torch.no_grad():
        learned = module.sample(source, record=True)
        exact_result = module.objective.sampler(exact, source.double(), module.L, True, forward_only=False)
        volume = volume_points(module, source, target)
        report = {
            "run": str(args.run),
            "sampler": module.objective.sampler.init_args,
            "lines": len(source),
            "far": args.far,
        }
        for name, result in (("learned", learned), ("exact", exact_result)):
            x = result.x.float()
            ok = result.returned & (x.norm(dim=1) <= args.far)
            report[name] = {
                **result.info,
                "nfe": result.nfe,
                "farther_than_far": int((x.norm(dim=1) > args.far).sum()),
                "max_distance": float(x.norm(dim=1).max()),
                "max_distance_on_the_way": max_on_the_way(result),
                "w2_all": wasserstein2(x, target),
                "w2_returned": wasserstein2(x[result.returned], target),
                "w2_returned_and_near": wasserstein2(x[ok], target),
            }
        report["w2_floor"] = wasserstein2(ref["target_iid"].float(), target)
        report["astray"] = describe(module, learned, exact_ez, volume, args.far)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    figure(module, learned, exact_result, volume, exact_ez, args.far, args.out.with_suffix(".png"))
    print(json.dumps({k: v for k, v in report.items() if k != "astray"}, indent=1))
    for line in report["astray"]["lines"]:
        print(line)


if __name__ == "__main__":
    main()
