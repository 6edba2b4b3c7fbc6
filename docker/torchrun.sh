#!/usr/bin/env bash
# Multi-node DDP with torchrun (no SLURM): run this same command on every node; Lightning detects torchrun's
# variables (TorchElasticEnvironment) and takes the ranks from them.
#   node 0..N-1:  NNODES=2 MASTER=node0.example.org CONFIG=configs/cifar10/otcfm.yaml docker/torchrun.sh \
#                     --data.init_args.batch_size=8
#   one node:     docker/torchrun.sh   (NNODES=1, all GPUs of the node, MASTER=localhost)
# Environment: NNODES (default 1), GPUS (per node; default: every GPU nvidia-smi lists), MASTER (host of the c10d
# rendezvous, reachable from all nodes; default localhost), PORT (29500), JOB (rendezvous id, the same on all nodes
# and new for each run; default lightning_fm), CONFIG (default configs/cifar10/otcfm.yaml). Arguments go to
# `lightning_fm fit`. Run it from the repository root with the venv active. data.batch_size is per GPU.
# Inside a SLURM allocation use docker/slurm.sbatch instead: Lightning prefers SLURMEnvironment whenever SLURM's
# variables are set, which does not match torchrun's processes.
set -euo pipefail

NNODES="${NNODES:-1}"
GPUS="${GPUS:-$(nvidia-smi --list-gpus | wc -l)}"
MASTER="${MASTER:-localhost}"
PORT="${PORT:-29500}"
JOB="${JOB:-lightning_fm}"
CONFIG="${CONFIG:-configs/cifar10/otcfm.yaml}"

export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}"

exec torchrun --nnodes="$NNODES" --nproc_per_node="$GPUS" \
    --rdzv_backend=c10d --rdzv_endpoint="$MASTER:$PORT" --rdzv_id="$JOB" \
    -m lightning_fm fit -c "$CONFIG" \
    --trainer.num_nodes="$NNODES" --trainer.devices="$GPUS" --trainer.strategy=ddp --trainer.accelerator=gpu \
    "$@"
