"""Checkpoints that survive (SIGKILL, SIGTERM, Ctrl-C, exceptions; atomic writes) and the numerical guard (a
non-finite loss, a non-finite state, non-finite validation samples, f_z <= 0 in forward-only sampling, points far
from every charge). Runs resume with ``--ckpt_path last`` and must reach the weights of an uninterrupted run: the
project's resume is exact (step-seeded randomness, a resumable loader), so the tolerance is float32 round-off only
(atol 1e-6; one thread, fixed seeds: measured 0)."""

import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from conftest import REPO

from lightning_fm.callbacks.checkpoints import AtomicCheckpointIO, remove_stale_temporaries, temporary_path
from lightning_fm.cli import main
from lightning_fm.cli.run_config import checkpoint_step
from lightning_fm.cli.run_dirs import latest_last_checkpoint
from lightning_fm.utils.finite import NonFiniteTracker, first_nonfinite

EVERY, TOTAL = 20, 90  # checkpoint interval; the step every run finishes at (not a multiple of EVERY)


@pytest.fixture(autouse=True)
def _cli_argv(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["lightning_fm"])  # the CLI is given its arguments, not pytest's


def _callbacks(every=EVERY, *extra):
    return [
        {"class_path": "lightning.pytorch.callbacks.EMAWeightAveraging", "init_args": {"decay": 0.9}},
        {"class_path": "lightning_fm.callbacks.CrashSafeModelCheckpoint", "init_args": {"every_n_train_steps": every}},
        *extra,
    ]


def _args(directory, name, callbacks, *extra):
    """The default toy job, small and fast: batch 64, epochs of 50 steps, no validation, logged every 10 steps; a
    constant learning rate (the recipe's cosine decays over max_steps, which these runs change between their
    parts)."""
    path = directory / f"callbacks_{name}_{len(list(directory.glob('callbacks_*')))}.yaml"
    path.write_text(yaml.safe_dump({"trainer": {"callbacks": callbacks}}))
    return [
        "fit",
        "-c",
        str(REPO / "configs" / "toy" / "otcfm.yaml"),
        "-c",
        str(path),
        "--data.init_args.steps_per_epoch=50",
        "--data.init_args.batch_size=64",
        "--trainer.limit_val_batches=0",
        "--model.init_args.lr_scheduler=null",
        "--trainer.log_every_n_steps=10",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={directory / 'runs'}",
        f"--trainer.logger.init_args.name={name}",
        *extra,
    ]


def _last(directory, name):
    return directory / "runs" / name / "version_0" / "checkpoints" / "last.ckpt"


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _max_difference(a, b):
    """The largest entry-wise difference of the weights (EMA and raw) and of Adam's moments of two checkpoints."""
    diffs = [0.0]
    for key in ("state_dict", "current_model_state"):
        diffs += [float((a[key][k] - b[key][k]).abs().max()) for k in a[key]]
    for s, t in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        diffs += [float((s[m] - t[m]).abs().max()) for m in ("exp_avg", "exp_avg_sq")]
    return max(diffs)


