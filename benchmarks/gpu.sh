#!/usr/bin/env bash
# The GPU measurements, prepared to run in one go (under 8 minutes on one modern GPU) when a GPU machine is lent:
#   bash benchmarks/gpu.sh [OUT_DIR]          # default OUT_DIR: benchmarks/results/gpu
# 1. each CIFAR-10 recipe's training step (its U-Net and module as shipped, synthetic 32x32 batches of the recipe's
#    size) in float32 and bf16 autocast, then channels_last, then torch.compile of the backbone (OT-CFM);
# 2. a short CLI run of the OT-CFM CIFAR-10 recipe on synthetic images (bf16-mixed, EMA, 300 steps), its
#    train/samples_per_s from metrics.csv: the framework's own loop, hooks and logging included.
# Writes JSON and logs to OUT_DIR; prints the tables.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/gpu}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/nvidia-smi.csv"

python benchmarks/gpu_throughput.py --steps 20 --warmup 5 --out "$out/steps.json" | tee "$out/steps.log"
python benchmarks/gpu_throughput.py --recipes otcfm ifm --steps 20 --warmup 5 --channels-last \
    --out "$out/steps_channels_last.json" | tee "$out/steps_channels_last.log"
timeout 240 python benchmarks/gpu_throughput.py --recipes otcfm --precisions bf16 --steps 20 --warmup 10 --compile \
    --out "$out/steps_compile.json" | tee "$out/steps_compile.log" || echo "torch.compile run failed or timed out"

# the CLI: synthetic CIFAR-shaped data, no FID (no Inception weights on the machine), no checkpoints
cat > "$out/short_run.yaml" <<'YAML'
trainer:
  max_steps: 300
  log_every_n_steps: 50
  limit_val_batches: 0
  enable_checkpointing: false
  enable_progress_bar: false
  precision: bf16-mixed
  callbacks:
    - class_path: lightning.pytorch.callbacks.EMAWeightAveraging
      init_args: {decay: 0.9999}
    - class_path: lightning.pytorch.callbacks.LearningRateMonitor
      init_args: {logging_interval: step}
data:
  init_args:
    target:
      class_path: lightning_fm.data.SyntheticImages
      init_args: {shape: [3, 32, 32], n_train: 50000, n_eval: 100, num_classes: 10}
YAML
timeout 300 python -m lightning_fm fit -c configs/cifar10/otcfm.yaml -c configs/trainer/gpu.yaml -c "$out/short_run.yaml" \
    --trainer.logger.init_args.save_dir="$out/runs" 2>&1 | tail -5 | tee "$out/short_run.log"
python - "$out" <<'PY'
import csv, glob, json, sys
rows = [r for f in glob.glob(f"{sys.argv[1]}/runs/*/version_*/metrics.csv") for r in csv.DictReader(open(f))]
rates = [float(r["train/samples_per_s"]) for r in rows if r.get("train/samples_per_s")]
print(json.dumps({"cli_otcfm_bf16_samples_per_s": rates}, indent=1))
json.dump({"cli_otcfm_bf16_samples_per_s": rates}, open(f"{sys.argv[1]}/short_run.json", "w"))
PY
