"""``python -m lightning_fm duality -c configs/toy/duality.yaml [--out DIR] [--max_steps N] [--seed S]``

The duality experiment (docs/concepts/duality.md#duality, docs/concepts/checks.md#checks): train a CFM model and its
dual, a forward-only IFM model, on the same data, path, coupling and seed; check every identity that links them; convert
each trained model into the other; show with the exact EFM field why general IFM is larger than CFM; write a report a
researcher can read without the code.

Output directory (``<root_dir>/version_<n>/``, or ``--out DIR``): ``report.md`` (tables of every check with value,
tolerance, kind, pass/fail and a plain-language explanation), ``report.json`` (the same, machine-readable),
``duality.png`` (trajectories, samples, EFM field lines), ``cfm.ckpt`` / ``ifm.ckpt`` (EMA weights; reload with
``CFMModule.load_from_checkpoint`` / ``ForwardOnlyIFMModule.load_from_checkpoint``), ``cfm_floor.ckpt`` (the second
CFM network, seed + 1, of C13's noise floor: ``checks.noise_floor``), and the CSV logs of every fit.

The config is read by jsonargparse, like the ``fit`` configs: components are ``{class_path, init_args}`` specs, and
the schema, with every default, is the signature of :class:`DualityExperiment`: ``seed``, ``root_dir``,
``num_threads``, ``L``, ``path`` (a ``GaussianPath``), ``coupling`` (a ``Coupling``), ``backbone`` (an ``MLP``; its
``data_shape``, left null, is the data's; the IFM copy is wrapped in a ``FieldHead``), ``data`` (a
``ToyDataModule``; its ``steps_per_epoch`` is derived, ``min(train.val_every_n_steps, train.max_steps)``, and may not
be set), ``train``, ``checks`` and ``efm`` (the typed groups of :mod:`.config`), ``sample_steps`` (Euler steps of
every sampler). A value of the wrong type or an unknown key is a parser error naming the key; ``--print_config``
prints the resolved config (which ``-c`` reads back), ``--help`` lists every key. On the command line, ``--max_steps
N`` is short for ``--train.max_steps N``; ``--seed S`` and ``--out DIR`` (write the report exactly there) are keys
of their own. The components are built with :func:`lightning_fm.utils.spec.build`, from the parsed specs.

In Python: ``DualityExperiment(path=LinearPath(0.1), train={"max_steps": 500}).run(out)``. The functions below
(:func:`build_models`, :func:`train`, :func:`heldout`, :func:`run`) read the plain-dict config
:attr:`DualityExperiment.config`; ``DEFAULTS`` is that dict for the defaults.

The report (``report.md``, ``report.json``) is written by :mod:`lightning_fm.experiments.duality.report`, the figure by
:mod:`lightning_fm.experiments.duality.figure`.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ActionConfigFile, ArgumentError, ArgumentParser, Namespace
from jsonargparse.typing import PositiveFloat, PositiveInt

from lightning_fm.couplings import Coupling
from lightning_fm.data import ToyDataModule
from lightning_fm.duality import (
    CheckResult,
    FieldAsVelocity,
    VelocityAsField,
    check_forward_only,
    check_learned_consistency,
    field_from_path,
    path_from_field,
    run_exact_checks,
    run_statistical_checks,
)
from lightning_fm.experiments.duality.config import CheckSettings, EFMSettings, TrainSettings, plain, settings_dict
from lightning_fm.experiments.duality.figure import make_figure
from lightning_fm.experiments.duality.report import write_report
from lightning_fm.fields import CoulombField
from lightning_fm.metrics import wasserstein2
from lightning_fm.models import MLP
from lightning_fm.paths import GaussianPath
from lightning_fm.utils.spec import Buildable, build, describe, to_spec

PROG = "python -m lightning_fm duality"
#: the command line's short spellings of config keys
ALIASES = {"--max_steps": "--train.max_steps"}
#: the groups of typed settings: key -> type
SETTINGS = {"train": TrainSettings, "checks": CheckSettings, "efm": EFMSettings}
#: the component keys (``{class_path, init_args}`` specs)
COMPONENTS = ("path", "coupling", "backbone", "data")


class DualityExperiment:
    """The keys of the duality experiment's config (configs/toy/duality.yaml).

    The signature of ``__init__`` is the schema of the config and holds every default; :attr:`config` is the plain
    dict of the values (components as ``{class_path, init_args}`` specs: objects given in Python are stored as their
    specs), and :meth:`run` trains, checks and writes the report.

    Args:
        seed: seed of both fits (each model starts from it), of the held-out draws and of the checks.
        root_dir: the report goes to ``<root_dir>/version_<n>/`` (the first free ``n``) unless ``--out`` is given.
        num_threads: ``torch.set_num_threads`` (null: torch's default).
        L: plate distance of the IFM model: t = z / L, dx/dz = v / L.
        path: the conditional path of both models.
        coupling: the coupling of both models.
        backbone: the network of the CFM model; the IFM model gets a fresh copy inside a ``FieldHead`` (the f_z
            output); ``data_shape`` left null is the data's.
        data: the data of both fits; ``steps_per_epoch`` is ``min(train.val_every_n_steps, train.max_steps)``.
        train: how each model is trained.
        sample_steps: Euler steps of every sampler (t for CFM, z for IFM).
        checks: the duality checks.
        efm: the EFM counter-example.
    """

    def __init__(
        self,
        seed: int = 0,
        root_dir: str = "runs/duality",
        num_threads: PositiveInt | None = None,
        L: PositiveFloat = 5.0,
        # the components' defaults are specs, as in the YAML; they are only read (hence noqa: B006)
        path: GaussianPath = {  # noqa: B006
            "class_path": "lightning_fm.paths.SineBridgePath",
            "init_args": {"scale": 0.5},
        },
        coupling: Coupling = {  # noqa: B006
            "class_path": "lightning_fm.couplings.OTCoupling",
            "init_args": {"method": "exact"},
        },
        backbone: MLP = {  # noqa: B006
            "class_path": "lightning_fm.models.MLP",
            "init_args": {"width": 64, "depth": 3, "activation": "selu"},
        },
        data: ToyDataModule = {  # noqa: B006
            "class_path": "lightning_fm.data.ToyDataModule",
            "init_args": {
                "source": "8gaussians",
                "target": "moons",
                "batch_size": 256,
                "n_val": 2000,
                "n_test": 2000,
                "seed": 0,
            },
        },
        train: TrainSettings = TrainSettings(),  # noqa: B008 - frozen dataclasses: immutable defaults
        sample_steps: PositiveInt = 100,
        checks: CheckSettings = CheckSettings(),  # noqa: B008
        efm: EFMSettings = EFMSettings(),  # noqa: B008
    ) -> None:
        if not float(L) > 0:
            raise ValueError(f"duality config: L must be > 0, got {L}")
        components = dict(zip(COMPONENTS, (path, coupling, backbone, data)))
        for key, value in components.items():
            if isinstance(value, Buildable):
                components[key] = to_spec(value)
            elif not (isinstance(value, dict) and "class_path" in value):
                raise TypeError(f"duality config: {key} must be a {{class_path, init_args}} spec, got {value!r}")
        settings = {
            key: settings_dict(cls, value, key) for (key, cls), value in zip(SETTINGS.items(), (train, checks, efm))
        }
        if settings["train"]["max_steps"] < 1:
            raise ValueError(f"duality config: train.max_steps must be >= 1, got {settings['train']['max_steps']}")
        #: the plain-dict config (specs and settings as dicts) that the functions of this module read
        self.config: dict[str, Any] = plain(
            {
                "seed": seed,
                "root_dir": str(root_dir),
                "num_threads": num_threads,
                "L": float(L),
                **components,
                "train": settings["train"],
                "sample_steps": sample_steps,
                "checks": settings["checks"],
                "efm": settings["efm"],
            }
        )

    def run(self, out: str | Path | None = None, config_file: str = "(defaults)") -> Path:
        """Run the experiment, write the report to ``out`` (default: ``<root_dir>/version_<n>``); return (and
        print) the path of ``report.md``. ``config_file`` is named in the report."""
        return run(self.config, out, config_file)


def steps_per_epoch(val_every_n_steps: int, max_steps: int) -> int:
    """The data's ``steps_per_epoch``: an epoch ends at each validation (and at the end of a shorter fit)."""
    return min(int(val_every_n_steps), int(max_steps))


def parser() -> ArgumentParser:
    """The parser of ``python -m lightning_fm duality``: ``-c``/``--config``, ``--print_config``, ``--out`` and the
    keys of :class:`DualityExperiment` (``--max_steps`` is mapped to ``--train.max_steps`` by :func:`parse_args`)."""
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1], exit_on_error=False)
    p.add_argument(
        "-c", "--config", action=ActionConfigFile, help="YAML config (the keys below; e.g. configs/toy/duality.yaml)"
    )
    p.add_argument(
        "--out", type=str | None, default=None, help="write the report exactly here (default: <root_dir>/version_<n>)"
    )
    p.add_class_arguments(DualityExperiment, None, fail_untyped=True)
    p.link_arguments(
        ("train.val_every_n_steps", "train.max_steps"), "data.init_args.steps_per_epoch", compute_fn=steps_per_epoch
    )
    return p


