"""torchcfm's own OT-CFM on 8gaussians -> moons, run in its own venv, scored with this project's W2.

    python benchmarks/torchcfm_reference.py --steps 5000 --seeds 0 1 2

What is measured, and how:

* The problem is torchcfm's: source ``torchcfm.utils.sample_8gaussians``, target ``torchcfm.utils.sample_moons``
  (torchdyn's evenly spaced moons with one uniform jitter per point), drawn by torchcfm 1.0.7 itself in the venv
  ``benchmarks/.envs/torchcfm`` (torch 2.14.1, built by :mod:`peer_env`; nothing of it enters the project's venv).
* :func:`reference_samples` fixes the evaluation sets once (cached ``.pt``): ``source`` (``sample_8gaussians(n)``),
  ``target`` (``sample_moons(n)``) after ``torch.manual_seed(seed); np.random.seed(seed)``, ``target2`` (another
  ``sample_moons(n)`` after seeding ``seed + 1``) and ``target_iid`` (n rows drawn at random from
  ``sample_moons(100 n)``: an i.i.d. sample of the moons density, what a perfect model would produce).
* :func:`torchcfm_otcfm_w2` trains as the library and its 2-D tutorial do: ``MLP(dim=2, time_varying=True)`` (w=64),
  ``Adam`` (lr 1e-3), ``ExactOptimalTransportConditionalFlowMatcher(sigma=0.1)``, a fresh batch of 256 from each
  sampler every step, no EMA, one thread; only the training loop is timed. It then integrates the reference
  ``source`` with 100 Euler steps (dt = 0.01) of ``model(cat([x, t], -1))``, and W2 is computed here, in the project's
  venv, by ``lightning_fm.metrics.wasserstein2`` (exact EMD) against ``target``.
* Noise floors: ``floor`` = W2(target, target2), two draws of torchcfm's sampler (small: the moons points sit on the
  same evenly spaced grid, only the jitter differs); ``floor_iid`` = W2(target_iid, target), the score of an exact
  sampler of the density. A model is at the floor when its W2 is near ``floor_iid``, not ``floor``.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
from pathlib import Path

import torch

try:  # run as a script, or imported with benchmarks/ on sys.path
    from peer_env import ENVS, ensure_env, run_in_env
except ModuleNotFoundError:  # imported as benchmarks.torchcfm_reference from the repository root
    from benchmarks.peer_env import ENVS, ensure_env, run_in_env

TORCHCFM = "torchcfm==1.0.7"
CACHE = ENVS / "cache"
OUT = Path(__file__).resolve().parent / "results" / "torchcfm_reference.json"
SETTINGS = {
    "sigma": 0.1,
    "batch": 256,
    "lr": 1e-3,
    "width": 64,
    "n": 2000,
    "euler_steps": 100,
    "dt": 0.01,
    "threads": 1,
    "ema": None,
    "reference_seed": 0,
}

_HEADER = """
import json, time
import numpy as np, torch
torch.set_num_threads(1)
from torchcfm.utils import sample_8gaussians, sample_moons
P = json.loads(__PARAMS__)
"""

_SAMPLE = (
    _HEADER
    + """
torch.manual_seed(P["seed"]); np.random.seed(P["seed"])
source, target = sample_8gaussians(P["n"]), sample_moons(P["n"])
torch.manual_seed(P["seed"] + 1); np.random.seed(P["seed"] + 1)
target2 = sample_moons(P["n"])
big = sample_moons(100 * P["n"])
target_iid = big[torch.randperm(len(big))[:P["n"]]]
torch.save({"source": source, "target": target, "target2": target2, "target_iid": target_iid}, P["path"])
"""
)

_TRAIN = (
    _HEADER
    + """
import torchcfm
from torchcfm.conditional_flow_matching import *
from torchcfm.models.models import MLP
torch.manual_seed(P["seed"]); np.random.seed(P["seed"])
model = MLP(dim=2, time_varying=True, w=P["width"])
optimizer = torch.optim.Adam(model.parameters(), lr=P["lr"])
FM = eval(P["matcher"])
for step in range(P["warmup"] + P["steps"]):
    if step == P["warmup"]:
        start = time.perf_counter()
    optimizer.zero_grad()
    x0, x1 = sample_8gaussians(P["batch"]), sample_moons(P["batch"])
    t, xt, ut = FM.sample_location_and_conditional_flow(x0, x1)
    vt = model(torch.cat([xt, t[:, None]], dim=-1))
    loss = torch.mean((vt - ut) ** 2)
    loss.backward()
    optimizer.step()
seconds = time.perf_counter() - start
x = torch.load(P["reference"], weights_only=True)["source"]
with torch.no_grad():
    for i in range(P["euler_steps"]):
        t = torch.full((len(x), 1), i * P["dt"])
        x = x + P["dt"] * model(torch.cat([x, t], -1))
