"""The layers of the package: the pure core never imports Lightning, and importing any module changes no
process-wide setting (environment, warnings filters, threads, global generators); those belong to
:mod:`lightning_fm.runtime`, which the command line applies."""

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import lightning_fm

REPO = Path(__file__).resolve().parents[1]
CORE = (
    "paths",
    "couplings",
    "sampling",
    "time_samplers",
    "fields",
    "duality",
    "likelihood",
    "metrics",
    "models",
    "objectives",
    "utils",
)


def all_modules() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.walk_packages(lightning_fm.__path__, "lightning_fm.")
        if m.name != "lightning_fm.__main__"
    )


def core_modules() -> list[str]:
    return [m for m in all_modules() if m.split(".")[1] in CORE]


def run(code: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.slow
def test_the_pure_core_never_imports_lightning():
    modules = core_modules()
    assert len(modules) > 30  # the walk found the core
    code = f"""
import importlib, json, sys
leaks = {{}}
for name in {modules!r}:
    importlib.import_module(name)
    if "lightning" in sys.modules or "pytorch_lightning" in sys.modules:
        leaks[name] = True
        break
print(json.dumps(leaks))
"""
    assert run(code) == {}, "a core module imports Lightning (directly or through its imports)"


@pytest.mark.slow
def test_importing_any_module_changes_no_process_wide_setting():
    code = f"""
import importlib, json, os, warnings
import lightning.pytorch, ot, torch  # their own import-time settings are theirs
def snapshot():
    return {{"env": dict(os.environ), "filters": [repr(f) for f in warnings.filters],
             "threads": torch.get_num_threads(), "rng": torch.random.get_rng_state().sum().item()}}
before = snapshot()
for name in {all_modules()!r}:
    importlib.import_module(name)
after = snapshot()
print(json.dumps({{k: before[k] == after[k] for k in before}}))
"""
    assert run(code) == {"env": True, "filters": True, "threads": True, "rng": True}