def expand_aliases(args: list[str]) -> list[str]:
    """``args`` with the short spellings of :data:`ALIASES` (``--max_steps N``, ``--max_steps=N``) written out."""
    out = []
    for arg in args:
        name, eq, value = arg.partition("=")
        out.append(ALIASES[name] + eq + value if name in ALIASES else arg)
    return out


def parse_args(args: list[str]) -> tuple[dict[str, Any], Namespace]:
    """Parse the command line: the keyword arguments of :class:`DualityExperiment` (plain dicts, specs as
    ``{class_path, init_args}``) and the whole namespace (``config``, ``out``). ``--help`` and ``--print_config``
    print and exit 0; an error raises jsonargparse's ``ArgumentError``."""
    args = expand_aliases(list(args))
    ns = parser().parse_args(args)
    if sets_steps_per_epoch(args, ns):
        raise ArgumentError(
            None,
            "data.init_args.steps_per_epoch is derived: min(train.val_every_n_steps, "
            "train.max_steps); set those instead",
        )
    cfg = ns.clone()
    for key in ("config", "out", "__path__"):
        cfg.pop(key, None)
    kwargs = plain(cfg.as_dict())
    kwargs["data"].get("init_args", {}).pop("steps_per_epoch", None)  # derived, set by train()
    return kwargs, ns


