"""Every process-wide setting of the framework, in one place, applied by the command line only (``python -m
lightning_fm`` and the ``lightning-fm`` script call :func:`apply` before anything else, and :func:`at_exit` at the
end). Importing ``lightning_fm`` or any of its modules changes no environment variable, warnings filter, thread
setting or global generator; a Python program that wants the CLI's settings calls :func:`apply` itself.

Each setting, with its reason and where it was measured:

* ``POT_BACKEND_DISABLE_PYTORCH=1`` (unless set): POT's torch backend, once imported, creates tensors on every
  visible GPU, so under DDP each process would open a CUDA context on GPU 0. The framework calls POT with numpy
  arrays only. Set before POT is imported.
* ``PYTORCH_NVML_BASED_CUDA_CHECK`` dropped where no CUDA device exists: Lightning sets it when imported (so asking
  for CUDA never initialises it before a fork); each ``torch.cuda.is_available()`` then loads NVML anew, and
  ``torch.optim.Adam`` asks at every step: about 0.1 ms a step, several percent of a toy step
  (``benchmarks/train_throughput.py``). Where no device exists there is nothing a fork could inherit.
* Warnings filters (:data:`SILENCED_WARNINGS`): warnings that the framework's own use of Lightning and torch
  triggers but that say nothing to its user:
  ``isinstance(treespec, LeafSpec)`` (Lightning's ``_pytree`` helper under torch >= 2.10, every batch);
  ``torch.distributed._all_gather_base`` / ``all_gather_into_tensor`` (``LightningModule.all_gather`` under DDP);
  "Checkpoint directory ... exists and is not empty" (the CLI resumes a run in its own directory on purpose);
  "The dirpath has changed from" (only the best-k bookkeeping of a monitored ``ModelCheckpoint`` is not restored,
  which the recipes do not use); EMA's "loading a checkpoint outside the 'fit' stage" (outside ``fit`` the
  checkpoint's weights are the EMA weights, :mod:`lightning_fm.callbacks.ema`); "LightningCLI's args parameter is
  intended to run from within Python" (the CLI passes the command line it decided, without a checkpoint file:
  :func:`lightning_fm.cli.app.split_checkpoint`); "Your `IterableDataset` has `__len__` defined" (the framework's
  iterable datasets know their exact length: they shard by worker themselves, :mod:`lightning_fm.data.base`); "The
  number of training batches ... is smaller than the logging interval" (an epoch of the digits is 12 batches:
  Lightning counts ``log_every_n_steps`` over the whole run, not within an epoch, so a short epoch loses no logs).
* Lightning's advertising lines ("Tip: For seamless ...") dropped from its loggers.
* torch's intra-op threads (:func:`decide_threads`, :func:`set_threads`): the CPUs this process may use
  (``os.sched_getaffinity(0)``, at most ``SLURM_CPUS_PER_TASK`` where SLURM sets it: already one task's share, not
  divided again) divided by the processes of this machine that share them (``LOCAL_WORLD_SIZE`` of torchrun, else
  ``SLURM_NTASKS_PER_NODE``, else 1), at least 1. torch's own default is every core of the machine in every process:
  on a shared 2-core machine under load one digits U-Net step took 1.28 s with it against 0.084 s with one thread
  (``benchmarks/thread_policy.py``). ``LIGHTNING_FM_THREADS=n`` sets n threads; a set ``OMP_NUM_THREADS`` leaves
  torch alone (torch reads it itself). Processes that Lightning starts itself (``trainer.devices=N`` on CPU, no
  launcher) are not known at start: give them ``LIGHTNING_FM_THREADS``. The process of rank 0 prints the decision,
  one line on stderr, where the framework sets the count (not under ``OMP_NUM_THREADS``).
* ``gc.freeze()`` when the command is over (:func:`at_exit`): the interpreter's exit skips a garbage collection over
  every object of torch, Lightning and their imports, the slowest part of the exit, 1.2-1.5 s
  (``benchmarks/startup.py``). Reference counting still frees objects and atexit handlers still run.
"""

from __future__ import annotations

import gc
import logging
import os
import re
import sys
import warnings
from collections.abc import Mapping
from typing import NamedTuple