def _all_finite(checkpoint):
    tensors = [v for key in ("state_dict", "current_model_state") for v in checkpoint[key].values()]
    tensors += [v for s in checkpoint["optimizer_states"][0]["state"].values() for v in s.values()]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run to TOTAL steps: its last.ckpt."""
    directory = tmp_path_factory.mktemp("straight")
    main(_args(directory, "straight", _callbacks(), f"--trainer.max_steps={TOTAL}"))
    return _load(_last(directory, "straight"))


def _resume_and_compare(directory, name, straight):
    main(_args(directory, name, _callbacks(), f"--trainer.max_steps={TOTAL}", "--ckpt_path=last"))
    resumed = _load(_last(directory, name))
    assert resumed["global_step"] == straight["global_step"] == TOTAL
    assert _max_difference(resumed, straight) <= 1e-6
    assert not list(_last(directory, name).parent.glob(".*.tmp"))  # no temporary left behind


@pytest.mark.cli
@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_weights(tmp_path, straight):
    """SIGKILL mid-run: the run checkpoints at steps 20 and 40 and waits at step 50 (its next checkpoint would be at
    60), where it is killed; last.ckpt is readable at every moment while the run writes it (atomic replace) and
    ``--ckpt_path last`` continues from step 40 to TOTAL with the weights of an uninterrupted run (10 steps lost,
    less than one interval)."""
    pause = {"class_path": "nan_probe.PauseAtStep", "init_args": {"step": 2 * EVERY + 10, "seconds": 300}}
    args = _args(tmp_path, "killed", _callbacks(EVERY, pause), "--trainer.max_steps=100000")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{REPO / 'tests'}{os.pathsep}{REPO}", MPLBACKEND="Agg")
    log = tmp_path / "killed.log"
    with open(log, "w") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "lightning_fm", *args],
            cwd=tmp_path,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    last, step, deadline = _last(tmp_path, "killed"), 0, time.monotonic() + 120
    try:
        while step < 2 * EVERY and process.poll() is None and time.monotonic() < deadline:
            if last.is_file():
                step = checkpoint_step(str(last))  # never a partial file: every read succeeds
            time.sleep(0.02)
        assert process.poll() is None, log.read_text()[-3000:]
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    assert checkpoint_step(str(last)) == 2 * EVERY, log.read_text()[-3000:]
    _resume_and_compare(tmp_path, "killed", straight)


@pytest.mark.parametrize("signum, status, said", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_sigterm_and_ctrl_c_stop_after_the_step_with_a_checkpoint_that_resumes_exactly(
    tmp_path, capfd, straight, signum, status, said
):
    """The signal arrives during step 47 (after its optimiser update): the run stops at the end of that step, on
    Lightning's stop flag (Ctrl-C's first press sets it too), writes last.ckpt at step 47 and exits with the
    shell's status for the signal; resumed, it reaches the uninterrupted weights."""
    probe = {"class_path": "nan_probe.SignalAtStep", "init_args": {"step": 47, "signum": int(signum)}}
    with pytest.raises(SystemExit) as stopped:
        main(_args(tmp_path, "stopped", _callbacks(EVERY, probe), f"--trainer.max_steps={TOTAL}"))
    assert stopped.value.code == status
    assert checkpoint_step(str(_last(tmp_path, "stopped"))) == 47  # the step at which it stopped, not 40
    said_at_stop = f"{said} at step 47: the last finite state is {_last(tmp_path, 'stopped')} (step 47)"
    assert said_at_stop in capfd.readouterr().err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the Ctrl-C handler is removed again
    if signum == signal.SIGTERM:  # Ctrl-C stops through the same flag, at the same point of the step
        _resume_and_compare(tmp_path, "stopped", straight)


def test_an_exception_between_steps_is_checkpointed_and_one_inside_a_step_is_not(tmp_path, capfd, straight):
    """Raised before step 47 starts: last.ckpt at step 47, resumable to the uninterrupted weights. Raised inside
    step 47 (after its backward pass, before the optimiser update): nothing new, last.ckpt stays at step 40."""
    between = {"class_path": "nan_probe.RaiseAtStep", "init_args": {"step": 47, "hook": "on_train_batch_start"}}
    with pytest.raises(RuntimeError, match="probe failure in on_train_batch_start"):
        main(_args(tmp_path, "between", _callbacks(EVERY, between), f"--trainer.max_steps={TOTAL}"))
    assert checkpoint_step(str(_last(tmp_path, "between"))) == 47
    assert f"RuntimeError at step 47: the last finite state is {_last(tmp_path, 'between')}" in capfd.readouterr().err
    _resume_and_compare(tmp_path, "between", straight)

    inside = {"class_path": "nan_probe.RaiseAtStep", "init_args": {"step": 47, "hook": "on_before_optimizer_step"}}
    with pytest.raises(RuntimeError, match="probe failure in on_before_optimizer_step"):
        main(_args(tmp_path, "inside", _callbacks(EVERY, inside), f"--trainer.max_steps={TOTAL}"))
    assert checkpoint_step(str(_last(tmp_path, "inside"))) == 40  # the last periodic one, untouched
    err = capfd.readouterr().err
    assert "RuntimeError at step 47: no new checkpoint (raised inside training step 47" in err
    assert f"the last finite state is {_last(tmp_path, 'inside')} (step 40)" in err