def sets_steps_per_epoch(args: list[str], ns: Namespace) -> bool:
    """Whether the command line ``args`` or a ``-c`` file sets the data's ``steps_per_epoch`` (the parser's link
    replaces a given value without a word, so it is looked for here)."""
    for before, arg in zip([""] + args, args):
        if "steps_per_epoch" in arg and (arg.startswith("--data") or before.startswith("--data")):
            return True
    for path in ns.get("config") or []:
        if path is None:
            continue
        data = (yaml.safe_load(Path(str(path.absolute)).read_text()) or {}).get("data")
        if isinstance(data, dict) and "steps_per_epoch" in {**data, **(data.get("init_args") or {})}:
            return True
    return False


def config_files(ns: Namespace) -> str:
    """The ``-c`` files as given (``"(defaults)"`` when none)."""
    files = [str(f) for f in (ns.get("config") or []) if f is not None]
    return " -c ".join(files) if files else "(defaults)"


def __getattr__(name: str) -> Any:
    if name == "DEFAULTS":  # the schema's defaults as the plain dict the functions of this module read
        return DualityExperiment().config
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def output_dir(cfg: dict, out: str | Path | None) -> Path:
    if out:
        path = Path(out)
    else:
        root = Path(cfg["root_dir"])
        n = 0
        while (root / f"version_{n}").exists():
            n += 1
        path = root / f"version_{n}"
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- training --------------------------------------------------------------------------------------------------
def build_datamodule(cfg: dict):
    """The data of ``cfg`` (its spec, built with ``steps_per_epoch`` = :func:`steps_per_epoch` of ``cfg["train"]``)."""
    spec, tc = cfg["data"], cfg["train"]
    init_args = {
        **(spec.get("init_args") or {}),
        "steps_per_epoch": steps_per_epoch(tc["val_every_n_steps"], tc["max_steps"]),
    }
    return build({**spec, "init_args": init_args})


def build_backbone(cfg: dict, data_shape) -> torch.nn.Module:
    """A fresh network of ``cfg["backbone"]`` (its spec; a ``data_shape`` left out or null is ``data_shape``)."""
    spec = cfg["backbone"]
    init_args = dict(spec.get("init_args") or {})
    if init_args.get("data_shape") is None:
        init_args["data_shape"] = list(data_shape)
    return build({**spec, "init_args": init_args})


