"""The config of the `duality` command: the fit configs' format (class_path/init_args specs, typed settings) read by
jsonargparse, --print_config and its round trip, one-line errors naming the key, the schema's defaults against
configs/toy/duality.yaml, and the components built from the parsed specs. The end-to-end run of the command is in
test_duality_callback.py."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import REPO, run_cli
from jsonargparse import ArgumentError
from lightning.pytorch import seed_everything

from lightning_fm.cli import main
from lightning_fm.duality import CheckResult
from lightning_fm.experiments.duality.config import CheckSettings, EFMSettings, TrainSettings
from lightning_fm.experiments.duality.report import noise_floor_summary, noise_floor_verdict
from lightning_fm.experiments.duality.run import (
    DualityExperiment,
    build_cfm,
    build_datamodule,
    build_models,
    noise_floor_rows,
    parse_args,
)
from lightning_fm.models import MLP, FieldHead
from lightning_fm.paths import LinearPath, SineBridgePath

CONFIG = str(REPO / "configs" / "toy" / "duality.yaml")
COMPONENTS = ("path", "coupling", "backbone", "data")


def print_config(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["duality", *args, "--print_config"])
    assert exit_.value.code in (0, None)
    return capsys.readouterr().out


def config_error(capsys, *args: str) -> str:
    """The one-line error of the command line ``duality ARGS`` (exit status 2)."""
    with pytest.raises(SystemExit) as exit_:
        main(["duality", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


def test_print_config_gives_class_path_specs_and_reads_back(tmp_path, capsys):
    printed = print_config(capsys, "-c", CONFIG)
    config = yaml.safe_load(printed)
    for key in COMPONENTS:
        assert set(config[key]) == {"class_path", "init_args"}, key
    assert config["path"] == {
        "class_path": "lightning_fm.paths.SineBridgePath",
        "init_args": {"scale": 0.5, "ramp": 0.5},
    }
    assert config["backbone"]["class_path"] == "lightning_fm.models.MLP"
    assert config["data"]["class_path"] == "lightning_fm.data.ToyDataModule"
    assert "steps_per_epoch" not in config["data"]["init_args"]  # derived from train:
    assert config["train"]["max_steps"] == 3000 and config["checks"]["n_points"] == 512
    assert config["train"]["lr"] == 0.02 and config["train"]["lr_schedule"] == "cosine"
    assert config["train"]["ema_decay"] == 0.99 and config["checks"]["noise_floor"] is True
    assert config["efm"]["n_charges"] == 256 and config["L"] == 5.0
    saved = tmp_path / "printed.yaml"
    saved.write_text(printed)
    assert print_config(capsys, "-c", str(saved)) == printed  # the printed config is a config
    assert parse_args(["-c", str(saved)])[0] == parse_args(["-c", CONFIG])[0]


def test_command_line_conveniences_override_the_config(tmp_path, capsys):
    kwargs, ns = parse_args(["-c", CONFIG, "--max_steps", "7", "--seed", "3", "--out", str(tmp_path)])
    assert kwargs["train"]["max_steps"] == 7 and kwargs["seed"] == 3 and ns.out == str(tmp_path)
    assert parse_args(["-c", CONFIG, "--max_steps=9"])[0]["train"]["max_steps"] == 9
    assert parse_args(["-c", CONFIG, "--train.lr", "0.002", "--path.init_args.scale", "0.3"])[0]["train"]["lr"] == 0.002
    config = yaml.safe_load(print_config(capsys, "-c", CONFIG, "--max_steps", "200", "--L", "2"))
    assert config["train"]["max_steps"] == 200 and config["L"] == 2.0


def test_help_lists_the_keys(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["duality", "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code in (0, None) and out.startswith("usage: python -m lightning_fm duality")
    for key in (
        "--config",
        "--print_config",
        "--out",
        "--L",
        "--path",
        "--backbone",
        "--data",
        "--train.max_steps",
        "--checks.c13_w2_tolerance",
        "--efm.max_arc_steps",
    ):
        assert key in out, key


@pytest.mark.parametrize(
    "args, key",
    [
        (["--train.bogus", "1"], "train.bogus"),
        (["--bogus=1"], "bogus"),
    ],
)
def test_an_unknown_key_on_the_command_line_is_an_error_naming_it(capsys, args, key):
    assert key in config_error(capsys, "-c", CONFIG, *args)


@pytest.mark.parametrize(
    "text, key",
    [
        ("train:\n  max_step: 3\n", "max_step"),
        ("checks: {n_point: 3}\n", "n_point"),
        ("efm: {charges: 3}\n", "charges"),
        ("bogus: 1\n", "bogus"),
    ],
)
def test_an_unknown_key_in_a_config_file_is_an_error_naming_it(tmp_path, capsys, text, key):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    assert key in config_error(capsys, "-c", CONFIG, "-c", str(bad))


@pytest.mark.parametrize(
    "args, key",
    [
        (["--L=-1"], "L"),
        (["--L", "0"], "L"),
        (["--max_steps", "0"], "max_steps"),
        (["--checks.n_points", "many"], "checks.n_points"),
        (["--path", "lightning_fm.paths.NoSuchPath"], "path"),
        (["--data.init_args.steps_per_epoch", "3"], "steps_per_epoch"),
    ],
)
def test_a_bad_value_is_a_one_line_error_naming_the_key(capsys, args, key):
    assert key in config_error(capsys, "-c", CONFIG, *args)


def test_steps_per_epoch_is_derived_and_may_not_be_set_in_a_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  class_path: lightning_fm.data.ToyDataModule\n  init_args: {steps_per_epoch: 3}\n")
    with pytest.raises(ArgumentError, match="steps_per_epoch"):
        parse_args(["-c", CONFIG, "-c", str(bad)])
    for max_steps, expected in ((200, 200), (3000, 1000)):
        cfg = DualityExperiment(**parse_args(["-c", CONFIG, "--max_steps", str(max_steps)])[0]).config
        assert build_datamodule(cfg).hparams.steps_per_epoch == expected


def test_the_schema_defaults_are_the_values_of_the_shipped_config():
    """configs/toy/duality.yaml states every value; all equal the defaults of DualityExperiment's signature except
    num_threads (1 in the file, torch's default without it)."""
    defaults, _ = parse_args([])
    shipped, _ = parse_args(["-c", CONFIG])
    assert {k for k in shipped if shipped[k] != defaults[k]} == {"num_threads"}
    assert shipped["num_threads"] == 1 and defaults["num_threads"] is None
    assert defaults["train"] == TrainSettings().__dict__ and defaults["checks"] == CheckSettings().__dict__
    assert defaults["efm"] == EFMSettings().__dict__
    # the file states every key of the schema, and no other
    assert set(yaml.safe_load((REPO / "configs" / "toy" / "duality.yaml").read_text())) == set(defaults)


def test_the_experiment_in_python_takes_objects_or_specs():
    experiment = DualityExperiment(path=LinearPath(0.1), train={"max_steps": 5}, checks=CheckSettings(n_points=8))
    cfg = experiment.config
    assert cfg["path"] == {"class_path": "lightning_fm.paths.LinearPath", "init_args": {"sigma": 0.1}}
    assert cfg["train"] == {**TrainSettings().__dict__, "max_steps": 5} and cfg["checks"]["n_points"] == 8
    with pytest.raises(ValueError, match="train.bogus"):
        DualityExperiment(train={"bogus": 1})
    with pytest.raises(ValueError, match="L must be > 0"):
        DualityExperiment(L=0.0)
    with pytest.raises(ValueError, match="max_steps"):
        DualityExperiment(train={"max_steps": 0})
    with pytest.raises(TypeError, match="backbone"):
        DualityExperiment(backbone={"width": 64})
    from lightning_fm.experiments.duality import run

    assert run.DEFAULTS == DualityExperiment().config


def test_the_components_are_built_from_the_specs_as_before():
    """The models of the shipped config: the same networks (weights included) as MLP(data_shape=[2], width=64,
    depth=3, activation="selu") after seeding, the sine-bridge path and exact OT for both models."""
    cfg = DualityExperiment(**parse_args(["-c", CONFIG])[0]).config
    cfm, ifm = build_models(cfg)
    seed_everything(cfg["seed"], verbose=False)
    reference = MLP(data_shape=[2], width=64, depth=3, activation="selu")
    assert isinstance(cfm.backbone, MLP) and cfm.backbone.data_shape == (2,)
    assert isinstance(ifm.backbone, FieldHead) and isinstance(ifm.backbone.backbone, MLP)
    for a, b in zip(cfm.backbone.state_dict().values(), reference.state_dict().values()):
        assert torch.equal(a, b)
    for module in (cfm, ifm):
        assert isinstance(module.path, SineBridgePath) and module.path.init_args == {"scale": 0.5, "ramp": 0.5}
        assert module.coupling.init_args["method"] == "exact"
    assert ifm.L == 5.0


@pytest.mark.cli
@pytest.mark.slow
def test_the_command_prints_its_config_and_help(tmp_path):
    proc = run_cli(["duality", "-c", CONFIG, "--print_config"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "class_path: lightning_fm.paths.SineBridgePath" in proc.stdout
    proc = run_cli(["duality", "-c", CONFIG, "--L=-1"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: L")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_both_models_get_the_toy_recipe_adam_with_a_cosine_decay():
    cfg = DualityExperiment(**parse_args(["-c", CONFIG])[0]).config
    for module in build_models(cfg):
        assert module.hparams["lr_scheduler"]["class_path"] == "lightning_fm.utils.schedules.CosineDecay"
        assert module.hparams["optimizer"]["init_args"]["lr"] == 0.02
    constant = DualityExperiment(**parse_args(["-c", CONFIG, "--train.lr_schedule", "constant"])[0]).config
    assert all(module.hparams["lr_scheduler"] is None for module in build_models(constant))


def test_noise_floor_rows_compare_two_cfm_networks_of_different_seeds():
    cfg = DualityExperiment(**parse_args(["-c", CONFIG, "--sample_steps", "5"])[0]).config
    a, b = build_cfm(cfg), build_cfm(cfg, seed=1)
    assert not torch.equal(next(a.parameters()), next(b.parameters()))
    g = torch.Generator().manual_seed(0)
    t, x, x0 = torch.rand(64, generator=g), torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    rows = noise_floor_rows(a, b, t, x, x0, cfg, 0.3, seed=1)
    assert [r.name for r in rows] == [
        "noise floor: CFM vs CFM (seed 0 vs 1) (rel L2)",
        "noise floor: CFM vs CFM (seed 0 vs 1) (W2)",
    ]
    assert all(r.kind == "diagnostic" and r.value > 0 for r in rows)
    same = noise_floor_rows(a, a, t, x, x0, cfg, 0.3, seed=0)
    assert [r.value for r in same] == [0.0, 0.0]


def test_the_noise_floor_verdict_compares_c13_with_it():
    def rows(pair_rel, pair_w2, floor_rel, floor_w2):
        label = "noise floor: CFM vs CFM (seed 0 vs 1)"
        return [
            CheckResult("C13 learned consistency (rel L2)", pair_rel, 0.1, True, "diagnostic", {}),
            CheckResult("C13 learned consistency (W2)", pair_w2, 0.3, True, "diagnostic", {}),
            CheckResult(f"{label} (rel L2)", floor_rel, 0.1, True, "diagnostic", {"seeds": [0, 1]}),
            CheckResult(f"{label} (W2)", floor_w2, 0.3, True, "diagnostic", {"seeds": [0, 1]}),
        ]

    summary = noise_floor_summary(rows(0.1, 0.05, 0.08, 0.04))
    assert summary["seeds"] == [0, 1] and set(summary["metrics"]) == {"rel L2", "W2"}
    assert summary["metrics"]["rel L2"]["ratio"] == pytest.approx(1.25)
    assert all(m["at_noise_floor"] for m in summary["metrics"].values())
    assert "about as closely as two trainings" in noise_floor_verdict(summary)
    above = noise_floor_summary(rows(0.5, 0.05, 0.08, 0.04))
    assert not above["metrics"]["rel L2"]["at_noise_floor"] and above["metrics"]["W2"]["at_noise_floor"]
    assert "Above the noise floor in rel L2" in noise_floor_verdict(above)
    assert noise_floor_summary(rows(0.1, 0.05, 0.08, 0.04)[:2]) is None and noise_floor_verdict(None) is None


TINY = [
    "--max_steps", "3", "--sample_steps", "4", "--checks.every_n_steps", "0", "--checks.n_points", "16",
    "--checks.statistical_n", "100", "--efm.n_charges", "8", "--efm.n_points", "16", "--efm.n_lines", "4",
    "--efm.max_arc_steps", "4", "--train.progress_bar", "false", "--data.init_args.n_val", "64",
    "--data.init_args.n_test", "128",
]  # fmt: skip


@pytest.mark.slow
def test_the_command_reports_c13_against_its_noise_floor(tmp_path):
    import json

    out = tmp_path / "run"
    main(["duality", "-c", CONFIG, "--out", str(out), *TINY])
    report = json.loads((out / "report.json").read_text())
    assert set(report["models"]) == {"cfm", "ifm", "cfm_floor"}
    assert report["models"]["cfm_floor"]["seed"] == 1 and report["models"]["cfm"]["seed"] == 0
    floor = report["noise_floor"]
    assert floor["seeds"] == [0, 1] and set(floor["metrics"]) == {"rel L2", "W2"}
    names = [c["name"] for c in report["checks"]]
    assert "noise floor: CFM vs CFM (seed 0 vs 1) (W2)" in names
    assert "val/w2 of the noise-floor CFM (seed 1) model (EMA)" in names
    assert isinstance(report["wall_seconds"], float) and (out / "cfm_floor.ckpt").exists()
    md = (out / "report.md").read_text()
    assert "C13 against its noise floor" in md and "| noise-floor CFM (seed 1) | 3 |" in md
    main(["duality", "-c", CONFIG, "--out", str(tmp_path / "off"), *TINY, "--checks.noise_floor", "false"])
    report = json.loads((tmp_path / "off" / "report.json").read_text())
    assert set(report["models"]) == {"cfm", "ifm"} and report["noise_floor"] is None