torch.save(x, P["out"])
print(json.dumps({"train_s": seconds, "loss": loss.item(), "torch": torch.__version__,
                  "torchcfm": torchcfm.__version__, "numpy": np.__version__}))
"""
)

#: torchcfm's OT-CFM flow matcher, as its 2-D tutorial builds it
OTCFM_MATCHER = "ExactOptimalTransportConditionalFlowMatcher(sigma=P['sigma'])"


def _snippet(code: str, **params) -> str:
    """``code`` with its parameters ``P`` filled in (as a JSON string literal)."""
    return code.replace("__PARAMS__", repr(json.dumps(params)))


def reference_samples(n: int = 2000, seed: int = 0, cache: Path = CACHE) -> dict:
    """torchcfm's own ``source``/``target``/``target2``/``target_iid`` sets (see the module doc), as tensors.

    Drawn once in the torchcfm venv and cached as ``cache/reference_n{n}_seed{seed}.pt``."""
    path = Path(cache) / f"reference_n{n}_seed{seed}.pt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        python = ensure_env("torchcfm", [TORCHCFM])
        run_in_env(python, _snippet(_SAMPLE, n=n, seed=seed, path=str(path)), 600)
    return torch.load(path, weights_only=True)


def torchcfm_train(matcher: str, steps: int, seed: int = 0, warmup: int = 0) -> dict:
    """Train with torchcfm's flow matcher ``matcher`` (a constructor call evaluated in its venv, e.g.
    ``"ConditionalFlowMatcher(sigma=0.1)"``) for ``warmup + steps`` steps, timing the last ``steps``; map the
    seed-0 reference ``source`` with 100 Euler steps. Returns ``samples`` (n, 2), ``train_s``, ``steps_per_s``, the
    final batch ``loss`` and the env's versions."""
    python = ensure_env("torchcfm", [TORCHCFM])
    reference_samples(SETTINGS["n"], SETTINGS["reference_seed"])  # drawn once, in torchcfm's venv
    reference = CACHE / f"reference_n{SETTINGS['n']}_seed{SETTINGS['reference_seed']}.pt"
    with tempfile.TemporaryDirectory() as tmp:
        params = {
            **SETTINGS,
            "matcher": matcher,
            "steps": steps,
            "warmup": warmup,
            "seed": seed,
            "reference": str(reference),
            "out": f"{tmp}/x.pt",
        }
        stdout = run_in_env(python, _snippet(_TRAIN, **params), 24 * 3600)
        samples = torch.load(f"{tmp}/x.pt", weights_only=True)
    info = json.loads(stdout.strip().splitlines()[-1])
    return {"samples": samples, "steps_per_s": steps / info["train_s"], **info}


def torchcfm_otcfm_w2(steps: int, seed: int = 0) -> dict:
    """Train torchcfm's OT-CFM ``steps`` steps (training seed ``seed``) and score it on the seed-0 reference sets.

    Returns ``samples`` (n, 2), ``w2`` (to ``target``), ``floor``, ``floor_iid``, ``train_s``, ``steps_per_s``,
    the final batch ``loss`` and the env's versions."""
    from lightning_fm.metrics import wasserstein2

    run = torchcfm_train(OTCFM_MATCHER, steps, seed)
    ref = reference_samples(SETTINGS["n"], SETTINGS["reference_seed"])
    return {
        "steps": steps,
        "seed": seed,
        "w2": wasserstein2(run["samples"], ref["target"]),
        "floor": wasserstein2(ref["target"], ref["target2"]),
        "floor_iid": wasserstein2(ref["target_iid"], ref["target"]),
        **run,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = parser.parse_args()
    rows = []
    print("| steps | seed | W2 | floor | floor (i.i.d.) | train s | steps/s |")
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        r = torchcfm_otcfm_w2(args.steps, seed)
        r.pop("samples")
        rows.append(r)
        print(
            f"| {r['steps']} | {seed} | {r['w2']:.4f} | {r['floor']:.4f} | {r['floor_iid']:.4f} "
            f"| {r['train_s']:.1f} | {r['steps_per_s']:.0f} |",
            flush=True,
        )
    settings = {
        **SETTINGS,
        "steps": args.steps,
        "peer": TORCHCFM,
        "torchcfm": rows[0]["torchcfm"],
        "torch": rows[0]["torch"],
        "numpy": rows[0]["numpy"],
        "model": "torchcfm.models.models.MLP",
        "flow_matcher": "ExactOptimalTransportConditionalFlowMatcher",
        "optimizer": "Adam",
        "cpu": platform.processor() or platform.machine(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"settings": settings, "runs": rows}, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
