"""The shipped configs compose (docs/guides/configs.md): every recipe names its base in ``configs/base/`` and restates
neither the trainer block nor the callback list; each recipe's resolved config (``fit -c <recipe> --print_config``,
also with the overlays of configs/trainer, configs/logger, configs/model stacked on it) equals its snapshot in
tests/data/resolved_configs/, taken with the code before the bases existed; every file under configs/ parses.

The snapshots hold the printed config less its first line (``# lightning.pytorch==<version>``). To refresh one after
an intended change: ``python -m lightning_fm fit -c <files> --print_config | tail -n +2 > tests/data/...``. A resolved
config spells out every default of the installed Trainer, optimisers and callbacks (torch 2.4's Adam has no
``decoupled_weight_decay``, say), so the comparisons run with the library versions the snapshots were written with
(``libraries.json`` beside them) and are skipped, saying so, with others (benchmarks/compat.sh's lowest env)."""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import pytest
import yaml

from lightning_fm.cli.app import BASE_DIR, DEFAULT_BASE, ROOT_BASE, main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SNAPSHOTS = REPO / "tests" / "data" / "resolved_configs"
RECIPE_GROUPS = ("toy", "digits", "mnist", "cifar10", "celeba64", "transfer")
OVERLAY_GROUPS = ("trainer", "logger", "model")
NOT_FIT = {"toy/duality.yaml"}  # the duality command's config (its own schema)


def recipes() -> list[Path]:
    return sorted(
        path
        for group in RECIPE_GROUPS
        for path in (CONFIGS / group).glob("*.yaml")
        if path.relative_to(CONFIGS).as_posix() not in NOT_FIT
    )


def cases() -> dict[str, list[str]]:
    """Snapshot name -> the ``-c`` files (relative to the repository) of its command."""
    found = {f"{p.parent.name}__{p.stem}": [p.relative_to(REPO).as_posix()] for p in recipes()}
    for group in OVERLAY_GROUPS:
        for overlay in sorted((CONFIGS / group).glob("*.yaml")):
            found[f"cifar10__otcfm+{group}__{overlay.stem}"] = [
                "configs/cifar10/otcfm.yaml",
                f"configs/{group}/{overlay.name}",
            ]
    found["toy__otcfm+trainer__gpu"] = ["configs/toy/otcfm.yaml", "configs/trainer/gpu.yaml"]
    found["default"] = []
    return found


def library_versions() -> dict[str, str]:
    import jsonargparse
    import lightning
    import torch

    return {
        "torch": torch.__version__.split("+")[0],
        "lightning": lightning.__version__,
        "jsonargparse": jsonargparse.__version__,
    }


@pytest.fixture
def snapshot_libraries() -> None:
    written = json.loads((SNAPSHOTS / "libraries.json").read_text())
    if library_versions() != written:
        pytest.skip(f"the snapshots spell out the defaults of {written}; installed: {library_versions()}")


def resolved(*args: str) -> str:
    """``python -m lightning_fm fit ARGS --print_config``, in this process, less the version line."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None), out.getvalue()[-2000:]
    lines = out.getvalue().splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("# lightning.pytorch=="))


def config_args(files: list[str]) -> list[str]:
    return [arg for path in files for arg in ("-c", str(REPO / path))]


# ---- fast: structure --------------------------------------------------------------------------------------------


def test_every_file_under_configs_is_a_yaml_mapping():
    paths = sorted(CONFIGS.rglob("*.yaml"))
    assert len(paths) > 30
    for path in paths:
        assert isinstance(yaml.safe_load(path.read_text()), dict), path


def test_every_snapshot_case_has_a_snapshot_and_every_snapshot_a_case():
    assert sorted(f"{name}.yaml" for name in cases()) == sorted(p.name for p in SNAPSHOTS.glob("*.yaml"))


def test_recipes_name_an_existing_base_and_restate_neither_trainer_block_nor_callback_list():
    bases = {path.stem for path in (REPO / BASE_DIR).glob("*.yaml")}
    assert {ROOT_BASE, DEFAULT_BASE} <= bases
    for path in recipes():
        content = yaml.safe_load(path.read_text())
        assert content.get("base", DEFAULT_BASE) in bases, path
        trainer = content.get("trainer", {})
        assert "callbacks" not in trainer, f"{path}: a recipe adds callbacks with callbacks+:, it does not restate them"
        assert not {"gradient_clip_val", "check_val_every_n_epoch"} & set(trainer), path
        assert "seed_everything" not in content, path
    for group in OVERLAY_GROUPS:  # overlays hold no list that would replace a recipe's
        for path in (CONFIGS / group).glob("*.yaml"):
            assert "callbacks" not in (yaml.safe_load(path.read_text()).get("trainer") or {}), path
    text = "".join(  # (the duality config's train.gradient_clip_val is its own schema's)
        path.read_text()
        for path in CONFIGS.rglob("*.yaml")
        if path.parent.name != "base" and path.relative_to(CONFIGS).as_posix() not in NOT_FIT
    )
    assert "EMAWeightAveraging" not in text and "gradient_clip_val" not in text


def test_bases_hold_only_seed_and_trainer():
    for path in (REPO / BASE_DIR).glob("*.yaml"):
        assert set(yaml.safe_load(path.read_text())) <= {"seed_everything", "trainer"}, path


# ---- fast: a few resolved configs in process --------------------------------------------------------------------


def test_cifar10_recipe_and_its_base_stacked_explicitly_resolve_to_the_snapshot(snapshot_libraries):
    snapshot = (SNAPSHOTS / "cifar10__otcfm.yaml").read_text()
    assert resolved(*config_args(["configs/cifar10/otcfm.yaml"])) == snapshot
    assert resolved(*config_args(["configs/base/images.yaml", "configs/cifar10/otcfm.yaml"])) == snapshot


def test_callbacks_append_on_the_command_line_and_base_chooses_the_base():
    config = yaml.safe_load(
        resolved(*config_args(["configs/toy/fm.yaml"]), "--trainer.callbacks+=lightning_fm.callbacks.SampleGrid")
    )
    names = [c["class_path"].rsplit(".", 1)[1] for c in config["trainer"]["callbacks"]]
    assert names[0] == "EMAWeightAveraging" and names[-2:] == ["HeldOutLikelihood", "SampleGrid"]
    config = yaml.safe_load(resolved(*config_args(["configs/toy/fm.yaml"]), "--base", "images"))
    assert config["trainer"]["callbacks"][0]["init_args"]["decay"] == 0.9999
    assert config["trainer"]["log_every_n_steps"] == 100 and "base" not in config


# ---- slow: every snapshot, every file parses --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(cases()))
def test_resolved_config_equals_its_snapshot(name, snapshot_libraries):
    assert resolved(*config_args(cases()[name])) == (SNAPSHOTS / f"{name}.yaml").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("path", sorted(p.name for p in (REPO / BASE_DIR).glob("*.yaml")))
def test_every_base_parses_as_a_config_file(path):
    config = yaml.safe_load(resolved(*config_args([f"{BASE_DIR.as_posix()}/{path}"])))
    assert config["trainer"]["gradient_clip_val"] == 1.0


@pytest.mark.slow
def test_the_duality_config_parses(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["duality", "-c", str(CONFIGS / "toy" / "duality.yaml"), "--print_config"])
    assert exit_info.value.code in (0, None)
    assert "root_dir" in yaml.safe_load(capsys.readouterr().out)
