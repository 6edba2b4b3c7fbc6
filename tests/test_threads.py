"""The CLI's thread policy (:func:`lightning_fm.runtime.decide_threads`): the pure decision, and that the command line's
entry applies it (and nothing else does: tests/test_layers.py)."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

from lightning_fm.runtime import THREADS, ThreadDecision, decide_threads, is_rank_zero


@pytest.mark.parametrize(
    ("affinity", "env", "threads"),
    [
        (2, {}, 2),  # every CPU of this process, one process
        (16, {"LOCAL_WORLD_SIZE": "4"}, 4),  # torchrun: the machine's processes share the CPUs
        (16, {"SLURM_NTASKS_PER_NODE": "4"}, 4),
        (16, {"SLURM_NTASKS_PER_NODE": "8(x2)"}, 2),  # SLURM's per-node counts of a heterogeneous job
        (2, {"LOCAL_WORLD_SIZE": "4"}, 1),  # at least 1
        (0, {}, 1),
        (16, {"LOCAL_WORLD_SIZE": "2", "SLURM_NTASKS_PER_NODE": "8"}, 8),  # torchrun's count first
        (16, {"SLURM_CPUS_PER_TASK": "4", "SLURM_NTASKS_PER_NODE": "4"}, 4),  # one task's share: not divided again
        (2, {"SLURM_CPUS_PER_TASK": "8"}, 2),  # never more than the affinity
        (2, {THREADS: "6", "OMP_NUM_THREADS": "1"}, 6),  # the framework's own variable wins
        (2, {"OMP_NUM_THREADS": "3"}, None),  # torch reads it itself: left alone
        (2, {"OMP_NUM_THREADS": " "}, 2),  # empty: not set
    ],
)
def test_the_thread_decision(affinity, env, threads):
    decision = decide_threads(affinity, env)
    assert isinstance(decision, ThreadDecision) and decision.threads == threads and decision.reason


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_thread_count_is_refused(value):
    with pytest.raises(ValueError, match=f"{THREADS} must be an integer >= 1"):
        decide_threads(2, {THREADS: value})


def test_only_rank_zero_prints():
    assert is_rank_zero({}) and is_rank_zero({"RANK": "0", "LOCAL_RANK": "0"})
    assert not is_rank_zero({"LOCAL_RANK": "1"}) and not is_rank_zero({"SLURM_PROCID": "3"})


ENTRY = """
import sys, torch
import lightning_fm.cli
lightning_fm.cli.main = lambda: print("threads", torch.get_num_threads())  # the entry, without a command
from lightning_fm.__main__ import run
run()
"""


def entry(env_update: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", THREADS, "LOCAL_WORLD_SIZE")}
    env.update(PYTHONPATH=str(REPO), **env_update)
    return subprocess.run([sys.executable, "-c", ENTRY], env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.cli
@pytest.mark.slow  # a CLI subprocess
def test_the_command_line_entry_applies_the_policy_and_says_so_once():
    result = entry({THREADS: "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["threads", "3"]
    assert [line for line in result.stderr.splitlines() if "torch threads" in line] == [
        f"lightning_fm: 3 torch threads ({THREADS}=3)"
    ]
    result = entry({"OMP_NUM_THREADS": "1", "LOCAL_RANK": "1"})  # the user's OMP_NUM_THREADS: torch's, no line
    assert result.returncode == 0 and result.stdout.split() == ["threads", "1"] and "torch threads" not in result.stderr
    result = entry({THREADS: "0"})
    assert result.returncode != 0 and f"error: {THREADS} must be an integer >= 1" in result.stderr