def test_a_stop_during_validation_keeps_raw_and_ema_weights_apart(tmp_path, straight):
    """Raised inside a validation (the EMA weights swapped into the model): last.ckpt (step 45) holds the raw
    weights as the raw ones and resumes to the uninterrupted run; the final checkpoint (step 90, between two
    intervals) keeps the raw weights apart from the EMA ones."""
    during = {"class_path": "nan_probe.RaiseAtStep", "init_args": {"step": 45, "hook": "on_validation_batch_start"}}
    with pytest.raises(RuntimeError, match="probe failure in on_validation_batch_start"):
        main(
            _args(
                tmp_path,
                "validating",
                _callbacks(EVERY, during),
                f"--trainer.max_steps={TOTAL}",
                "--trainer.limit_val_batches=1",
                "--trainer.val_check_interval=45",
            )
        )
    assert checkpoint_step(str(_last(tmp_path, "validating"))) == 45
    _resume_and_compare(tmp_path, "validating", straight)
    ema, raw = straight["state_dict"], straight["current_model_state"]
    assert max(float((ema[k] - raw[k]).abs().max()) for k in ema) > 1e-3


def _diverges(args, capfd):
    """Run a diverging fit; return its message: the command line prints it alone as ``error: <message>`` (the
    numerical error, a FloatingPointError) and exits with status 1."""
    with pytest.raises(SystemExit) as stopped:
        main(args)
    printed = capfd.readouterr().err.strip().splitlines()[-1]
    assert stopped.value.code == 1 and printed.startswith("error: "), printed
    return printed[len("error: ") :]


def test_a_nan_loss_stops_the_run_at_the_next_check_and_names_the_last_finite_checkpoint(tmp_path, capfd):
    """NaN from step 33, checks every 10 steps, checkpoints every 20: noticed at step 39, before the checkpoint of
    step 40; last.ckpt (step 20) is finite."""
    args = _args(
        tmp_path,
        "nan",
        _callbacks(),
        "--model.class_path=nan_probe.NaNFromStep",
        "--model.init_args.nan_from=33",
        f"--trainer.max_steps={TOTAL}",
    )
    last = _last(tmp_path, "nan")
    message = _diverges(args, capfd)
    assert message.startswith(
        "training loss is not finite at 7 of the 10 steps 30..39; noticed at step 39 (the "
        "loss is checked every trainer.log_every_n_steps=10 steps)"
    )
    assert message.endswith(f"the last finite state is {last} (step 20), resumable with --ckpt_path {last}")
    checkpoint = _load(last)
    assert checkpoint["global_step"] == 20 and _all_finite(checkpoint)


def test_a_non_finite_state_is_never_checkpointed(tmp_path, capfd):
    """NaN from step 31 with a checkpoint every 5 steps: the checkpoint of step 35 (NaN weights) is refused and the
    run stops there, before the loss check of step 39; last.ckpt stays the finite one of step 30."""
    args = _args(
        tmp_path,
        "state",
        _callbacks(5),
        "--model.class_path=nan_probe.NaNFromStep",
        "--model.init_args.nan_from=31",
        f"--trainer.max_steps={TOTAL}",
    )
    message, last = _diverges(args, capfd), _last(tmp_path, "state")
    assert message.startswith("the model or optimiser state is not finite at step 35 (first: state_dict/")
    assert message.endswith(
        f"not checkpointed; the last finite state is {last} (step 30), resumable with --ckpt_path {last}"
    )
    checkpoint = _load(last)
    assert checkpoint["global_step"] == 30 and _all_finite(checkpoint)


