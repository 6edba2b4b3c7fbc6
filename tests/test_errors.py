"""The matrix of the "When things go wrong" guide (docs/guides/troubleshooting.md): every bad input or fault, the
one message the user sees (asserted here row by row), and that nothing was lost. Most rows call
``lightning_fm.cli.main`` in this process; two run ``python -m lightning_fm`` to check the whole output (one short
line at the end, no usage text, no traceback)."""

import os
import subprocess
import sys
import warnings

import pytest
import torch
import yaml
from conftest import REPO, run_cli

from lightning_fm.cli import main
from lightning_fm.cli.checkpoint_rules import network_mismatches
from lightning_fm.cli.errors import close_keys, known_classes
from lightning_fm.cli.run_config import MIN_VALIDATIONS, validation_interval
from lightning_fm.duality import CheckResult
from lightning_fm.experiments.duality.report import dynamics_verdict
from lightning_fm.modules import CFMModule, FlowMatchingModule, IFMModule
from lightning_fm.runtime import quiet
from lightning_fm.utils.spec import (
    ALLOWED_ENV,
    UntrustedClassError,
    allowed_prefixes,
    import_class,
    is_allowed,
    only_allowed_classes,
)

CONFIGS = REPO / "configs"
FAST = ["--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
SMALL_EVAL = ["--data.init_args.n_val=64", "--data.init_args.n_test=64", "--trainer.limit_val_batches=1"]


@pytest.fixture(autouse=True)
def _cli_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lightning_fm"])  # main is given its arguments, not pytest's


def error_of(args: list[str], capsys, status: int = 2) -> str:
    """The last line ``main(args)`` writes to stderr, which must be its one ``error: ...`` line."""
    with pytest.raises(SystemExit) as exit_:
        main([*args, *FAST])
    err = capsys.readouterr().err
    assert exit_.value.code == status, err[-2000:]
    assert "usage:" not in err and "Traceback" not in err, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: "), err[-2000:]
    return last


def write(path, text):
    path.write_text(text)
    return str(path)


BAD_VALUES = [  # (row, arguments, what the message must say)
    (
        "L",
        ["-c", f"{CONFIGS}/toy/ifm.yaml", "--model.init_args.field.init_args.L=0"],
        ["model.init_args.field", "StrongInteractionField.L", "> 0", "got 0.0"],
    ),
    ("sigma", ["--model.init_args.path.init_args.sigma=-1"], ["model.init_args.path", "LinearPath.sigma", ">= 0"]),
    (
        "scale",
        ["-c", f"{CONFIGS}/toy/ifm.yaml", "--model.init_args.field.init_args.scale=0"],
        ["model.init_args.field", "StrongInteractionField.scale", "> 0", "got 0"],
    ),
    (
        "sampler steps",
        ["--model.init_args.sampler.init_args.steps=0"],
        ["model.init_args.sampler", "steps must be an integer >= 1, got 0"],
    ),
    ("batch size", ["--data.init_args.batch_size=0"], ["data.batch_size must be an integer >= 1, got 0"]),
    (
        "solver name",
        ["--model.init_args.sampler.init_args.method=rk5"],
        ["model.init_args.sampler", "'rk5'", "'euler'", "'dopri5'"],
    ),
    (
        "path name",
        ["--model.init_args.path=StraightPath"],
        ["model.init_args.path: unknown class 'StraightPath'", "LinearPath", "BrownianBridgePath", "LipmanPath"],
    ),
    (
        "field name",
        ["-c", f"{CONFIGS}/toy/ifm.yaml", "--model.init_args.field=QuarkField"],
        ["model.init_args.field: unknown class 'QuarkField'", "StrongInteractionField", "CoulombField"],
    ),
    (
        "coupling name",
        ["--model.init_args.coupling=OptimalCoupling"],
        ["model.init_args.coupling: unknown class 'OptimalCoupling'", "OTCoupling", "IndependentCoupling"],
    ),
    (
        "coupling method",
        ["--model.init_args.coupling.init_args.method=greedy"],
        ["model.init_args.coupling", "OTCoupling.method", "'exact'", "'greedy'"],
    ),
    ("toy data set", ["--data.init_args.target=swirl"], ["data.target='swirl' is unknown", "moons", "8gaussians"]),
    ("value type", ["--trainer.max_steps=many"], ["trainer.max_steps: expected an int, got 'many'"]),
    (
        "optimizer value type",
        ["--model.init_args.optimizer.init_args.lr=fast"],
        ["error: model.init_args.optimizer.init_args.lr: expected a float, got 'fast'"],
    ),
    (
        "list value",
        ["-c", f"{CONFIGS}/digits/cfm.yaml", "--model.init_args.backbone.init_args.channel_mult=2"],
        ["error: model.init_args.backbone.init_args.channel_mult: expected a list, got 2"],
    ),
    (
        "U-Net list setting",
        ["-c", f"{CONFIGS}/digits/cfm.yaml", "--model.init_args.backbone.init_args.attention_resolutions=4"],
        [
            "error: model.init_args.backbone (lightning_fm.models.UNet): "
            "UNet.attention_resolutions must be a list of ints, got 4"
        ],
    ),
    (
        "backbone name",
        ["--model.init_args.backbone=Unet"],
        [
            "error: model.init_args.backbone: unknown class 'Unet' (did you mean 'UNet'?); "
            "choose one of ['FieldHead', 'MLP', 'UNet'] (or a full class_path)"
        ],
    ),
    (
        "misspelt key",
        ["--trainer.val_check_intervall", "5"],
        ["error: trainer.val_check_intervall: unknown key; did you mean trainer.val_check_interval?"],
    ),
    (
        "misspelt key in a config",
        ["-c", "{trainer: {val_check_intervall: 5}}"],
        ["error: trainer.val_check_intervall: unknown key; did you mean trainer.val_check_interval?"],
    ),
    (
        "misspelt group",
        ["--trainr.max_steps=3"],
        ["error: trainr.max_steps: unknown key; did you mean trainer.max_steps?"],
    ),
    (
        "misspelt argument",
        ["--model.init_args.sampler.init_args.step=5"],
        [
            "error: model.init_args.sampler.init_args.step: not an argument of lightning_fm.sampling.ODESampler; "
            "did you mean steps? (its arguments: atol, max_steps, method, rtol, steps)"
        ],
    ),
    (
        "optimizer argument",
        ["--model.init_args.optimizer.init_args.learning_rate=0.1"],
        ["error: model.init_args.optimizer.init_args.learning_rate: not an argument of torch.optim.Adam", " lr,"],
    ),
    (
        "unknown key",
        ["--model.init_args.sigma=0.1"],
        ["model.init_args.sigma: not an argument of lightning_fm.modules.CFMModule", "path", "sampler"],
    ),
    ("max_steps 0", ["--trainer.max_steps=0"], ["trainer.max_steps=0 trains nothing", ">= 1"]),
    ("max_steps < -1", ["--trainer.max_steps=-5"], ["trainer.max_steps=-5 trains nothing"]),
    ("trainer value", ["--trainer.strategy=fsdq"], ["trainer: You selected an invalid strategy name", "'fsdq'"]),
    (
        "gradient accumulation",
        ["--trainer.accumulate_grad_batches=0"],
        ["trainer.accumulate_grad_batches=0 must be an integer >= 1"],
    ),
    ("seed", ["--seed_everything=-3"], ["seed_everything=-3 must lie in 0..4294967295"]),
    (
        "learning rate",
        ["--model.init_args.optimizer.init_args.lr=-1"],
        ["model.init_args.optimizer / lr_scheduler: Invalid learning rate: -1.0"],
    ),
    (
        "U-Net levels",
        ["-c", f"{CONFIGS}/digits/cfm.yaml", "--model.init_args.backbone.init_args.channel_mult=[1,2,2,2,2]"],
        ["model.init_args.backbone", "UNet.channel_mult", "not divisible by 16", "at most 4 levels"],
    ),
    (
        "channels",
        ["-c", f"{CONFIGS}/digits/cfm.yaml", "--model.init_args.backbone.init_args.data_shape=[3,8,8]"],
        ["model.backbone cannot take data of shape (1, 8, 8)", "data_shape [3, 8, 8]"],
    ),
    (
        "data shape",
        ["--model.init_args.backbone.init_args.data_shape=[3]"],
        ["model.backbone cannot take data of shape (2,)", "data_shape [3]"],
    ),
    (
        "LipmanPath source",
        ["--model.init_args.path=LipmanPath"],
        ["model.path=LipmanPath is only valid for a N(0, I) source", "data.source='8gaussians'"],
    ),
    (
        "data set offline",
        ["-c", f"{CONFIGS}/mnist/otcfm.yaml"],
        ["data.target: MNIST not found", "data/MNIST/raw", "train-images-idx3-ubyte", "download: true"],
    ),
]


@pytest.mark.parametrize("row, args, expected", BAD_VALUES, ids=[row for row, _, _ in BAD_VALUES])
def test_a_bad_value_ends_in_one_line_naming_key_value_and_what_is_allowed(
    row, args, expected, capsys, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    message = error_of(["fit", "--trainer.max_steps=2", *args], capsys)
    for fragment in expected:
        assert fragment in message, (fragment, message)
    assert not list(tmp_path.glob("**/*.ckpt"))  # it stopped before training: nothing written, nothing lost


def test_a_config_file_that_is_missing_or_not_yaml_is_named(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert error_of(["fit", "-c", "recipe.yaml"], capsys) == "error: -c recipe.yaml: no such config file"
    broken = write(tmp_path / "broken.yaml", "trainer:\n  max_steps: [1, 2\n")
    message = error_of(["fit", "-c", broken], capsys)
    assert message.startswith(f"error: -c {broken} is not valid YAML (line 3, column 1)"), message
    listed = write(tmp_path / "list.yaml", "- 1\n- 2\n")
    assert "must hold a mapping of config keys" in error_of(["fit", "-c", listed], capsys)


def test_suggestions_come_from_the_keys_and_classes_that_fit():
    """A parameter's class list holds only what fits it: for ``backbone`` (typed ``nn.Module``) the classes that
    ``lightning_fm.models`` offers and that take ``net(x, t, y)``, not U-Net blocks, embeddings, metrics' networks or
    LightningModules; a misspelt key is matched among its siblings, under a misspelt parent's closest spelling."""
    import lightning_fm.metrics  # noqa: F401  (its nn.Module subclasses are known too)

    module = "torch.nn.modules.module.Module"
    assert known_classes([module], "backbone") == ["FieldHead", "MLP", "UNet"]
    offered = known_classes([module])
    assert "GroupNorm32" not in offered and "ResBlock" not in offered  # not in lightning_fm.models' __all__
    assert "DigitsClassifier" in offered and "DigitsClassifier" not in known_classes([module], "backbone")
    keys = ["trainer.max_steps", "trainer.min_steps", "trainer.val_check_interval", "model.init_args.path.class_path"]
    assert close_keys("trainer.max_step", keys) == ["trainer.max_steps"]
    assert close_keys("trainr.val_check_intervall", keys) == ["trainer.val_check_interval"]
    assert close_keys("model.init_args.paht", keys) == ["model.init_args.path"]
    assert close_keys("trainer.colour", keys) == [] and close_keys("nothing.like.it", keys) == []
    assert close_keys("train.bogus", []) == []  # no keys known (the duality command): no suggestion


# -- checkpoints ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A two-step run of the default job (OT-CFM, 100 Euler steps): its checkpoint and its directory."""
    root = tmp_path_factory.mktemp("trained")
    argv, sys.argv = sys.argv, ["lightning_fm"]
    try:
        main(
            [
                "fit",
                "--trainer.max_steps=2",
                "--trainer.limit_val_batches=0",
                f"--trainer.default_root_dir={root}",
                *FAST,
            ]
        )
    finally:
        sys.argv = argv
    checkpoint = root / "toy_otcfm" / "version_0" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_file()
    return checkpoint


@pytest.mark.slow
def test_overrides_of_settings_that_may_change_beat_the_checkpoint(trained, tmp_path):
    """The command line's sampler (rk4: 4 evaluations a step) and a -c file's (midpoint, 10 steps) are used, the
    checkpoint's (Euler, 100 steps) elsewhere."""
    cli = main(
        [
            "test",
            f"--ckpt_path={trained}",
            "--model.init_args.sampler.init_args.method=rk4",
            "--trainer.limit_test_batches=1",
            "--data.init_args.n_test=64",
            *FAST,
        ]
    )
    assert float(cli.trainer.callback_metrics["test/nfe"]) == 4 * 100
    midpoint = write(
        tmp_path / "midpoint.yaml",
        yaml.safe_dump({"model": {"init_args": {"sampler": {"init_args": {"method": "midpoint", "steps": 10}}}}}),
    )
    cli = main(
        [
            "test",
            "-c",
            midpoint,
            f"--ckpt_path={trained}",
            "--trainer.limit_test_batches=1",
            "--data.init_args.n_test=64",
            *FAST,
        ]
    )
    assert float(cli.trainer.callback_metrics["test/nfe"]) == 2 * 10
    assert cli.model.hparams.backbone["init_args"]["width"] == 64  # the network is the checkpoint's


def test_settings_that_define_the_network_must_match_the_checkpoint(trained, capsys):
    message = error_of(
        [
            "test",
            "-c",
            f"{CONFIGS}/toy/otcfm.yaml",
            f"--ckpt_path={trained}",
            "--model.init_args.backbone.init_args.width=128",
        ],
        capsys,
    )
    assert "model.init_args.backbone.init_args.width=128 but the checkpoint has 64" in message
    assert str(trained) in message
    message = error_of(["test", "-c", f"{CONFIGS}/toy/ifm.yaml", f"--ckpt_path={trained}"], capsys)
    assert (
        "holds a lightning_fm.modules.cfm.CFMModule, but model.class_path is lightning_fm.modules.IFMModule" in message
    )
    message = error_of(["test", "-c", f"{CONFIGS}/toy/icfm.yaml", f"--ckpt_path={trained}"], capsys)
    assert (
        "model.init_args.coupling.class_path='lightning_fm.couplings.IndependentCoupling' but the checkpoint "
        "has 'lightning_fm.couplings.OTCoupling'" in message
    )


def test_network_settings_are_compared_leaf_by_leaf_and_classes_by_identity():
    stored = {
        "class_path": "lightning_fm.modules.cfm.CFMModule",
        "init_args": {
            "backbone": {"class_path": "lightning_fm.models.mlp.MLP", "init_args": {"width": 64, "data_shape": [2]}},
            "sampler": {"class_path": "lightning_fm.sampling.ODESampler", "init_args": {"steps": 100}},
        },
    }
    given = {
        "class_path": "lightning_fm.modules.CFMModule",
        "init_args": {  # the same classes, other import paths
            "backbone": {"class_path": "lightning_fm.models.MLP", "init_args": {"width": 64.0, "data_shape": None}},
            "sampler": {"class_path": "lightning_fm.sampling.ODESampler", "init_args": {"steps": 7}},
        },
    }
    assert network_mismatches(given, stored) == []  # data_shape left to the data; the sampler may change
    given["init_args"]["backbone"]["init_args"].update(width=65, data_shape=[3])
    assert sorted(network_mismatches(given, stored)) == [
        ("model.init_args.backbone.init_args.data_shape", [3], [2]),
        ("model.init_args.backbone.init_args.width", 65, 64),
    ]


@pytest.mark.slow
def test_a_checkpoint_that_is_missing_not_a_checkpoint_truncated_or_foreign_is_named(trained, capsys, tmp_path):
    missing = tmp_path / "nope.ckpt"
    assert f"ckpt_path='{missing}': no such file" in error_of(["test", f"--ckpt_path={missing}"], capsys)
    text = write(tmp_path / "notes.ckpt", "not a checkpoint\n")
    assert f"ckpt_path='{text}' is not a checkpoint" in error_of(["test", f"--ckpt_path={text}"], capsys)
    truncated = tmp_path / "truncated.ckpt"
    data = trained.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    assert "is truncated or damaged" in error_of(["fit", f"--ckpt_path={truncated}"], capsys)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 0.1}, "pytorch-lightning_version": "2.6.0"}, foreign)
    assert "was not written by lightning_fm" in error_of(["test", f"--ckpt_path={foreign}"], capsys)
    with pytest.raises(ValueError, match="holds a lightning_fm.modules.cfm.CFMModule, which IFMModule cannot load"):
        IFMModule.load_from_checkpoint(trained)
    assert type(FlowMatchingModule.load_from_checkpoint(trained)) is CFMModule  # any family, by the base class