def optimiser(cfg: dict) -> tuple[Any, Any]:
    """The optimiser and schedule factories of ``cfg["train"]``: Adam at ``lr``; ``CosineDecay`` to 0 over the
    run's ``max_steps`` (``lr_schedule: cosine``) or none (``constant``)."""
    from lightning_fm.utils.schedules import CosineDecay

    tc = cfg["train"]
    schedule = CosineDecay if tc.get("lr_schedule", "constant") == "cosine" else None
    return functools.partial(torch.optim.Adam, lr=tc["lr"]), schedule


def build_cfm(cfg: dict, seed: int | None = None):
    """A CFM model of ``cfg`` whose network is initialised after seeding with ``seed`` (default ``cfg["seed"]``)."""
    from lightning.pytorch import seed_everything

    from lightning_fm.modules import CFMModule
    from lightning_fm.sampling import ODESampler

    optimizer, lr_scheduler = optimiser(cfg)
    data_shape = build_datamodule(cfg).data_shape
    seed_everything(cfg["seed"] if seed is None else seed, verbose=False)
    return CFMModule(
        backbone=build_backbone(cfg, data_shape),
        path=build(cfg["path"]),
        coupling=build(cfg["coupling"]),
        sampler=ODESampler("euler", cfg["sample_steps"]),
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
    )


def build_models(cfg: dict):
    """The CFM model and its dual forward-only IFM model: same path, coupling, backbone shape, optimiser, schedule,
    sampler."""
    from lightning.pytorch import seed_everything

    from lightning_fm.models import FieldHead
    from lightning_fm.modules import ForwardOnlyIFMModule
    from lightning_fm.sampling import FieldLineSampler

    optimizer, lr_scheduler = optimiser(cfg)
    data_shape = build_datamodule(cfg).data_shape
    cfm = build_cfm(cfg)
    seed_everything(cfg["seed"], verbose=False)
    ifm = ForwardOnlyIFMModule(
        backbone=FieldHead(build_backbone(cfg, data_shape)),
        path=build(cfg["path"]),
        L=cfg["L"],
        coupling=build(cfg["coupling"]),
        sampler=FieldLineSampler("euler", cfg["sample_steps"]),
        optimizer=optimizer,
        lr_scheduler=lr_scheduler,
    )
    return cfm, ifm


def train(module, name: str, cfg: dict, out: Path, seed: int | None = None) -> dict:
    """Fit ``module`` in-process on CPU with EMA and a :class:`DualityCheck`; validate the EMA weights. ``seed``
    (default ``cfg["seed"]``) seeds the fit (the data's stream has its own seed, ``data.init_args.seed``)."""
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import EMAWeightAveraging
    from lightning.pytorch.loggers import CSVLogger

    from lightning_fm.callbacks import DualityCheck

    tc = cfg["train"]
    seed = cfg["seed"] if seed is None else seed
    seed_everything(seed, verbose=False)
    data = build_datamodule(cfg)
    check = DualityCheck(every_n_steps=cfg["checks"]["every_n_steps"], L=cfg["L"], seed=cfg["seed"])
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=tc["max_steps"],
        gradient_clip_val=tc["gradient_clip_val"],
        log_every_n_steps=tc["log_every_n_steps"],
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_model_summary=False,
        enable_progress_bar=tc["progress_bar"],
        logger=CSVLogger(str(out), name=name, version=""),
        callbacks=[EMAWeightAveraging(decay=tc["ema_decay"]), check],
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=data)
    fit_seconds = time.perf_counter() - start
    validated = [step for step, stage, _ in check.history if stage == "validation"]
    if validated and validated[-1] == trainer.global_step and "val/w2" in trainer.callback_metrics:
        metrics = dict(trainer.callback_metrics)  # the fit ended on a validation of the EMA weights: reuse it
    else:
        metrics = trainer.validate(module, datamodule=data, verbose=False)[0]
    metrics = {k: v for k, v in metrics.items() if k.startswith("val/")}
    trainer.save_checkpoint(str(out / f"{name}.ckpt"), weights_only=False)  # whole (the EMA weights swapped in)
    module.eval()
    return {
        "seed": seed,
        "steps": trainer.global_step,
        "fit_seconds": fit_seconds,
        "steps_per_second": trainer.global_step / fit_seconds,
        "val": {k: float(v) for k, v in metrics.items()},
        "callback_overhead": check.overhead,
        "callback_seconds": check.seconds,
        "callback_exact_failures": len(check.failures),
        "callback_last": [r.name for r in check.results],
        "datamodule": data,
    }


