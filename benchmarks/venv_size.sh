#!/usr/bin/env bash
# How large is an install? Builds two fresh virtual environments under a temporary folder, as docs/getting-started.md
# tells a user to:
#   default  pip install torch==2.14.1 torchvision==0.29.1 -e .      (PyPI's Linux torch wheel: CUDA libraries included)
#   cpu      torch and torchvision from PyTorch's CPU index first, then -e .
# For each: the size on disk of the whole venv, of its nvidia-* CUDA libraries and of torch, the versions installed,
# and whether the default job runs (`fit --trainer.max_steps 50` in a scratch folder). Writes
# benchmarks/results/venv_size.json (merged with earlier legs) and prints a table.
#   bash benchmarks/venv_size.sh [default|cpu ...]      (both by default)
#
# Where https://download.pytorch.org/whl/cpu does not answer (an offline mirror), name a local CPU wheel instead:
#   TORCH_CPU_WHEEL=/path/to/torch-X.Y.Z+cpu-....whl bash benchmarks/venv_size.sh
# torchvision is then the release made for that torch (its version is read from TORCHVISION_FOR_CPU_WHEEL, e.g.
# 0.28.0 for torch 2.13.0; torchvision's own wheel carries no CUDA libraries). PyPI's torchvision is built against
# PyPI's torch: beside a CPU torch its compiled operators do not load, and the default job then fails for that reason
# alone (recorded as default_job_error); the sizes still hold. Not part of .ci/run (downloads).
set -uo pipefail
cd "$(dirname "$0")/.."
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export TMPDIR="$scratch" MPLBACKEND=Agg WANDB_MODE=offline PIP_DISABLE_PIP_VERSION_CHECK=1

cpu_args=(torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu)
cpu_source="https://download.pytorch.org/whl/cpu"
if ! curl -sf --max-time 10 -o /dev/null https://download.pytorch.org/whl/cpu/torch/; then
    if [ -z "${TORCH_CPU_WHEEL:-}" ]; then
        echo "the CPU index does not answer: set TORCH_CPU_WHEEL (and TORCHVISION_FOR_CPU_WHEEL) to measure the cpu install" >&2
        exit 2
    fi
    cpu_args=("$TORCH_CPU_WHEEL" "torchvision==${TORCHVISION_FOR_CPU_WHEEL:?the torchvision release for that torch}")
    cpu_source="$(basename "$TORCH_CPU_WHEEL")"
fi

envs=("$@")
[ ${#envs[@]} -eq 0 ] && envs=(default cpu)
for env in "${envs[@]}"; do
    out="$scratch/$env"
    mkdir -p "$out/job"
    python3 -m venv "$out/venv"
    py="$out/venv/bin/python"
    start=$(date +%s)
    {
        "$py" -m pip install -q --upgrade pip
        if [ "$env" = cpu ]; then
            "$py" -m pip install -q "${cpu_args[@]}" && "$py" -m pip install -q -e .
        else
            "$py" -m pip install -q torch==2.14.1 torchvision==0.29.1 -e .
        fi
    } >"$out/install.log" 2>&1
    echo $? >"$out/install.rc"
    echo $(($(date +%s) - start)) >"$out/install.s"
    (cd "$out/job" && "$py" -m lightning_fm fit --trainer.max_steps 50 >"$out/job.log" 2>&1)
    echo $? >"$out/job.rc"
    site="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    du -sb "$out/venv" | cut -f1 >"$out/venv.bytes"
    du -sbc "$site"/nvidia* 2>/dev/null | tail -1 | cut -f1 >"$out/nvidia.bytes"
    du -sb "$site/torch" | cut -f1 >"$out/torch.bytes"
    "$py" -c 'import torch; print(torch.__version__, torch.version.cuda)' >"$out/versions" 2>/dev/null
    "$py" -c 'import torchvision; print(torchvision.__version__)' >"$out/vision" 2>/dev/null || echo unimportable >"$out/vision"
    tail -1 "$out/job.log" >"$out/job.last"
    echo "[$env] install rc=$(cat "$out/install.rc") job rc=$(cat "$out/job.rc") torch, CUDA: $(cat "$out/versions"), torchvision $(cat "$out/vision")"
done

python3 - "$scratch" "$cpu_source" "${envs[@]}" <<'EOF'
import json, sys
from pathlib import Path

scratch, cpu_source, envs = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
read = lambda env, name: (scratch / env / name).read_text().strip()
out = Path("benchmarks/results/venv_size.json")
rows = json.loads(out.read_text()) if out.exists() else {}
for env in envs:
    torch_v, cuda = (read(env, "versions").split() + ["?"] * 2)[:2]
    rows[env] = {
        "torch": torch_v,
        "torchvision": read(env, "vision"),
        "cuda": None if cuda == "None" else cuda,
        "source": "PyPI" if env == "default" else cpu_source,
        "install_ok": read(env, "install.rc") == "0",
        "install_s": int(read(env, "install.s")),
        "default_job_ok": read(env, "job.rc") == "0",
        "default_job_error": None if read(env, "job.rc") == "0" else read(env, "job.last"),
        "venv_gb": int(read(env, "venv.bytes")) / 1e9,
        "nvidia_gb": int(read(env, "nvidia.bytes") or 0) / 1e9,
        "torch_gb": int(read(env, "torch.bytes")) / 1e9,
    }
out.write_text(json.dumps(rows, indent=2) + "\n")
print("| install | torch (CUDA) | venv | nvidia-* | torch | default job |")
print("|---|---|---|---|---|---|")
for env, r in rows.items():
    print(
        f"| {env} ({r['source']}) | {r['torch']} ({r['cuda'] or 'none'}) | {r['venv_gb']:.2f} GB "
        f"| {r['nvidia_gb']:.2f} GB | {r['torch_gb']:.2f} GB | {'ok' if r['default_job_ok'] else 'failed'} |"
    )
print(f"wrote {out}")
EOF