def crafted(trained, tmp_path, target):
    """The trained checkpoint with its backbone replaced by a call of ``os.makedirs(target)``."""
    checkpoint = torch.load(trained, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["backbone"] = {"class_path": "os.makedirs", "init_args": {"name": str(target)}}
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    return path


def test_a_checkpoint_naming_a_class_outside_the_allow_list_runs_nothing(trained, capsys, tmp_path):
    target = tmp_path / "created_by_the_checkpoint"
    path = crafted(trained, tmp_path, target)
    message = error_of(["test", f"--ckpt_path={path}"], capsys)
    assert "init_args.backbone.class_path='os.makedirs'" in message and ALLOWED_ENV in message
    with pytest.raises(UntrustedClassError, match="'os.makedirs'"):
        CFMModule.load_from_checkpoint(path)
    with pytest.raises(UntrustedClassError, match="'os.makedirs'"):  # a file object: refused when building
        with open(path, "rb") as file:
            CFMModule.load_from_checkpoint(file)
    assert not target.exists()


def test_a_plain_dotted_string_in_a_checkpoint_is_refused_before_anything_is_imported(trained, capsys, tmp_path):
    """jsonargparse imports a dotted string given for a class- or callable-typed argument: ``"this.s"`` would print
    the Zen of Python; a re-exported class (``LightningModule`` through an allowed module) is refused too."""
    import sys

    checkpoint = torch.load(trained, map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["backbone"] = "this.s"
    path = tmp_path / "dotted.ckpt"
    torch.save(checkpoint, path)
    sys.modules.pop("this", None)
    message = error_of(["test", f"--ckpt_path={path}"], capsys)
    assert "init_args.backbone='this.s'" in message and "this" not in sys.modules
    assert "Beautiful is better than ugly" not in capsys.readouterr().out
    with only_allowed_classes("test"), pytest.raises(UntrustedClassError, match="defined elsewhere"):
        import_class("lightning_fm.modules.base.LightningModule")


def test_the_allow_list_is_the_models_of_this_package_torch_and_what_the_user_adds(monkeypatch):
    monkeypatch.delenv(ALLOWED_ENV, raising=False)
    for name in ("lightning_fm.models.MLP", "lightning_fm.paths.LinearPath", "torch.nn.Linear", "torch.optim.Adam"):
        assert is_allowed(name, allowed_prefixes()), name
    for name in ("os.makedirs", "lightning_fm.loggers.CSVLogger", "torch.nnx.Y", "builtins.exec", "subprocess.run"):
        assert not is_allowed(name, allowed_prefixes()), name
    monkeypatch.setenv(ALLOWED_ENV, "mypackage.models, other.Net")
    assert is_allowed("mypackage.models.unet.UNet", allowed_prefixes()) and is_allowed("other.Net", allowed_prefixes())
    assert not is_allowed("other.Network", allowed_prefixes())


# -- where output goes, what is written -------------------------------------------------------------------------
@pytest.mark.slow
def test_the_run_lands_in_default_root_dir_with_nothing_written_elsewhere_and_no_secret(tmp_path, monkeypatch):
    """W&B offline, with a W&B key and another secret in the environment: the run (checkpoint, config, W&B's own
    files) is in ``--trainer.default_root_dir``, the working directory stays empty, no file holds a secret."""
    secrets = {"WANDB_API_KEY": "0123456789abcdef0123456789abcdef01234567", "MY_SERVICE_TOKEN": "hunter2-rotate-me"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("WANDB_DIR")  # W&B's files go into the run directory, and are searched too
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir()
    monkeypatch.chdir(work)
    cli = main(
        [
            "fit",
            "-c",
            f"{CONFIGS}/toy/otcfm.yaml",
            "-c",
            f"{CONFIGS}/logger/wandb.yaml",
            "--trainer.max_steps=2",
            "--trainer.limit_val_batches=0",
            f"--trainer.default_root_dir={out}",
            *FAST,
        ]
    )
    import wandb

    wandb.finish()
    run = out / "toy_otcfm" / "version_0"
    assert cli.trainer.logger.log_dir == str(run)
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert list(run.glob("wandb/offline-run-*"))
    assert list(work.iterdir()) == []
    files = [p for p in out.rglob("*") if p.is_file()]
    for path in files:
        content = path.read_bytes()
        for name, value in secrets.items():
            assert value.encode() not in content, (name, path)


@pytest.mark.slow
def test_a_short_run_validates_at_least_twice(tmp_path):
    assert validation_interval(1000, None, 300) == 300 // MIN_VALIDATIONS == 150
    assert validation_interval(1000, None, 5000) == 1000  # the config's cadence where the run is long enough
    assert validation_interval(1000, None, 1) == 1 and validation_interval(0.5, None, 300) == 0.5
    assert validation_interval(1000, 1, 300) == 1000  # epoch-based validation: as configured
    cli = main(["fit", "--trainer.max_steps=6", f"--trainer.default_root_dir={tmp_path}", *SMALL_EVAL, *FAST])
    metrics = (tmp_path / "toy_otcfm" / "version_0" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    validated = [row.split(",")[header.index("step")] for row in metrics[1:] if row.split(",")[header.index("val/w2")]]
    assert cli.trainer.val_check_interval == 3 and validated == ["2", "5"]  # after steps 3 and 6 (0-based 2, 5)
    assert sorted(p.name for p in (tmp_path / "toy_otcfm" / "version_0" / "samples").iterdir()) == [
        "latest.png",
        "step_0000003.png",
        "step_0000006.png",
    ]


# -- quiet output ----------------------------------------------------------------------------------------------
def test_help_names_the_command_and_lists_duality(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: python -m lightning_fm")
    assert "duality" in out and "__main__" not in out


def test_the_warnings_our_own_calls_trigger_are_filtered():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet()
        warnings.warn(
            "`torch.distributed._all_gather_base` is a private function and will be deprecated.",
            FutureWarning,
            stacklevel=1,
        )
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning, stacklevel=1)
        warnings.warn("a warning of the user's own", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["a warning of the user's own"]


SCRIPT = """
import sys
from lightning_fm import runtime
runtime.apply()  # what `python -m lightning_fm` does first
from lightning_fm.cli import main
from lightning_fm.cli.checkpoint_rules import network_mismatches
run, sys.argv = sys.argv[1], sys.argv[:1]
fast = ["--trainer.enable_progress_bar=false", "--trainer.limit_val_batches=0"]
main(["fit", "--trainer.max_steps=2", "--trainer.default_root_dir=out", *fast])
main(["fit", "--trainer.max_steps=4", f"--ckpt_path={run}/checkpoints/last.ckpt", *fast])  # absolute: dirpath moves
main(["test", f"--ckpt_path={run}/checkpoints/last.ckpt", "--data.init_args.n_test=64", *fast])
"""


@pytest.mark.cli
@pytest.mark.slow
def test_fit_resume_and_test_print_no_tip_and_no_spurious_warning(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), MPLBACKEND="Agg")
    run = tmp_path / "out" / "toy_otcfm" / "version_0"
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(run)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Restored all states from the checkpoint" in output and "test/w2" in output  # resumed, then tested
    for noise in (
        "Tip:",
        "LeafSpec",
        "WeightAveraging callback, but loading",
        "dirpath has changed",
        "exists and is not empty",
        "site-packages",
    ):  # a library's warning names its file
        assert noise not in output, (noise, output[-3000:])
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]  # resumed and tested in the run's directory


@pytest.mark.cli
@pytest.mark.slow
def test_the_command_prints_one_line_and_exits_with_status_2(tmp_path):
    """A value rejected while the model is built: one line, not a 60-line chained traceback (a parser error, once
    after a usage dump, is the ``value type`` row above)."""
    result = run_cli(["fit", "--model.init_args.path.init_args.sigma=-1"], cwd=tmp_path)
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip() and line != "Seed set to 0"]
    assert lines == [
        "error: model.init_args.path (lightning_fm.paths.LinearPath): LinearPath.sigma must be >= 0 "
        "and finite, got -1.0"
    ], result.stderr[-3000:]


# -- the duality report --------------------------------------------------------------------------------------------
def _rows(cfm_w2, ifm_w2, c13_rel, floor=0.05):
    learned = [
        CheckResult(
            f"val/w2 of the {label} model (EMA)", w2, max(0.3, 2 * floor), w2 <= max(0.3, 2 * floor), "diagnostic", {}
        )
        for label, w2 in (("CFM", cfm_w2), ("forward-only IFM", ifm_w2))
    ]
    c13 = [
        CheckResult("C13 learned consistency (rel L2)", c13_rel, 0.1, c13_rel <= 0.1, "diagnostic", {}),
        CheckResult("C13 learned consistency (W2)", 0.05, max(cfm_w2, ifm_w2), True, "diagnostic", {}),
    ]
    return learned + c13


def test_the_duality_verdict_claims_the_same_dynamics_only_for_models_that_learned():
    assert "learned the same dynamics" in dynamics_verdict(_rows(0.1, 0.12, 0.05))
    untrained = dynamics_verdict(_rows(2.5, 3.1, 0.05))  # C13 within its tolerances, but nothing was learned
    assert "have not both learned the target" in untrained and "same dynamics" not in untrained
    assert "max(0.3, 2 x the W2 noise floor) = 0.3" in untrained and "CFM 2.5" in untrained
    disagree = dynamics_verdict(_rows(0.1, 0.12, 0.4))
    assert "do not agree within C13's tolerances" in disagree and "rel L2 = 0.4 (tolerance 0.1)" in disagree
