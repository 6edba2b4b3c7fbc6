"""DualityCheck during short fits, a trained CFM seen as a field model, and the `duality` command end to end."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from conftest import REPO, run_cli
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger

from lightning_fm.callbacks import DualityCheck
from lightning_fm.data import ToyDataModule
from lightning_fm.duality import VelocityAsField
from lightning_fm.models import MLP, FieldHead
from lightning_fm.modules import CFMModule, ForwardOnlyIFMModule
from lightning_fm.paths import LinearPath


class WrongVelocityPath(LinearPath):
    """A deliberately broken path: its conditional velocity is twice the one that generates its density, so the
    field p_t (1, u_t/L) is not divergence-free (C1 fails)."""

    def velocity(self, x, t, x0, x1):
        return 2 * super().velocity(x, t, x0, x1)


def fit(module, max_steps: int, callbacks=(), logger=False, steps_per_epoch: int = 10) -> Trainer:
    torch.manual_seed(0)
    trainer = Trainer(
        max_steps=max_steps,
        logger=logger,
        callbacks=list(callbacks),
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=ToyDataModule(steps_per_epoch=steps_per_epoch, n_val=200, batch_size=128))
    return trainer


MODULES = {
    "cfm": lambda: CFMModule(path=LinearPath(0.1)),
    "forward_only_ifm": lambda: ForwardOnlyIFMModule(FieldHead(MLP([2])), path=LinearPath(0.1), L=5.0),
}


@pytest.mark.parametrize("name", list(MODULES))
def test_callback_logs_duality_metrics_and_overhead(name, tmp_path):
    check = DualityCheck(every_n_steps=10, L=5.0, n_points=128, steps=10)
    fit(MODULES[name](), 30, [check], CSVLogger(str(tmp_path), name="run", version=""), steps_per_epoch=15)
    with open(tmp_path / "run" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    columns = set(rows[0])
    for key in (
        "duality/C1_divergence_fp64",
        "duality/C2_unit_flux_quadrature",
        "duality/C9_forward_only_guard",
        "duality/exact_failures",
        "duality/overhead",
    ):
        assert key in columns, sorted(c for c in columns if c.startswith("duality"))
    learned = {
        "cfm": "duality/C4_round_trip_learned_v_fp32",
        "forward_only_ifm": "duality/C9_learned_guard_f_z_0_training_points",
    }[name]
    assert learned in columns
    overhead = [float(r["duality/overhead"]) for r in rows if r.get("duality/overhead")]
    assert overhead and all(0 < v < 1 for v in overhead)
    assert [(step, stage) for step, stage, _ in check.history] == [
        (1, "train"),
        (10, "train"),
        (15, "validation"),
        (20, "train"),
        (30, "train"),
        (30, "validation"),
    ]
    assert not check.failures
    assert all(r.passed for r in check.results if r.kind == "exact"), [str(r) for r in check.results]
    assert any(r.name.startswith("C5 learned") and r.kind == "exact" for r in check.results)
    assert 0 < check.overhead < 1


def test_stop_on_a_failed_exact_identity_names_check_value_and_tolerance():
    check = DualityCheck(every_n_steps=5, on_failure="stop", L=5.0, n_points=64, steps=5)
    with pytest.warns(
        UserWarning,
        match=r"exact identity 'C1 divergence \(fp64\)' failed at step 1 .*"
        r"value .* > tolerance 1\.000e-10; stopping training",
    ):
        trainer = fit(CFMModule(path=WrongVelocityPath(0.1)), 20, [check])
    assert trainer.global_step == 1
    assert {r.name for _, r in check.failures} >= {"C1 divergence (fp64)", "C1 divergence (fp32)"}


def test_warn_on_a_failed_exact_identity_keeps_training():
    check = DualityCheck(every_n_steps=5, on_failure="warn", L=5.0, n_points=64, steps=5)
    with pytest.warns(UserWarning, match="training goes on"):
        trainer = fit(CFMModule(path=WrongVelocityPath(0.1)), 10, [check])
    assert trainer.global_step == 10 and check.failures
    with pytest.raises(ValueError, match="on_failure"):
        DualityCheck(on_failure="explode")


@pytest.mark.parametrize("L", [1.0, 5.0])
def test_trained_cfm_as_field_model_reproduces_its_euler_samples(L):
    cfm = CFMModule(path=LinearPath(0.1))
    fit(cfm, 30)
    cfm.eval()
    x = torch.randn(500, 2, generator=torch.Generator().manual_seed(1)) * 3
    a = cfm.sample(x, steps=100, method="euler").x
    dual = VelocityAsField(cfm, L).sample(x, steps=100, method="euler")
    assert dual.nfe == 100 and dual.info["backward"] == 0
    assert float((a - dual.x).abs().max() / (1 + a.abs().max())) <= 1e-5


@pytest.mark.cli
@pytest.mark.slow
def test_duality_command_writes_a_report_with_every_exact_check_passing(tmp_path):
    out = tmp_path / "report"
    proc = run_cli(
        ["duality", "-c", str(REPO / "configs" / "toy" / "duality.yaml"), "--out", str(out), "--max_steps", "25"],
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert str(out / "report.md") in proc.stdout
    for name in ("report.md", "report.json", "duality.png", "cfm.ckpt", "ifm.ckpt"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    exact = [c for c in report["checks"] if c["kind"] == "exact"]
    assert len(exact) >= 14 and report["exact_all_passed"]
    assert all(c["passed"] for c in exact), [c["name"] for c in exact if not c["passed"]]
    names = {c["name"] for c in report["checks"]}
    for prefix in ("C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8", "C9", "C12", "C13", "C9 EFM"):
        assert any(n.startswith(prefix) for n in names), prefix
    efm = {c["name"]: c for c in report["checks"]}["C9 EFM: E_z <= 0 behind the plates"]
    assert efm["value"] > 0 and efm["passed"]
    assert "not forward-only" in report["efm_psi"]
    assert report["models"]["cfm"]["steps"] == 25 and report["models"]["ifm"]["steps"] == 25
    md = (out / "report.md").read_text()
    assert "| C1 divergence (fp64) |" in md and "forward-only" in md and "![duality](duality.png)" in md
    assert "have not both learned the target" in md and "same dynamics:" not in md  # 25 steps learn nothing
    assert math.isfinite(report["models"]["cfm"]["val"]["val/w2"])
