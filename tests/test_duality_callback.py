"""DualityCheck during short fits, a trained CFM seen as a field model, and the `duality` command end to end."""

from __future__ import annotations

import csv
import json
import logging
import math

import pytest
import torch
import yaml
from conftest import REPO, run_cli
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger

from lightning_fm.callbacks import DualityCheck
from lightning_fm.callbacks.duality import SKIPPED_NOT_FORWARD_ONLY
from lightning_fm.cli.app import DEFAULT_BASE, ROOT_BASE, apply_layer, read_base
from lightning_fm.data import ToyDataModule
from lightning_fm.duality import VelocityAsField
from lightning_fm.fields import CoulombField
from lightning_fm.models import MLP, FieldHead
from lightning_fm.modules import CFMModule, ForwardOnlyIFMModule, IFMModule
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


def test_a_field_that_is_not_forward_only_runs_the_checks_that_apply_and_says_which_it_skipped_once(caplog, tmp_path):
    efm = IFMModule(FieldHead(MLP([2])), field=CoulombField(L=1.0), n_points=64)
    check = DualityCheck(every_n_steps=5, n_points=64, steps=5)
    with caplog.at_level(logging.INFO):
        fit(efm, 12, [check], CSVLogger(str(tmp_path), name="run", version=""), steps_per_epoch=12)
    said = [r.getMessage() for r in caplog.records if "only the checks that apply run" in r.getMessage()]
    assert len(said) == 1, said  # once, not at every check (steps 1, 5, 10 and the validation)
    assert "CoulombField" in said[0] and "skipped: " + ", ".join(SKIPPED_NOT_FORWARD_ONLY) in said[0]
    assert check.skipped == list(SKIPPED_NOT_FORWARD_ONLY) and len(check.history) >= 3
    names = {r.name for r in check.results}
    assert "C9 backward points behind the plates (exact field)" in names
    assert "C9 learned guard f_z<=0 (training points)" in names
    assert not {n.split()[0] for n in names} & {"C1", "C2", "C4", "C5"}, names
    assert not check.failures
    with open(tmp_path / "run" / "metrics.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {float(r["duality/skipped_checks"]) for r in rows if r.get("duality/skipped_checks")} == {4.0}
    # a forward-only model skips nothing and says nothing
    caplog.clear()
    cfm_check = DualityCheck(every_n_steps=5, L=5.0, n_points=64, steps=5)
    with caplog.at_level(logging.INFO):
        fit(MODULES["forward_only_ifm"](), 2, [cfm_check])
    assert not cfm_check.skipped and "only the checks that apply" not in caplog.text


def training_recipes() -> list:
    not_fit = {"toy/duality.yaml"}  # the duality command's config (its own schema)
    groups = ("toy", "digits", "mnist", "cifar10", "celeba64", "transfer")
    paths = sorted(p for g in groups for p in (REPO / "configs" / g).glob("*.yaml"))
    return [p for p in paths if p.relative_to(REPO / "configs").as_posix() not in not_fit]


@pytest.mark.parametrize("config", training_recipes(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_training_recipe_ships_with_duality_check_warning_by_default(config):
    cfg = yaml.safe_load(config.read_text())
    layers: dict = {}
    for name in dict.fromkeys((ROOT_BASE, cfg.get("base", DEFAULT_BASE))):
        apply_layer(layers, read_base(name))
    apply_layer(layers, {"trainer": cfg.get("trainer") or {}})
    found = [c for c in layers["trainer.callbacks"] if c["class_path"] == "lightning_fm.callbacks.DualityCheck"]
    assert len(found) == 1, [c["class_path"] for c in layers["trainer.callbacks"]]
    args = found[0].get("init_args") or {}
    assert args.get("on_failure", "warn") == "warn"
    assert args.get("every_n_steps", 500) >= 1000  # a cadence of <= 5% overhead (benchmarks/duality_overhead.py)
    DualityCheck(**args)  # valid arguments


def test_every_base_lists_duality_check_or_inherits_it():
    from lightning_fm.cli.app import BASE_DIR

    for path in sorted((REPO / BASE_DIR).glob("*.yaml")):
        layers: dict = {}
        for name in dict.fromkeys((ROOT_BASE, path.stem)):
            apply_layer(layers, read_base(name))
        names = [c["class_path"].rsplit(".", 1)[1] for c in layers["trainer.callbacks"]]
        assert names.count("DualityCheck") == 1, (path.name, names)


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