def test_no_finite_checkpoint_is_claimed_when_none_was_written(tmp_path, capfd):
    args = _args(
        tmp_path,
        "early",
        _callbacks(1000),
        "--model.class_path=nan_probe.NaNFromStep",
        "--model.init_args.nan_from=3",
        f"--trainer.max_steps={TOTAL}",
    )
    message = _diverges(args, capfd)
    assert message.startswith("training loss is not finite at 7 of the 10 steps 0..9; ")
    assert message.endswith(
        "no checkpoint has been written yet (one every 1000 steps, CrashSafeModelCheckpoint.every_n_train_steps)"
    )
    assert not _last(tmp_path, "early").exists()


def test_validation_reports_the_fraction_of_non_finite_samples(recwarn):
    from lightning.pytorch import Trainer
    from nan_probe import NaNSamples

    from lightning_fm.data import ToyDataModule
    from lightning_fm.models import MLP
    from lightning_fm.modules.evaluation import NonFiniteSamplesWarning

    data = ToyDataModule(n_val=200, eval_batch_size=100)
    for tolerance, warned in ((0.0, True), (0.25, False)):
        torch.manual_seed(0)
        model = NaNSamples(
            bad_rows=10, backbone=MLP([2], width=16), plot_samples=0, val_trajectories=0, nonfinite_tolerance=tolerance
        )
        trainer = Trainer(
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            accelerator="cpu",
        )
        recwarn.clear()
        metrics = trainer.validate(model, data, verbose=False)[0]
        assert metrics["val/nonfinite"] == 20 and metrics["val/nonfinite_frac"] == pytest.approx(0.1)
        assert math.isnan(metrics["val/w2"]) and math.isfinite(metrics["val/loss"])  # not averaged away
        messages = [str(w.message) for w in recwarn if issubclass(w.category, NonFiniteSamplesWarning)]
        assert messages == (
            [
                "val: 20 generated samples (10.0%) are not finite (above model.nonfinite_tolerance=0)"
                ": the sampler diverged on them; val/w2 is NaN when one of them is among its samples "
                "(logged: val/nonfinite_frac)"
            ]
            if warned
            else []
        )


def test_a_non_finite_validation_loss_is_not_dropped_from_the_mean():
    from lightning_fm.modules.evaluation import EvaluationMetrics
    from lightning_fm.sampling import SampleResult

    metrics = EvaluationMetrics(10)
    batch = {"x0": torch.zeros(4, 2), "x1": torch.zeros(4, 2)}
    metrics.update(torch.tensor(1.0), batch, SampleResult(x=torch.zeros(4, 2), nfe=1))
    metrics.update(torch.tensor(3.0), {k: v[:2] for k, v in batch.items()}, SampleResult(x=torch.zeros(2, 2), nfe=1))
    assert float(metrics.compute()["loss"]) == pytest.approx((4 * 1.0 + 2 * 3.0) / 6)  # weighted by samples
    metrics.update(torch.tensor(float("nan")), batch, SampleResult(x=torch.zeros(4, 2), nfe=1))
    assert math.isnan(float(metrics.compute()["loss"]))


def test_the_loss_record_never_synchronises_with_the_host(monkeypatch):
    """NonFiniteTracker.update is device arithmetic only: with every tensor-to-host conversion disabled it still
    counts; the count is read once, at the check."""
    tracker = NonFiniteTracker()
    values = [1.0, float("nan"), 2.0, float("inf"), float("-inf"), 0.5]
    with monkeypatch.context() as patch:
        for method in ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy", "cpu"):
            patch.setattr(torch.Tensor, method, lambda *a, **k: pytest.fail("host synchronisation"))
        for step, value in enumerate(values):
            tracker.update(torch.tensor(value), 10 + step)
    assert int(tracker.pending()) == 3 and tracker.window == (10, 15)
    tracker.reset()
    assert int(tracker.pending()) == 0 and tracker.window is None


