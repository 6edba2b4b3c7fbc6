"""Time coverage at equal budget: where in ``t`` (CFM) or ``z = tL`` (forward-only IFM) the regression is trained.

    python benchmarks/time_density_study.py                 # toys and digits, every arm, seeds 0 1 2
    python benchmarks/time_density_study.py --only toy      # one group
    python benchmarks/time_density_study.py --plot          # table and figure from the JSON, no training

Arms (docs/concepts/flow-matching.md#time-sampling): ``uniform`` (the shipped default, t ~ U[0, 1]),
``logit_normal`` (t = sigmoid(N(0, 1)), Esser et al. 2024) and ``pfgm_volume`` (the time density of IFM's
``Uniform_mixing`` volume, :class:`~lightning_fm.fields.volume.PFGMMixing` with the IFM notebooks' sigma_end = 0.1,
tau = 0.03, M = 191 near the data plate, through ``t = z/L`` with the dual's L). CFM configs take the arm as
``model.time_sampler``; forward-only IFM configs as ``model.volume = TimeDensityVolume(<arm>, path)``, the path's own
points at the arm's heights (the uniform arm is the shipped ``PathVolume``, unchanged). Each (config, arm, seed) is
one ``fit`` through the CLI (:func:`config_results.run`, one thread, two runs side by side); the digits runs take
3000 steps (half the shipped schedule) with validation at 1500 and 3000. Everything else is the shipped config.

Reported: the last ``val/w2`` (toys), classifier FD, ``val/bpd`` and ``val/w2`` (digits); mean and sample standard
deviation over seeds, and each arm's difference from ``uniform`` paired by seed. An arm "wins" only where its mean is
better by more than the larger of the two arms' seed spreads. JSON: ``benchmarks/results/time_density_study.json``;
figure: ``benchmarks/results/time_density_study.png``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from config_results import run  # noqa: E402

OUT = REPO / "benchmarks" / "results" / "time_density_study.json"
FIGURE = OUT.with_suffix(".png")
SEEDS = (0, 1, 2)
PFGM = {"sigma_end": 0.1, "tau": 0.03, "M": 191, "near": "target"}

#: the digits budget: half the shipped 6000 steps, validated at the middle and the end
DIGITS = ("--trainer.max_steps=3000", "--trainer.val_check_interval=1500")
#: (group, family, config, the dual's L, the config's path as a spec, extra overrides)
CONFIGS = (
    ("toy", "cfm", "configs/toy/otcfm.yaml", 5.0, None, ()),
    ("toy", "forward_only_ifm", "configs/toy/forward_only_ifm.yaml", 5.0, ("LinearPath", 0.1), ()),
    ("digits", "cfm", "configs/digits/cfm.yaml", 10.0, None, DIGITS),
    (
        "digits",
        "forward_only_ifm",
        "configs/digits/forward_only_ifm.yaml",
        10.0,
        ("LinearPath", 0.1),
        DIGITS,
    ),
)
ARMS = ("uniform", "logit_normal", "pfgm_volume")
#: the metrics compared per group (lower is better for each)
METRICS = {"toy": ("val/w2",), "digits": ("val/fd", "val/bpd", "val/w2")}


def time_sampler(arm: str, L: float) -> dict:
    if arm == "uniform":
        return {"class_path": "lightning_fm.time_samplers.UniformTime"}
    if arm == "logit_normal":
        return {"class_path": "lightning_fm.time_samplers.LogitNormalTime", "init_args": {"m": 0.0, "s": 1.0}}
    volume = {"class_path": "lightning_fm.fields.volume.PFGMMixing", "init_args": PFGM}
    return {"class_path": "lightning_fm.time_samplers.VolumeTime", "init_args": {"volume": volume, "L": L}}


def overrides(arm: str, L: float, path: tuple[str, float] | None) -> list[str]:
    """The command-line values that put the arm in a config (none for the uniform arm: the shipped config)."""
    if arm == "uniform":
        return []
    sampler = time_sampler(arm, L)
    if path is None:
        return [f"--model.init_args.time_sampler={json.dumps(sampler)}"]
    path_spec = {"class_path": f"lightning_fm.paths.{path[0]}", "init_args": {"sigma": path[1]}}
    volume = {
        "class_path": "lightning_fm.fields.volume.TimeDensityVolume",
        "init_args": {"time_sampler": sampler, "path": path_spec},
    }
    return [f"--model.init_args.volume={json.dumps(volume)}"]


def key(config: str, arm: str, seed: int) -> str:
    return f"{config} | {arm} | seed {seed}"


def load() -> dict:
    """The runs recorded so far, by :func:`key` (an older flat file is read too)."""
    if not OUT.exists():
        return {}
    data = json.loads(OUT.read_text())
    return data["runs"] if "runs" in data else {k: v for k, v in data.items() if k != "summary"}


def save(results: dict, summary: list[dict] | None = None) -> None:
    """The study's JSON: its settings, every run (the command-line values that made its arm are the arm's spec in
    ``settings``) and, once computed, the summary."""
    settings = {
        "configs": [config for _, _, config, *_ in CONFIGS],
        "arms": {arm: time_sampler(arm, 5.0) for arm in ARMS},
        "volume arm L": "5 (toys), 10 (digits): the dual forward-only IFM's L",
        "digits budget": " ".join(DIGITS),
        "seeds": list(SEEDS),
        "threads per run": 1,
    }
    runs = {k: {f: v for f, v in r.items() if f != "overrides"} for k, r in results.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"settings": settings, "runs": runs, "summary": summary or []}, indent=2) + "\n")


def train(groups: set[str], seeds: tuple[int, ...], workers: int) -> None:
    results = load()
    todo = [
        (config, arm, seed, [*extra, *overrides(arm, L, path)])
        for group, _, config, L, path, extra in CONFIGS
        if group in groups
        for seed in seeds
        for arm in ARMS
        if "error" in results.get(key(config, arm, seed), {"error": 1})
    ]
    print(f"{len(todo)} runs to do ({len(results)} in {OUT.name})", flush=True)

    def one(job):
        config, arm, seed, args = job
        result = run(config, seed, tuple(args)) | {"arm": arm, "overrides": args}
        return key(config, arm, seed), result

    with ThreadPoolExecutor(workers) as pool:
        for name, result in pool.map(one, todo):
            results[name] = result
            shown = {k: result.get(k) for k in ("seconds", "val/w2", "val/fd", "val/bpd", "error")}
            print(name, shown, flush=True)
            save(results)


def summary(results: dict) -> list[dict]:
    """One row per (config, arm, metric): mean, spread and the paired difference from the uniform arm."""
    rows = []
    for group, family, config, *_ in CONFIGS:
        for metric in METRICS[group]:
            base = {r["seed"]: r[metric] for r in results.values() if r["config"] == config and r["arm"] == "uniform"}
            for arm in ARMS:
                runs = [r for r in results.values() if r["config"] == config and r["arm"] == arm and "error" not in r]
                values = [r[metric] for r in runs if r.get(metric) is not None]
                if not values:
                    continue
                diffs = [r[metric] - base[r["seed"]] for r in runs if r["seed"] in base and r.get(metric) is not None]
                rows.append(
                    {
                        "group": group,
                        "family": family,
                        "config": config,
                        "arm": arm,
                        "metric": metric,
                        "n": len(values),
                        "mean": statistics.fmean(values),
                        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                        "paired_diff": statistics.fmean(diffs) if diffs else None,
                        "steps": runs[0]["steps"],
                    }
                )
    for row in rows:
        uniform = next(
            r for r in rows if (r["config"], r["metric"], r["arm"]) == (row["config"], row["metric"], "uniform")
        )
        margin = max(row["std"], uniform["std"])
        seeded = row["n"] > 1 and uniform["n"] > 1  # a spread needs two seeds of each arm
        row["wins"] = row["arm"] != "uniform" and seeded and row["mean"] < uniform["mean"] - margin
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| config | steps | metric | arm | mean | std (seeds) | paired diff vs uniform | wins |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = "" if r["paired_diff"] is None or r["arm"] == "uniform" else f"{r['paired_diff']:+.3f}"
        lines.append(
            f"| `{r['config']}` | {r['steps']} | {r['metric']} | {r['arm']} | {r['mean']:.3f} | {r['std']:.3f} "
            f"| {diff} | {'yes' if r['wins'] else ''} |"
        )
    return "\n".join(lines)


def densities(n: int = 200_000) -> dict:
    """Samples of each arm's time density (L = 5 and 10 for the volume arm), for the figure."""
    import torch

    from lightning_fm.utils.spec import build

    generator = torch.Generator().manual_seed(0)
    out = {}
    for arm in ARMS:
        for L in (5.0, 10.0) if arm == "pfgm_volume" else (5.0,):
            sampler = build(time_sampler(arm, L))
            label = arm if arm != "pfgm_volume" else f"{arm} (L={L:g})"
            out[label] = sampler.sample(n, generator=generator).numpy()
    return out