# -- checks after training -------------------------------------------------------------------------------------
MAX_SLOPE = 10.0  # |dx/dz| = |v|/L above which a learned field is called steep (an untrained network)


def well_posed_lines(field_fn, times, trajectory, flag_fz: float = 1e-3, max_slope: float = MAX_SLOPE):
    """``(B,)`` bool: the recorded lines along which the field kept ``f_z > flag_fz`` and ``|f_x|/f_z <= max_slope``
    at every evaluated point (``times``: z values)."""
    traj, z = trajectory[:-1], times[:-1]
    k, b = traj.shape[:2]
    with torch.no_grad():
        fz, fx = field_fn(z[:, None].expand(k, b).reshape(-1), traj.reshape(k * b, *traj.shape[2:]))
    fz = torch.nan_to_num(fz, nan=-1.0)
    slope = fx.flatten(1).norm(dim=1) / fz.clamp_min(torch.finfo(fz.dtype).tiny)
    good = (fz > flag_fz) & (slope <= max_slope)
    return good.reshape(k, b).all(0)


def sample_agreement(a, b, name: str, well_posed, tolerance: float = 1e-5, **details) -> CheckResult:
    """C5 on whole samples: ``max |a - b| / (1 + max |a|)`` (float32 tolerance 1e-5).

    Exact when the field is well posed on every line (``well_posed``: ``f_z > 1e-3`` and ``|dx/dz| <= 10`` all
    along): then only rounding separates the two samplers. Otherwise (an untrained or not forward-only network: a
    steep flow amplifies the rounding, and ``v = L f_x/f_z`` is huge or undefined where ``f_z`` is small) the row
    is a diagnostic; the per-step identity stays exact (the "each Euler step" rows).
    """
    finite = torch.isfinite(a).flatten(1).all(1) & torch.isfinite(b).flatten(1).all(1)
    ok = well_posed & finite
    details = {"ill_posed_lines": int((~ok).sum()), "lines": int(a.shape[0]), **details}
    if not bool(finite.any()):
        return CheckResult(name, float("nan"), tolerance, False, "diagnostic", details)
    diff = (a[finite] - b[finite]).abs().max()
    value = float(diff / (1 + a[finite].abs().max()))
    kind = "exact" if bool(ok.all()) else "diagnostic"
    return CheckResult(name, value, tolerance, bool(value <= tolerance), kind, {"max_abs": float(diff), **details})


def heldout(cfg: dict, datamodule, module, g: torch.Generator):
    """Held-out (test-stream) pairs, coupled in training-size batches, and points ``(t, x_t)`` of the path."""
    batch = datamodule.eval_set("test")
    x0, x1 = batch["x0"], batch["x1"]
    size = datamodule.hparams.batch_size  # the training batch size
    pairs = [tuple(module.coupling(x0[s : s + size], x1[s : s + size]))[:2] for s in range(0, len(x0), size)]
    c0, c1 = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    t = torch.rand(len(c0), generator=g)
    noise = torch.randn(c0.shape, generator=g)
    xt = module.path.sample(c0, c1, t, noise=noise).xt
    return batch, c0, c1, t, xt