def test_first_nonfinite_names_the_tensor():
    state = {
        "state_dict": {"a": torch.ones(3), "b": torch.tensor([1.0, float("nan")])},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.full((2,), float("inf")), "step": torch.tensor(3)}}}],
    }
    assert first_nonfinite(state) == "state_dict/b"
    state["state_dict"]["b"] = torch.zeros(2)
    assert first_nonfinite(state) == "optimizer_states/0/state/0/exp_avg"
    state["optimizer_states"][0]["state"][0]["exp_avg"] = torch.zeros(2)
    assert first_nonfinite(state) is None


def test_an_interrupted_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    """A write that dies half-way (here: torch.save raising after part of the file) leaves the previous file
    byte-identical; a temporary left by a killed writer is not a 'last' checkpoint and is removed on the next
    setup."""
    io, path = AtomicCheckpointIO(), tmp_path / "run" / "version_0" / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)
    before = path.read_bytes()

    def dies_half_way(obj, file):
        file.write(before[: len(before) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert path.read_bytes() == before and not temporary_path(path).exists()
    assert torch.load(path, weights_only=True)["global_step"] == 1

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = temporary_path(path).name.split(".")[-3]
    stale = temporary_path(path).with_name(f".last.ckpt.{host}.{int(dead.stdout)}.tmp")
    stale.write_bytes(before[:10])  # what a SIGKILL during a save leaves
    elsewhere = temporary_path(path).with_name(f".last.ckpt.another-host.{os.getpid()}.tmp")  # a requeued job's
    elsewhere.write_bytes(before[:10])
    live = temporary_path(path)  # this process's: a save in progress
    live.write_bytes(before[:10])
    assert latest_last_checkpoint(tmp_path / "run") == path  # what --ckpt_path last finds: never a temporary
    assert sorted(remove_stale_temporaries(path.parent)) == sorted([stale, elsewhere])
    assert live.exists() and path.read_bytes() == before


def test_forward_only_sampling_holds_lines_where_fz_is_not_positive():
    """The documented rule for forward-only fields: where f_z <= fz_min the slope is 0. A field with dx/dz = 1
    while x < 0.5 and f_z = -1 beyond: Euler lines from x = 0 climb to the first grid point at or past 0.5 and stay
    there; every later evaluation is guarded. "clamp" (the other rule) jumps by |f_x| / fz_min instead. Sampled as
    a velocity (FieldAsVelocity, Psi's guard: v = 0) the line takes the same steps."""
    from types import SimpleNamespace

    from lightning_fm.duality import FieldAsVelocity
    from lightning_fm.sampling import FieldLineSampler
    from lightning_fm.sampling.field_lines import integrate_field_lines

    def field(z, x):
        return torch.where(x[:, 0] < 0.5, 1.0, -1.0).to(x.dtype), torch.ones_like(x)

    steps, source = 16, torch.zeros(3, 1, dtype=torch.float64)
    held = FieldLineSampler(steps=steps)(field, source, 1.0, forward_only=True)
    climbed = math.ceil(0.5 * steps)  # Euler steps of dz = 1/16 until x >= 0.5
    assert torch.allclose(held.x, torch.full_like(source, climbed / steps), atol=1e-12, rtol=0)
    assert held.info["guarded"] == 3 * (steps - climbed) and held.info["backward"] == 3
    clamped = FieldLineSampler(steps=steps)(field, source, 1.0, forward_only=False, continue_outside=False)
    assert clamped.x.abs().min() > 1e5 and clamped.info["guarded"] == 3 * (steps - climbed)
    as_velocity = FieldAsVelocity(SimpleNamespace(field_output=field, L=1.0), min_fz=1e-7)
    ode = as_velocity.sample(source, method="euler", steps=steps)
    direct = integrate_field_lines(field, source, 1.0, steps=steps, eps=0.0, nonpositive_fz="hold")
    assert torch.equal(ode.x, direct.x) and ode.info["invalid"] == direct.info["guarded"]
    with pytest.raises(ValueError, match="nonpositive_fz must be one of"):
        FieldLineSampler(nonpositive_fz="skip")


@pytest.mark.parametrize("dim", [2, 784])
def test_points_far_from_every_charge_get_a_finite_unit_direction(dim):
    """At distances 1e1..1e6 from all charges (where every pair's density or kernel underflows) the direction of
    every exact field is finite and of unit length. The forward-only fields equal their float64 values there within
    1e-4 (the posterior's weights leave out the common ||x||^2, which would swamp the differences between pairs);
    Coulomb's direction far away is the small difference of the two plates' fields, so in float32 it is compared
    within 1e-3 up to r = 1e3 only."""
    from lightning_fm.fields import CoulombField, ForwardOnlyField, StrongInteractionField
    from lightning_fm.paths import BrownianBridgePath, LinearPath

    generator = torch.Generator().manual_seed(0)
    x0, x1 = torch.randn(32, dim, generator=generator), torch.randn(32, dim, generator=generator) + 2
    directions = torch.randn(4, dim, generator=generator)
    radii = torch.tensor([1e1, 1e3, 1e5, 1e6]).repeat_interleave(4)
    x = radii[:, None] * (directions / directions.norm(dim=1, keepdim=True)).repeat(4, 1)
    z = torch.linspace(0.1, 0.9, len(x))
    fields = [
        (ForwardOnlyField(LinearPath(0.1)), 1e6),
        (ForwardOnlyField(BrownianBridgePath(0.5)), 1e6),
        (StrongInteractionField(), 1e6),
        (StrongInteractionField(exact=False), 1e6),
        (CoulombField(), 1e3),
        (CoulombField(separate_normalization=True, gamma=5), 1e3),
    ]
    for field, compared in fields:
        nz, nx = field.direction(z, x, x0, x1)
        assert torch.isfinite(nz).all() and torch.isfinite(nx).all(), field
        assert torch.allclose(nz.square() + nx.square().sum(1), torch.ones_like(nz), atol=1e-5), field
        nz64, nx64 = field.direction(z.double(), x.double(), x0.double(), x1.double())
        near = radii <= compared
        tolerance = 1e-4 if compared > 1e3 else 1e-3
        assert torch.allclose(nz[near].double(), nz64[near], atol=tolerance), field
        assert torch.allclose(nx[near].double(), nx64[near], atol=tolerance), field


@pytest.mark.parametrize(
    "every_n_train_steps, every_n_minutes, saved",
    [(1000, 10, [4, 8, 12]), (5, 10, [4, 5, 9, 10, 12]), (1000, None, [12])],
)
def test_last_checkpoint_also_every_n_minutes_of_a_fake_clock(
    tmp_path, monkeypatch, every_n_train_steps, every_n_minutes, saved
):
    """``every_n_minutes``: last.ckpt after the first step ending that long after the last checkpoint, beside the step
    interval (Lightning's ModelCheckpoint takes one trigger only). A fake clock: 3 minutes per optimiser step."""
    from types import SimpleNamespace

    from lightning.pytorch import Trainer
    from lightning.pytorch.demos.boring_classes import BoringModel

    from lightning_fm.callbacks import checkpoints
    from lightning_fm.callbacks.checkpoints import CrashSafeModelCheckpoint

    callback = CrashSafeModelCheckpoint(every_n_train_steps=every_n_train_steps, every_n_minutes=every_n_minutes)
    trainer = Trainer(
        max_steps=12,
        callbacks=[callback],
        logger=False,
        default_root_dir=tmp_path,
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    monkeypatch.setattr(checkpoints, "time", SimpleNamespace(monotonic=lambda: 180.0 * trainer.global_step))
    written, write_last = [], callback.write_last
    monkeypatch.setattr(callback, "write_last", lambda t, **kw: (written.append(t.global_step), write_last(t, **kw)))
    trainer.fit(BoringModel())
    assert written == saved
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 12


def test_every_n_minutes_must_be_positive():
    from lightning_fm.callbacks.checkpoints import CrashSafeModelCheckpoint

    for bad in (0, -1, True, "10"):
        with pytest.raises(ValueError, match="every_n_minutes"):
            CrashSafeModelCheckpoint(every_n_minutes=bad)
