"""Sample quality against the number of network evaluations, per solver and model family: trained runs sample their
fixed validation sources with euler, midpoint, heun and rk4 at NFE 1 ... 100 (steps = NFE / stages).

    python -m lightning_fm fit -c configs/toy/otcfm.yaml        # and toy/forward_only_ifm, toy/ifm, toy/efm; digits/...
    python benchmarks/quality_vs_nfe.py runs/toy_otcfm/version_0 runs/toy_forward_only_ifm/version_0 ...

The metric follows the data: toys, exact W2 between the samples of the validation set's 2000 source points and its
2000 held-out targets (floor: an i.i.d. target sample against the same targets); 8x8 digits, the digits
classifier's Frechet distance between the samples of the 359 fixed noise points and the 359 held-out digits (floor:
359 training digits); other image runs, or any image run with ``--fid``, Inception FID of ``--fid-samples`` samples
(InceptionMetrics's noise) against the training split's cached statistics (floor: none; needs the Inception weights, see
the README). NFE is what the sampler counted: an EFM model's continuation behind the target plate adds to
its z-steps. Each run is restored from ``checkpoints/last.ckpt`` (EMA weights). Writes a PNG per data kind and JSON:
``benchmarks/results/quality_vs_nfe_<toy|digits>.{png,json}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from trained_runs import digits_evaluation, load_run, run_name  # noqa: E402

OUT = Path(__file__).resolve().parent / "results"
STAGES = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
NFES = (1, 2, 4, 8, 16, 32, 64, 100)


def fid_evaluation(config: dict, samples: int, weights_path: str | None):
    """Inception FID against the run's training split: ``("fid", x0, scorer, None)``."""
    from lightning_fm.callbacks.inception_metrics import InceptionMetrics, training_split_statistics
    from lightning_fm.metrics import InceptionFeatures, frechet_distance_from_stats, mean_and_covariance
    from lightning_fm.utils.spec import build

    data = build(config["data"])
    data.setup("fit")
    extractor = InceptionFeatures(weights_path)
    reference = training_split_statistics(data, extractor, 500, None, 0)
    callback = InceptionMetrics(n_samples=samples)
    x0 = torch.stack([callback.noise(i, tuple(data.data_shape)) for i in range(samples)])

    def score(x):
        return frechet_distance_from_stats(
            *mean_and_covariance(extractor(x.clamp(-1, 1))), reference["mu"], reference["cov"]
        )

    return "fid", x0, score, None


def evaluation(config: dict, fid: bool = False, fid_samples: int = 10_000, weights_path: str | None = None):
    """``(kind, x0, scorer, floor)`` of a run's data: ``scorer(samples) -> metric``."""
    from lightning_fm.metrics import frechet_distance, wasserstein2

    data = config["data"]
    if fid or not data["class_path"].endswith(("ToyDataModule", "DigitsDataModule")):
        return fid_evaluation(config, fid_samples, weights_path)
    if data["class_path"].endswith("ToyDataModule"):
        from lightning_fm.data import ToyDataModule

        batch = ToyDataModule(**data["init_args"]).eval_set("val")
        return "toy", batch["x0"], (lambda x: wasserstein2(x, batch["x1"])), wasserstein2(batch["x1_ref"], batch["x1"])
    if data["class_path"].endswith("DigitsDataModule"):
        batch, classifier = digits_evaluation()
        with torch.no_grad():
            target = classifier.features(batch["x1"])

            def score(x):
                return frechet_distance(classifier.features(x.clamp(-1, 1)), target)

            return "digits", batch["x0"], score, frechet_distance(classifier.features(batch["x1_ref"]), target)
    raise AssertionError("unreachable")


@torch.no_grad()
def sample_in_batches(module, x0, method: str, steps: int, batch_size: int = 2000):
    """Samples of the sources ``x0``, ``batch_size`` at a time, and the NFE of a batch (the largest)."""
    results = [module.sample(x0[i : i + batch_size], method=method, steps=steps) for i in range(0, len(x0), batch_size)]
    return torch.cat([r.x for r in results]), max(r.nfe for r in results)


def sweep(run: Path, args: argparse.Namespace) -> dict:
    module, config = load_run(run)
    kind, x0, score, floor = evaluation(config, args.fid, args.fid_samples, args.weights_path)
    rows = []
    for method, stages in STAGES.items():
        for steps in sorted({max(1, round(n / stages)) for n in args.nfe}):
            x, nfe = sample_in_batches(module, x0, method, steps)
            rows.append({"method": method, "steps": steps, "nfe": nfe, "metric": score(x)})
            print(run_name(config), rows[-1], flush=True)
    return {"run": run_name(config), "module": type(module).__name__, "kind": kind, "floor": floor, "rows": rows}


def plot(results: list[dict], kind: str, path: Path) -> None:
    fig, axes = plt.subplots(1, len(results), figsize=(4.2 * len(results), 3.8), squeeze=False, sharey=True)
    for ax, result in zip(axes[0], results):
        for method in STAGES:
            rows = [r for r in result["rows"] if r["method"] == method]
            ax.plot([r["nfe"] for r in rows], [r["metric"] for r in rows], marker="o", ms=3, label=method)
        if result["floor"] is not None:
            ax.axhline(result["floor"], color="0.4", ls="--", lw=0.8, label="floor")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(f"{result['run']} ({result['module']})", fontsize=9)
    axes[0, 0].set_ylabel(
        {"toy": "W2 to held-out targets", "digits": "digits-classifier FD", "fid": "Inception FID (train split)"}[kind]
    )
    axes[0, -1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--nfe", type=int, nargs="+", default=NFES, help="the NFE budgets")
    parser.add_argument("--fid", action="store_true", help="Inception FID for every run (digits too)")
    parser.add_argument("--fid-samples", type=int, default=10_000)
    parser.add_argument("--weights-path", default=None, help="the Inception weights (default: torch hub's cache)")
    args = parser.parse_args()
    torch.manual_seed(0)
    results = [sweep(run, args) for run in args.runs]
    OUT.mkdir(parents=True, exist_ok=True)
    for kind in sorted({r["kind"] for r in results}):
        mine = [r for r in results if r["kind"] == kind]
        (OUT / f"quality_vs_nfe_{kind}.json").write_text(json.dumps(mine, indent=2))
        plot(mine, kind, OUT / f"quality_vs_nfe_{kind}.png")
        print(f"\n{kind}: the metric at steps = round(NFE / stages) (the NFE counted, where it differs, in brackets)")
        print("| run | solver | " + " | ".join(f"NFE {n}" for n in args.nfe) + " | floor |")
        print("|---|---|" + "---|" * (len(args.nfe) + 1))
        for r in mine:
            for method, stages in STAGES.items():
                by_steps = {row["steps"]: row for row in r["rows"] if row["method"] == method}
                cells = []
                for n in args.nfe:
                    row = by_steps[max(1, round(n / stages))]
                    cells.append(f"{row['metric']:.3g}" + ("" if row["nfe"] == n else f" ({row['nfe']})"))
                floor = "" if r["floor"] is None else f"{r['floor']:.3g}"
                print(f"| {r['run']} | {method} | " + " | ".join(cells) + f" | {floor} |")


if __name__ == "__main__":
    main()