def learned_checks(cfm, ifm, cfg: dict, x_source, c0, c1, g) -> tuple[list[CheckResult], dict]:
    """Conversions (CFM -> VelocityAsField, IFM -> FieldAsVelocity) and the networks' own exact identities."""
    from lightning_fm.duality.checks.learned import euler_step_identity, learned_cfm_checks, learned_ifm_checks

    L, steps = float(cfg["L"]), cfg["sample_steps"]
    with torch.no_grad():
        cfm_samples = cfm.sample(x_source, steps=steps, method="euler", record=True)
        as_field = VelocityAsField(cfm, L).sample(x_source, steps=steps, method="euler")
        ifm_samples = ifm.sample(x_source, steps=steps, method="euler", record=True)
        as_velocity = FieldAsVelocity(ifm).sample(x_source, steps=steps, method="euler")
    cfm_field = VelocityAsField(cfm, L).field_output
    cfm_z = cfm_samples.times * L  # the CFM trajectory at t is the field line at z = t L
    n = cfg["checks"]["n_points"]  # lines of the per-step identity (all lines for the samples)
    results = [
        euler_step_identity(
            cfm.velocity,
            cfm_field,
            cfm_z,
            cfm_samples.trajectory[:, :n],
            L,
            "C5 CFM -> VelocityAsField: each Euler step in z = in t",
        ),
        sample_agreement(
            cfm_samples.x,
            as_field.x,
            "C5 CFM -> VelocityAsField: z-Euler samples = CFM samples",
            well_posed_lines(cfm_field, cfm_z, cfm_samples.trajectory),
            backward_lines=as_field.info["backward"],
        ),
        euler_step_identity(
            FieldAsVelocity(ifm).velocity,
            ifm.field_output,
            ifm_samples.times,
            ifm_samples.trajectory[:, :n],
            L,
            "C5 IFM -> FieldAsVelocity: each Euler step in t = in z",
        ),
        sample_agreement(
            ifm_samples.x,
            as_velocity.x,
            "C5 IFM -> FieldAsVelocity: t-Euler samples = IFM samples",
            well_posed_lines(ifm.field_output, ifm_samples.times, ifm_samples.trajectory),
            guarded=as_velocity.info["invalid"],
        ),
    ]
    results += learned_cfm_checks(cfm, c0[:n], c1[:n], L, steps, g, step_identity=False)  # C5: the rows above
    results += learned_ifm_checks(ifm, c0[:n], c1[:n], L, steps, g, step_identity=False)
    # Phi(path) on this experiment's data: every point between the plates has E_z > 0
    field = field_from_path(ifm.path, L)
    pts_t = 0.01 + 0.98 * torch.rand(len(c0), generator=g)
    x_on = ifm.path.sample(c0, c1, pts_t, noise=torch.randn(c0.shape, generator=g)).xt
    x_off = x_on + 3 * torch.randn(c0.shape, generator=g)
    guard = check_forward_only(field, torch.cat([pts_t, pts_t]) * L, torch.cat([x_on, x_off]), c0, c1)
    results.append(replace(guard, name="C9 forward-only guard of Phi(path) on the data"))
    samples = {"cfm": cfm_samples, "ifm": ifm_samples, "as_field": as_field.x, "as_velocity": as_velocity.x}
    return results, samples


#: the labels of the fits in the report (the noise-floor CFM only when ``checks.noise_floor``)
MODEL_LABELS = {"cfm": "CFM", "ifm": "forward-only IFM", "cfm_floor": "noise-floor CFM"}


def model_label(name: str, fits: dict) -> str:
    label = MODEL_LABELS.get(name, name)
    return f"{label} (seed {fits[name]['seed']})" if name == "cfm_floor" else label


def model_rows(fits: dict) -> list[CheckResult]:
    rows = []
    for name in fits:
        label = model_label(name, fits)
        val = fits[name]["val"]
        floor = val.get("val/w2_floor", float("nan"))
        w2, scale = val["val/w2"], max(0.3, 2 * floor)
        rows.append(
            CheckResult(
                f"val/w2 of the {label} model (EMA)",
                w2,
                scale,
                bool(w2 <= scale),
                "diagnostic",
                {"w2_floor": floor, "nfe": val.get("val/nfe")},
            )
        )
    return rows


def noise_floor_rows(cfm, cfm_floor, t, x, x_source, cfg: dict, w2_tol: float, seed: int) -> list[CheckResult]:
    """C13's two metrics between two CFM networks trained with different seeds (``cfm``: seed ``cfg["seed"]``,
    ``cfm_floor``: ``seed``): held-out relative L2 of their velocities at ``(t, x)`` and W2 between their samples from
    ``x_source``. The scale of "agree" for the CFM vs forward-only IFM rows of C13."""
    from lightning_fm.duality.wrappers import _velocity_fn
    from lightning_fm.utils.tensors import as_time

    with torch.no_grad():
        t = as_time(t, x)
        v, w = _velocity_fn(cfm)(x, t), _velocity_fn(cfm_floor)(x, t)
        a = cfm.sample(x_source, steps=cfg["sample_steps"], method="euler").x
        b = cfm_floor.sample(x_source, steps=cfg["sample_steps"], method="euler").x
    rel = float(((v - w).flatten(1).square().sum() / v.flatten(1).square().sum().clamp_min(1e-300)).sqrt())
    w2 = wasserstein2(a, b)
    label = f"noise floor: CFM vs CFM (seed {cfg['seed']} vs {seed})"
    details = {"seeds": [cfg["seed"], seed], "n": len(x)}
    rel_tol = cfg["checks"]["c13_rel_tolerance"]
    return [
        CheckResult(f"{label} (rel L2)", rel, rel_tol, bool(rel <= rel_tol), "diagnostic", details),
        CheckResult(f"{label} (W2)", w2, w2_tol, bool(w2 <= w2_tol), "diagnostic", {**details, "n": len(x_source)}),
    ]