def plot(results: dict, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(group, family, config, metric) for group, family, config, *_ in CONFIGS for metric in METRICS[group]]
    panels = [p for p in panels if any(r["config"] == p[2] and r["metric"] == p[3] for r in rows)]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.2 * (len(panels) + 1), 3.2))
    axes = list(getattr(axes, "flat", [axes]))
    for label, t in densities().items():
        axes[0].hist(t, bins=100, range=(0, 1), density=True, histtype="step", label=label)
    axes[0].set(title="time densities", xlabel="t", yscale="log")
    axes[0].legend(fontsize=6)
    for ax, (group, family, config, metric) in zip(axes[1:], panels):
        for i, arm in enumerate(ARMS):
            values = [
                r[metric]
                for r in results.values()
                if r["config"] == config and r["arm"] == arm and r.get(metric) is not None
            ]
            ax.scatter([i] * len(values), values, s=14, alpha=0.7)
            if values:
                ax.errorbar(i + 0.15, statistics.fmean(values), yerr=statistics.pstdev(values), fmt="k_", capsize=3)
        ax.set_xticks(range(len(ARMS)), [a.replace("_", "\n") for a in ARMS], fontsize=7)
        ax.set_title(f"{group} {family}\n{metric} (lower is better)", fontsize=8)
    fig.tight_layout()
    fig.savefig(FIGURE, dpi=120)
    print(f"wrote {FIGURE.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(METRICS), default=sorted(METRICS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--workers", type=int, default=2, help="runs side by side (one thread each)")
    parser.add_argument("--plot", action="store_true", help="only the table and figure, from the JSON")
    args = parser.parse_args()
    if not args.plot:
        train(set(args.only), tuple(args.seeds), args.workers)
    results = load()
    rows = summary(results)
    save(results, rows)
    print(table(rows))
    plot(results, rows)


if __name__ == "__main__":
    main()
