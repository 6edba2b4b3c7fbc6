"""Does the EFM toy hold on every machine? The shipped ``configs/toy/efm.yaml`` trained with 3 seeds and with 1 and 2
torch threads (two floating-point summation orders: what "another machine" changes), each model sampled from
torchcfm's own ``sample_8gaussians(2000)`` (:mod:`torchcfm_reference`) with the shipped sampler and with alternative
phase-1 guard rules, scored by exact W2 against torchcfm's ``sample_moons(2000)``. ``--kernels default`` trains with
torch's unvectorised CPU kernels (``ATEN_CPU_CAPABILITY``), another machine's rounding where threads change nothing;
``weight_difference_to_1_thread`` says how far each variant's final weights are from the 1-thread run's.

    python benchmarks/efm_stability.py                    # train what is missing, then evaluate
    python benchmarks/efm_stability.py --seeds 0 --threads 1
    python benchmarks/efm_stability.py --digits           # configs/digits/efm.yaml: classifier FD instead of W2

Runs are kept under ``benchmarks/.runs/efm_stability/`` (git-ignored) so that a rerun evaluates without retraining.
Per (seed, threads, sampler rule): the lines that crossed the target plate, did not return (flagged:
``SampleResult.returned`` is False, including those stopped by ``max_radius``), were absorbed, the samples farther
than 8 from the origin among the returned ones (the moons reach 5.7), W2 of the returned samples (and of all of
them, the number a user got before lines were flagged) and the network evaluations. JSON:
``benchmarks/results/efm_stability.json`` (``efm_stability_digits.json`` with ``--digits``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from _cli import fit_command  # noqa: E402
from trained_runs import load_run  # noqa: E402

RUNS = REPO / "benchmarks" / ".runs" / "efm_stability"
FAR = 8.0
#: sampler options compared on every trained model: the shipped ones ({}), and the rules they replaced
#: the sampler options compared on every trained model, over those of the model's checkpoint: the shipped config's
#: (read from the file, whatever the run was trained with), and the rules they replaced (no bound is max_radius = inf:
#: a sampler override of None means "as configured")
RULES = {
    "shipped": None,
    "before (fz_min_rel 0.05, no max_radius)": {"fz_min_rel": 0.05, "max_radius": math.inf},
    "fz_min_rel 0.2, max_radius 40": {"fz_min_rel": 0.2, "max_radius": 40.0},
}


def rules(config: str) -> dict[str, dict]:
    """:data:`RULES`, "shipped" being the sampler options of ``config`` as the repository holds it now."""
    shipped = yaml.safe_load((REPO / config).read_text())["model"]["init_args"]["sampler"]["init_args"]
    return {name: dict(shipped) if options is None else options for name, options in RULES.items()}


def train(config: str, seed: int, threads: int, tag: str, kernels: str | None = None) -> tuple[Path, float | None]:
    """``fit -c config`` with ``seed`` and ``threads`` into ``RUNS/<tag>/seed<seed>_threads<threads>`` (skipped when
    it finished before); the run directory and the wall time (None when it was already trained)."""
    root = RUNS / tag / (f"seed{seed}_threads{threads}" + (f"_kernels_{kernels}" if kernels else ""))
    if (root / "done").exists():
        return next(root.glob("runs/*/version_0")), None
    shutil.rmtree(root, ignore_errors=True)  # a run stopped half-way starts again
    root.mkdir(parents=True)
    env = dict(os.environ, LIGHTNING_FM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), MPLBACKEND="Agg")
    if kernels:  # torch's vectorised CPU kernels of another instruction set: another machine's rounding
        env["ATEN_CPU_CAPABILITY"] = kernels
    start = time.perf_counter()
    subprocess.run(
        fit_command(config, f"--seed_everything={seed}", f"--data.init_args.seed={seed}"),
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    (root / "done").write_text("")
    return next(root.glob("runs/*/version_0")), time.perf_counter() - start


def evaluate_toy(run: Path, config: str) -> dict:
    from torchcfm_reference import reference_samples

    from lightning_fm.metrics import wasserstein2

    module, _ = load_run(run)
    ref = reference_samples()
    source, target = ref["source"].float(), ref["target"].float()
    rows = {}
    for name, options in rules(config).items():
        with torch.no_grad():
            result = module.sample(source, **options)
        distance = result.x.norm(dim=1)
        returned = result.returned
        rows[name] = {
            "options": options,
            **{k: result.info.get(k, 0.0) for k in ("backward", "crossing", "not_returned", "escaped", "absorbed")},
            "flagged_share": float((~returned).float().mean()),
            "far_returned": int((distance[returned] > FAR).sum()),
            "max_distance_returned": float(distance[returned].max()),
            "w2_returned": wasserstein2(result.x[returned], target),
            "w2_all": wasserstein2(result.x, target),
            "nfe": result.nfe,
        }
    rows["w2_floor"] = wasserstein2(ref["target_iid"].float(), target)
    return rows


def evaluate_digits(run: Path, config: str) -> dict:
    from trained_runs import digits_evaluation

    from lightning_fm.metrics import frechet_distance

    module, _ = load_run(run)
    data, classifier = digits_evaluation()
    rows = {}
    for name, options in rules(config).items():
        with torch.no_grad():
            result = module.sample(data["x0"], **options)
            kept = result.x[result.returned]
            held_out = classifier.features(data["x1"])
            fd = frechet_distance(classifier.features(kept.clamp(-1, 1)), held_out)
            floor = frechet_distance(classifier.features(data["x1_ref"]), held_out)
        rows[name] = {
            "options": options,
            **{k: result.info.get(k, 0.0) for k in ("backward", "crossing", "not_returned", "escaped", "absorbed")},
            "returned_share": float(result.returned.float().mean()),
            "classifier_fd_returned": fd,
            "classifier_fd_floor": floor,
            "nfe": result.nfe,
        }
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--digits", action="store_true")
    parser.add_argument("--train-only", action="store_true", help="train what is missing, evaluate nothing")
    parser.add_argument(
        "--kernels", default=None, help="train with ATEN_CPU_CAPABILITY=<this> (default, avx2, avx512): other kernels"
    )
    args = parser.parse_args()
    tag = "digits" if args.digits else "toy"
    config = f"configs/{tag}/efm.yaml"
    out = REPO / "benchmarks" / "results" / ("efm_stability_digits.json" if args.digits else "efm_stability.json")
    results = json.loads(out.read_text()) if out.exists() else {"config": config, "runs": {}}
    for seed in args.seeds:
        for threads in args.threads:
            run, seconds = train(config, seed, threads, tag, args.kernels)
            print(f"trained seed {seed}, {threads} threads: {run} ({seconds and round(seconds)} s)", flush=True)
            if args.train_only:
                continue
            key = f"seed {seed}, {threads} threads" + (f", {args.kernels} kernels" if args.kernels else "")
            entry = results["runs"].get(key, {})
            if seconds is not None:
                entry["train_s"] = seconds
            torch.set_num_threads(threads)
            entry["rules"] = (evaluate_digits if args.digits else evaluate_toy)(run, config)
            results["runs"][key] = entry
            out.write_text(json.dumps(results, indent=2) + "\n")
            print(json.dumps(entry, indent=1), flush=True)
    results["weight_difference_to_1_thread"] = weight_differences(tag)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print("largest weight difference to the 1-thread run of the same seed:", results["weight_difference_to_1_thread"])


def weight_differences(tag: str) -> dict[str, float]:
    """Per trained variant (2 threads, other kernels): the largest absolute difference of its final weights (the
    checkpoint's ``state_dict``: network and EMA copy) to the 1-thread run of the same seed; 0.0 means bit for bit
    the same training."""
    differences = {}
    for root in sorted((RUNS / tag).glob("seed*_threads*")):
        seed = root.name.split("_")[0]
        base = RUNS / tag / f"{seed}_threads1"
        if root == base or not (root / "done").exists() or not (base / "done").exists():
            continue
        a, b = (
            torch.load(next(r.glob("runs/*/version_0/checkpoints/last.ckpt")), map_location="cpu", weights_only=True)[
                "state_dict"
            ]
            for r in (base, root)
        )
        differences[root.name] = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    return differences


if __name__ == "__main__":
    main()