# -- EFM -------------------------------------------------------------------------------------------------------
def efm_checks(cfg: dict, batch: dict, g: torch.Generator) -> tuple[list[CheckResult], dict]:
    """The exact Coulomb field of the same data: lines leave the slab, E_z < 0 behind the plates, Psi undefined."""
    from lightning_fm.sampling import integrate_field_lines

    L, ec = float(cfg["L"]), cfg["efm"]
    k = ec["n_charges"]
    P, Q = batch["x0"][:k].double(), batch["x1"][:k].double()
    field = CoulombField(L)
    n = ec["n_points"]
    src, tgt = batch["x0"][k : k + n].double(), batch["x1"][k : k + n].double()
    if len(src) < 2:
        src, tgt = P, Q
    half = len(src) // 2
    depth = 0.5 * L * torch.rand(len(src), generator=g, dtype=torch.float64)
    z_behind = torch.cat([-depth[:half], L + depth[half:]])
    x_behind = torch.cat([src[:half], tgt[half:]])
    behind = check_forward_only(field, z_behind, x_behind, P, Q, expect_forward_only=False)
    results = [replace(behind, name="C9 EFM: E_z <= 0 behind the plates")]
    s = 0.01 + 0.98 * torch.rand(len(src), generator=g, dtype=torch.float64)
    x_in = (1 - s)[:, None] * src + s[:, None] * tgt + torch.randn(src.shape, generator=g, dtype=torch.float64)
    inside = check_forward_only(field, s * L, x_in, P, Q, expect_forward_only=True)
    results.append(replace(inside, name="C9 EFM: E_z <= 0 between the plates", kind="diagnostic"))
    # flux leaving every source charge backward: directions on a small sphere around the charges
    m = min(64, k)
    omega = torch.randn(m * 32, 3, generator=g, dtype=torch.float64)
    omega = omega / omega.norm(dim=1, keepdim=True)
    r0 = 1e-3
    nz, _ = field.direction(r0 * omega[:, 0], P[:m].repeat_interleave(32, 0) + r0 * omega[:, 1:], P, Q)
    frac = float((nz <= 0).double().mean())
    results.append(
        CheckResult(
            "EFM: flux leaving the source charges backward (z < 0)",
            frac,
            0.0,
            frac > 0,
            "diagnostic",
            {"n_directions": len(nz), "radius": r0},
        )
    )
    # sample lines from the source plate (the EFM sampler): how many run far behind the target plate
    starts = src[: ec["n_lines"]]
    with torch.no_grad():
        lines = integrate_field_lines(
            lambda zz, xx: field.direction(zz, xx, P, Q),
            starts,
            L,
            method="euler",
            steps=cfg["sample_steps"],
            eps=1e-3,
            continue_outside=True,
            record=True,
            max_arc_steps=ec["max_arc_steps"],
            arc_step=L / cfg["sample_steps"],
        )
    z_max = (
        lines.arcs[..., 0].max(0).values
        if lines.arcs is not None
        else torch.full((len(starts),), L, dtype=starts.dtype)
    )
    behind_q = float((z_max > 1.1 * L).double().mean())
    results.append(
        CheckResult(
            "EFM: sample lines running behind the target plate (z > 1.1 L)",
            behind_q,
            0.0,
            behind_q > 0,
            "diagnostic",
            {
                "n_lines": len(starts),
                "crossing": lines.info["crossing"],
                "not_returned": lines.info["not_returned"],
                "z_max": float(z_max.max()),
            },
        )
    )
    try:
        path_from_field(field)
        psi = "defined"
    except ValueError as err:
        psi = str(err)
    return results, {"P": P, "Q": Q, "field": field, "psi": psi}


