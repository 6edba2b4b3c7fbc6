"""The CIFAR-10 U-Net's training step (forward + backward) against torchcfm's ``UNetModelWrapper`` of the same
configuration, side by side in one run: torchcfm's own class in its own venv (``benchmarks/.envs/torchcfm``,
:mod:`peer_env`), ours in the project's, alternating rounds so that both see the same machine load.

Configuration (``configs/cifar10/otcfm.yaml``, torchcfm's ``train_cifar10.py``): 128 channels, mult (1, 2, 2, 2),
2 residual blocks, attention at 16x16 with heads of 64 channels, dropout 0.1, in training mode. A step is
``loss = ||net(x, t) - u||^2``, ``loss.backward()`` on random ``x, u ~ N(0, I)`` of shape (B, 3, 32, 32),
``t ~ U[0, 1]``; the median of the timed steps is reported. Prints a table, writes JSON.

    python benchmarks/unet_vs_torchcfm.py [--batch-size 4] [--steps 5] [--rounds 3] [--threads 1]
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

from lightning_fm.models import UNet

OUT = Path(__file__).resolve().parent / "results" / "unet_vs_torchcfm.json"

_STEP = """
def step():
    net.zero_grad(set_to_none=True)
    ((forward() - u) ** 2).mean().backward()

for _ in range(P["warmup"]):
    step()
times = []
for _ in range(P["steps"]):
    start = time.perf_counter(); step(); times.append(time.perf_counter() - start)
"""

_THEIRS = (
    """
import json, time
import torch
P = json.loads(__PARAMS__)
torch.set_num_threads(P["threads"]); torch.manual_seed(0)
from torchcfm.models.unet.unet import UNetModelWrapper
net = UNetModelWrapper(dim=(3, 32, 32), num_res_blocks=2, num_channels=128, channel_mult=[1, 2, 2, 2], num_heads=4,
                       num_head_channels=64, attention_resolutions="16", dropout=0.1).train()
x, u = torch.randn(P["batch"], 3, 32, 32), torch.randn(P["batch"], 3, 32, 32)
t = torch.rand(P["batch"])
forward = lambda: net(t, x)
"""
    + _STEP
    + """
print(json.dumps({"times": times, "parameters": sum(p.numel() for p in net.parameters())}))
"""
)


def ours(params: dict) -> dict:
    torch.set_num_threads(params["threads"])
    torch.manual_seed(0)
    net = UNet(
        [3, 32, 32],
        model_channels=128,
        channel_mult=(1, 2, 2, 2),
        num_res_blocks=2,
        attention_resolutions=(16,),
        num_heads=4,
        num_head_channels=64,
        dropout=0.1,
        time_scale=1.0,
    ).train()
    x, u = torch.randn(params["batch"], 3, 32, 32), torch.randn(params["batch"], 3, 32, 32)
    t = torch.rand(params["batch"])
    scope = {"P": params, "net": net, "u": u, "time": time, "forward": lambda: net(x, t)}
    exec(_STEP, scope)  # the same timed loop as torchcfm's side
    return {"times": scope["times"], "parameters": sum(p.numel() for p in net.parameters())}


def theirs(python: Path, params: dict) -> dict:
    code = _THEIRS.replace("__PARAMS__", repr(json.dumps(params)))
    return json.loads(run_in_env(python, code, timeout=1800).strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    python = ensure_env("torchcfm", [TORCHCFM])
    params = {"batch": args.batch_size, "steps": args.steps, "warmup": args.warmup, "threads": args.threads}
    runs = {"torchcfm": [], "lightning_fm": []}
    counts = {}
    for _ in range(args.rounds):  # alternate, so both see the same load
        for name, run in (("torchcfm", lambda: theirs(python, params)), ("lightning_fm", lambda: ours(params))):
            result = run()
            runs[name] += result["times"]
            counts[name] = result["parameters"]
    median = {name: statistics.median(times) for name, times in runs.items()}
    ratio = median["lightning_fm"] / median["torchcfm"]
    print(
        f"\nCIFAR-10 U-Net forward+backward, batch {args.batch_size}, {args.threads} thread(s), "
        f"{args.rounds} rounds x {args.steps} steps, {platform.processor() or platform.machine()}"
    )
    print("| U-Net | parameters | median step (s) |")
    print("|---|---|---|")
    for name in runs:
        print(f"| {name} | {counts[name]:,} | {median[name]:.3f} |")
    print(f"lightning_fm / torchcfm step time: {ratio:.3f}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                **params,
                "rounds": args.rounds,
                "torch": torch.__version__,
                "torchcfm": TORCHCFM,
                "machine": platform.processor() or platform.machine(),
                "time": time.strftime("%Y-%m-%d"),
                "parameters": counts,
                "median_s": median,
                "time_ratio": ratio,
                "step_times": runs,
            },
            indent=2,
        )
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
