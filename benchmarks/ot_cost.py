"""Minibatch OT cost against batch size, side by side with torchcfm's ``OTPlanSampler`` in one run: the time of one
pairing call (cost matrix, plan, pairs) for exact OT and entropic OT (Sinkhorn), batch 64-4096, on 2-D toy points and
CIFAR-size vectors (D = 3072). torchcfm runs in its own venv (``benchmarks/.envs/torchcfm``, :mod:`peer_env`).

* exact: ours is ``OTCoupling("exact")`` (equal batches: the assignment ``scipy.optimize.linear_sum_assignment``,
  a permutation); torchcfm's is ``OTPlanSampler("exact").sample_plan`` (``ot.emd``, then a draw from the flattened
  plan).
* sinkhorn: ``reg = 0.05`` in units of the cost normalised to max 1 on both sides (``normalize_cost=True``), POT's
  ``ot.sinkhorn`` defaults (1000 iterations at most, tolerance 1e-9) on both.

Data ``x0, x1 ~ N(0, I)`` from ``torch.manual_seed(0)`` (the same numbers on both sides: the same torch). The median
of ``repeats`` calls is reported. Prints a table, writes JSON.

    python benchmarks/ot_cost.py [--batch-sizes 64 128 ... 4096] [--dims 2 3072] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from peer_env import ensure_env, run_in_env
from torchcfm_reference import TORCHCFM

from lightning_fm.couplings import OTCoupling

OUT = Path(__file__).resolve().parent / "results" / "ot_cost.json"

_THEIRS = """
import json, time, statistics
import torch
P = json.loads(__PARAMS__)
torch.set_num_threads(P["threads"])
from torchcfm.optimal_transport import OTPlanSampler
samplers = {"exact": OTPlanSampler("exact"), "sinkhorn": OTPlanSampler("sinkhorn", reg=0.05, normalize_cost=True)}
out = {}
for d in P["dims"]:
    for b in P["batch_sizes"]:
        torch.manual_seed(0)
        x0, x1 = torch.randn(b, d), torch.randn(b, d)
        for method, sampler in samplers.items():
            times = []
            for _ in range(P["repeats"][str(b)]):
                start = time.perf_counter(); sampler.sample_plan(x0, x1); times.append(time.perf_counter() - start)
            out[f"{method}/{d}/{b}"] = statistics.median(times)
print(json.dumps(out))
"""


def ours(params: dict) -> dict[str, float]:
    torch.set_num_threads(params["threads"])
    couplings = {"exact": OTCoupling("exact"), "sinkhorn": OTCoupling("sinkhorn", reg=0.05, normalize_cost=True)}
    out = {}
    for d in params["dims"]:
        for b in params["batch_sizes"]:
            torch.manual_seed(0)
            x0, x1 = torch.randn(b, d), torch.randn(b, d)
            for method, coupling in couplings.items():
                times = []
                for _ in range(params["repeats"][str(b)]):
                    start = time.perf_counter()
                    coupling(x0, x1)
                    times.append(time.perf_counter() - start)
                out[f"{method}/{d}/{b}"] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 3072])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    repeats = {str(b): 9 if b <= 256 else 3 if b <= 1024 else 1 for b in args.batch_sizes}
    params = {"batch_sizes": args.batch_sizes, "dims": args.dims, "threads": args.threads, "repeats": repeats}
    python = ensure_env("torchcfm", [TORCHCFM])
    import ot  # noqa: F401  (POT's import is not part of a call)

    theirs = json.loads(
        run_in_env(python, _THEIRS.replace("__PARAMS__", repr(json.dumps(params))), timeout=3600)
        .strip()
        .splitlines()[-1]
    )
    mine = ours(params)
    rows = [
        {
            "method": key.split("/")[0],
            "dim": int(key.split("/")[1]),
            "batch": int(key.split("/")[2]),
            "torchcfm_s": theirs[key],
            "lightning_fm_s": mine[key],
            "speedup": theirs[key] / mine[key],
        }
        for key in mine
    ]
    print(f"\none pairing call, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    print("| method | D | batch | torchcfm (ms) | lightning_fm (ms) | speed-up |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['dim']} | {r['batch']} | {1e3 * r['torchcfm_s']:.1f} | "
            f"{1e3 * r['lightning_fm_s']:.1f} | {r['speedup']:.2f} |"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                **params,
                "torch": torch.__version__,
                "torchcfm": TORCHCFM,
                "machine": platform.processor() or platform.machine(),
                "time": time.strftime("%Y-%m-%d"),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