# -- main ------------------------------------------------------------------------------------------------------
def main(args: list[str] | None = None) -> Path:
    """``python -m lightning_fm duality ARGS``: parse ``args`` (module docstring), run the experiment; return (and
    print) the path of ``report.md``."""
    start = time.perf_counter()
    kwargs, ns = parse_args(list(args or []))
    return run(DualityExperiment(**kwargs).config, ns.out, config_files(ns), start=start)


def run(cfg: dict, out: str | Path | None = None, config_file: str = "(defaults)", start: float | None = None) -> Path:
    """Run the experiment of the plain-dict config ``cfg`` (:attr:`DualityExperiment.config`); write the report to
    ``out`` (default: ``<root_dir>/version_<n>``); return (and print) the path of ``report.md``. ``start``: the
    ``time.perf_counter()`` the wall time counts from (default: now)."""
    start = time.perf_counter() if start is None else start
    if cfg["num_threads"]:
        torch.set_num_threads(int(cfg["num_threads"]))
    out = output_dir(cfg, out)
    timings: dict[str, float] = {}
    cfm, ifm = build_models(cfg)
    models = {"cfm": (cfm, cfg["seed"]), "ifm": (ifm, cfg["seed"])}
    if cfg["checks"].get("noise_floor"):  # a second CFM network, another seed: the scale of C13's "agree"
        models["cfm_floor"] = (build_cfm(cfg, cfg["seed"] + 1), cfg["seed"] + 1)
    fits = {}
    for name, (module, seed) in models.items():
        t0 = time.perf_counter()
        fits[name] = train(module, name, cfg, out, seed=seed)
        timings[f"train {name}"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    L = float(cfg["L"])
    g = torch.Generator().manual_seed(cfg["seed"])
    batch, c0, c1, t, xt = heldout(cfg, fits["cfm"]["datamodule"], cfm, g)
    rows: list[tuple[str, CheckResult]] = [("path", r) for r in run_exact_checks(cfm.path, L)]
    learned, samples = learned_checks(cfm, ifm, cfg, batch["x0"], c0, c1, g)
    rows += [("learned", r) for r in learned]
    timings["exact checks"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows += [("statistical", r) for r in run_statistical_checks(cfm.path, L, n=cfg["checks"]["statistical_n"])]
    timings["statistical checks"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    c13 = check_learned_consistency(cfm, ifm, t, xt, rel_tolerance=cfg["checks"]["c13_rel_tolerance"])
    w2 = wasserstein2(samples["cfm"].x, samples["ifm"].x)  # the two models' samples from the same source points
    w2_tol = cfg["checks"]["c13_w2_tolerance"]
    if w2_tol is None:  # the scale of the models' own errors: the larger of their val/w2
        own = [fits[k]["val"]["val/w2"] for k in ("cfm", "ifm") if math.isfinite(fits[k]["val"]["val/w2"])]
        w2_tol = max(own) if own else 0.1
    c13.append(
        CheckResult(
            "C13 learned consistency (W2)",
            w2,
            w2_tol,
            bool(w2 <= w2_tol),
            "diagnostic",
            {"n": len(batch["x0"]), "steps": cfg["sample_steps"]},
        )
    )
    rows += [("consistency", r) for r in c13]
    if "cfm_floor" in fits:
        cfm_floor, floor_seed = models["cfm_floor"]
        floor = noise_floor_rows(cfm, cfm_floor, t, xt, batch["x0"], cfg, w2_tol, floor_seed)
        rows += [("consistency", r) for r in floor]
    rows += [("consistency", r) for r in model_rows(fits)]
    timings["C13"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    efm_rows, efm = efm_checks(cfg, batch, g)
    rows += [("efm", r) for r in efm_rows]
    timings["EFM"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    make_figure(out / "duality.png", batch["x1"], samples, efm, L)
    timings["figure"] = time.perf_counter() - t0
    extra = {
        "config_file": config_file,
        "path": describe(cfm.path),
        "coupling": repr(cfm.coupling),
        "psi": efm["psi"],
        "timings": timings,
        "wall_seconds": time.perf_counter() - start,
    }
    write_report(out, cfg, rows, fits, extra)
    report = out / "report.md"
    n_fail = sum(r.kind == "exact" and not r.passed for _, r in rows)
    print(
        f"duality: {sum(r.kind == 'exact' for _, r in rows) - n_fail} of "
        f"{sum(r.kind == 'exact' for _, r in rows)} exact identities hold; report: {report}"
    )
    return report