#: messages (regular expressions matched at the start) of the warnings the CLI does not show (module docstring)
SILENCED_WARNINGS = (
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
    r"`torch\.distributed\._all_gather_base` is a private function",
    r"`torch\.distributed\.all_gather_into_tensor` is deprecated",
    r"Checkpoint directory .* exists and is not empty",
    r"The dirpath has changed from",
    r"You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage",
    r"LightningCLI's args parameter is intended to run from within Python",
    r"Your `IterableDataset` has `__len__` defined",
    r"The number of training batches \(\d+\) is smaller than the logging interval",
)
#: loggers through which Lightning prints its tips
TIP_LOGGERS = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
    "lightning_utilities.core.rank_zero",
)
POT_BACKEND = "POT_BACKEND_DISABLE_PYTORCH"
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"
THREADS = "LIGHTNING_FM_THREADS"
#: where the processes of one machine are counted, first found first
LOCAL_PROCESSES = ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE")
#: a process whose rank one of these names, other than 0, prints nothing
RANKS = ("RANK", "SLURM_PROCID", "LOCAL_RANK")
_announced = False


class ThreadDecision(NamedTuple):
    """torch's intra-op threads (None: leave torch's own choice) and why, in words."""

    threads: int | None
    reason: str


def _leading_int(value: str) -> int | None:
    """The integer a variable starts with (``SLURM_NTASKS_PER_NODE`` may read ``2(x3)``)."""
    match = re.match(r"\s*(\d+)", value)
    return int(match.group(1)) if match else None


def decide_threads(affinity: int, env: Mapping[str, str]) -> ThreadDecision:
    """The thread policy of the module docstring: ``affinity`` CPUs this process may use, ``env`` its environment."""
    own = env.get(THREADS, "").strip()
    if own:
        if not own.isdigit() or int(own) < 1:
            raise ValueError(f"{THREADS} must be an integer >= 1 (torch's threads per process), got {own!r}")
        return ThreadDecision(int(own), f"{THREADS}={own}")
    if env.get("OMP_NUM_THREADS", "").strip():
        return ThreadDecision(None, f"OMP_NUM_THREADS={env['OMP_NUM_THREADS'].strip()} (torch's own reading)")
    cpus, where = max(1, affinity), "CPUs this process may use"
    slurm = _leading_int(env.get("SLURM_CPUS_PER_TASK", ""))
    if slurm:  # one task's share already
        return ThreadDecision(max(1, min(cpus, slurm)), f"SLURM_CPUS_PER_TASK={slurm}, {cpus} {where}")
    for name in LOCAL_PROCESSES:
        local = _leading_int(env.get(name, ""))
        if local:
            return ThreadDecision(max(1, cpus // local), f"{cpus} {where} / {name}={local}")
    return ThreadDecision(cpus, f"{cpus} {where}, 1 process")


def available_cpus() -> int:
    """The CPUs this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS, Windows
        return os.cpu_count() or 1


def is_rank_zero(env: Mapping[str, str]) -> bool:
    return all(env.get(name, "0").strip() in ("", "0") for name in RANKS)


def set_threads(env: Mapping[str, str] | None = None, affinity: int | None = None) -> ThreadDecision:
    """Apply :func:`decide_threads` to torch; print it once (rank 0, stderr) where the framework sets the count."""
    global _announced
    import torch

    env = os.environ if env is None else env
    try:
        decision = decide_threads(available_cpus() if affinity is None else affinity, env)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    if decision.threads is not None:
        torch.set_num_threads(decision.threads)
        if not _announced and is_rank_zero(env):
            print(f"lightning_fm: {decision.threads} torch threads ({decision.reason})", file=sys.stderr)
        _announced = True
    return decision


class DropTips(logging.Filter):
    """Drop Lightning's advertising lines (``Tip: For seamless ...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip: For seamless" not in str(record.msg)


def quiet() -> None:
    """The warnings filters and the tip filter of the module docstring; idempotent."""
    for message in SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=message)
    for name in TIP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, DropTips) for f in logger.filters):
            logger.addFilter(DropTips())


def cheap_cuda_probe() -> None:
    """Drop ``PYTORCH_NVML_BASED_CUDA_CHECK`` where no CUDA device exists (module docstring). Imports Lightning
    first, which sets it."""
    import lightning.pytorch  # noqa: F401
    import torch

    if os.environ.get(NVML_CHECK) == "1" and torch.cuda.device_count() == 0:
        del os.environ[NVML_CHECK]


def apply() -> None:
    """Apply every setting of the module docstring (but :func:`at_exit`); idempotent."""
    os.environ.setdefault(POT_BACKEND, "1")
    cheap_cuda_probe()  # imports Lightning, whose import configures its loggers: the filters come after it
    quiet()
    set_threads()


def at_exit() -> None:
    """The command is over: freeze the heap so that the interpreter's exit skips a full collection; not where
    triton's compiled module is loaded (torch >= 2.15 imports it on CPU too): its nanobind objects live in reference
    cycles that only that collection frees, and nanobind prints a leak report at exit for each one left."""
    if not any(name.startswith("triton._C") for name in sys.modules):
        gc.freeze()
