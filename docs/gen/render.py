"""Render the generated documentation pages from the repository's own files.

Nothing here is hand-typed data: the config catalogue is read from ``configs/**/*.yaml`` and every number on the
results pages from ``benchmarks/results/*.json`` (and ``likelihood_duality.md``). ``pages()`` returns the pages as
``{path inside docs/: text}``; ``docs/gen/pages.py`` hands them to mkdocs-gen-files at build time, and
``docs/gen/readme.py`` writes the README's headline table from ``headline_table()``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"
RESULTS = ROOT / "benchmarks" / "results"
BENCHMARKS = ROOT / "benchmarks"

# ----------------------------------------------------------------------------------------------------------------
# formatting


def fmt(value) -> str:
    """One table cell: floats to 4 significant digits, lists joined, nested dicts inline, None empty."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "NaN"
        if value in (float("inf"), float("-inf")):
            return "∞" if value > 0 else "-∞"
        if value == int(value) and abs(value) < 1e15:
            return str(int(value))
        return f"{value:.4g}"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        if not value:
            return ""
        return " / ".join(fmt(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    text = str(value).strip().replace("\n", " ")
    return text.replace("|", "\\|")


def code(text: str) -> str:
    return f"`{text}`"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def flatten(row: dict, prefix: str = "") -> dict:
    """Nested dicts of a row become ``outer.inner`` columns."""
    flat = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value and not all(isinstance(v, dict) for v in value.values()):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_scalar(value) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def rows_table(rows: list[dict], first: str | None = None) -> str:
    """A list of dicts as a table: the union of their (flattened) keys, columns empty in every row left out."""
    flat = [flatten(r) for r in rows]
    columns: list[str] = []
    for r in flat:
        columns += [k for k in r if k not in columns]
    columns = [c for c in columns if any(fmt(r.get(c)) != "" for r in flat)]
    if first and first in columns:
        columns.remove(first)
        columns.insert(0, first)
    body = [[fmt(r.get(c)) for c in columns] for r in flat]
    return table([code(c) for c in columns], body)


def settings_table(items: dict) -> str:
    return table(["setting", "value"], [[code(k), fmt(v)] for k, v in items.items()])


# ----------------------------------------------------------------------------------------------------------------
# the results pages

# Which page each results file goes on, and what it measures (no numbers here: they all come from the files).
GROUPS = {
    "samples": (
        "Sample quality",
        "What the shipped configs reach, and how the families, solvers, guidance and training recipes compare.",
    ),
    "likelihoods": ("Likelihoods", "Log-likelihoods and bits per dimension of the forward-only families."),
    "torchcfm": ("Against torchcfm", "Side-by-side runs against torchcfm's own code, each in its own environment."),
    "performance": ("Performance", "Start-up, training throughput, framework overhead and the cost of the targets."),
    "other": ("Maintenance", "Checks that a change of the code did not change what it trains."),
}

NOTES = {
    "config_results": (
        "samples",
        "Every config trained end to end through the CLI as shipped (`python -m lightning_fm fit -c CONFIG`), the "
        "final validation of the EMA weights. `val/w2`: exact W2 between the samples of the held-out sources and the "
        "held-out targets; `val/w2_floor`: the same for an independent i.i.d. target sample (what a perfect model "
        "scores). `w2_torchcfm_moons`: the final model mapping torchcfm's own `sample_8gaussians`, scored against its "
        "`sample_moons` (drawn by torchcfm in its own environment), beside the i.i.d. floor of that comparison. Image "
        "rows: `val/fd` is the Frechet distance of the digits classifier's features, `val/fd_floor` the same for as "
        "many training images. `val/nll` (nats) and `val/bpd` come from `HeldOutLikelihood`; `val/crossing` and "
        "`val/not_returned` count field lines that crossed the target plate and never came back. `seconds`: the "
        "whole command. EFM has no density and a moons source none in closed form, so those rows log none.",
    ),
    "quality_vs_nfe_toy": (
        "samples",
        "Each trained toy run sampled with each fixed-step solver at a number of steps; a cell is the exact W2 to the "
        "held-out targets, with the network evaluations the sampler counted in brackets. EFM's lines that cross the "
        "target plate are continued behind it by arclength until they return: that continuation sets its NFE.",
    ),
    "quality_vs_nfe_digits": (
        "samples",
        "The same on the digits runs: a cell is the digits classifier's Frechet distance to the held-out digits, "
        "with the counted network evaluations in brackets.",
    ),
    "reflow": (
        "samples",
        "Reflow ([the guide](../guides/reflow.md)): each teacher, and the students trained on its pairs, sampling the "
        "teacher data's fixed validation sources with Euler at NFE 1, 2, 4, 8 and 100 (`quality`: toys, exact W2 to "
        "the held-out targets; digits, the digits classifier's Frechet distance), beside the straightness of its "
        "100-step lines (`int |v|^2 dt - |x_1 - x_0|^2`, 0 for straight lines). `pairs`: what making each student's "
        "pairs took (`seconds`, the teacher's sampler and its NFE).",
    ),
    "guidance_sweep": (
        "samples",
        "Class-conditional digits (`configs/digits/cfm_conditional.yaml`, `ifm_conditional.yaml`): fixed noise "
        "points, each asked for its held-out digit's class, at guidance scale `guidance` (-1: the unconditional "
        "model, 0: the conditional model). `label_accuracy`: the share the digits classifier reads as the requested "
        "digit. Guidance trades diversity for fidelity: accuracy rises with the scale while the FD grows.",
    ),
    "family_agreement": (
        "samples",
        "Do separately trained CFM, IFM and forward-only IFM digits runs map the same noise point to the same digit? "
        "`same_digit`: the share the classifier reads as the same digit; `pixel_distance`: the mean distance "
        "between the two samples of a point, against the distance of a held-out digit to its nearest held-out "
        "neighbour.",
    ),
    "multi_sample_target": (
        "samples",
        "I-CFM with the single-pair target against the multi-sample target (the IFM superposition over the batch's "
        "pairs). `target_variance`: the mean squared distance of the target to the marginal velocity.",
    ),
    "toy_recipe_ablation": (
        "samples",
        "torchcfm's toy problem and budget, one change of the training recipe at a time, over seeds; W2 of torchcfm's "
        "own samples mapped with Euler steps against its moons. What matters is the learning rate and its decay; "
        "the winner is the shipped `configs/toy/otcfm.yaml`.",
    ),
    "efm_exact_field": (
        "samples",
        "The sampler of `configs/toy/efm.yaml` on the exact Coulomb field of the charges (no network): the reference "
        "crossing rule against the settings a learned field needs, at two plate distances.",
    ),
    "efm_exact_field_digits": (
        "samples",
        "EFM's exact Coulomb field on the digits: the lines that return end on a charge, that is on a training digit "
        "(an exact field of finitely many charges can only copy its charges); the learned field is smooth and "
        "generalises instead.",
    ),
    "time_density_study": (
        "samples",
        "Where the training times are drawn, at equal budget (docs: [time sampling]"
        "(../concepts/flow-matching.md#time-sampling)): each shipped CFM and forward-only IFM config trained with the "
        "uniform time density (the default), logit-normal(0, 1) and the time density of IFM's `Uniform_mixing` "
        "volume (PFGM distances near the data plate, through t = z/L), over seeds. `summary`: mean, sample standard "
        "deviation over seeds and the difference from uniform paired by seed; `wins` marks an arm better than "
        "uniform by more than the larger seed spread. The digits runs take half the shipped schedule.",
    ),
    "efm_lines": (
        "samples",
        "One trained `configs/toy/efm.yaml` model (seed 0, the sampler it shipped with before the fix) on torchcfm's "
        "own 8gaussians points: the lines that went astray, where they crossed the target plate, how high and far "
        "they went, and the share of the training volume at least as far out; beside the exact Coulomb field of the "
        "same points ([the diagnosis](../concepts/interaction-fields.md#lines-astray)).",
    ),
    "efm_stability": (
        "samples",
        "The toy EFM config trained with 3 seeds and 1 or 2 torch threads (and, for two seeds, torch's unvectorised "
        "CPU kernels: another machine's rounding), each model sampled from torchcfm's own 8gaussians points with the "
        "shipped sampler, the rule it replaced and a tighter one: lines flagged as not returned (and stopped by "
        "`max_radius`), returned samples farther than 8 from the origin, W2 of the returned samples to torchcfm's "
        "moons and of all of them; `weight_difference_to_1_thread`: how far each variant's trained weights are from "
        "the 1-thread run of its seed.",
    ),
    "duality_experiment": (
        "samples",
        "The `duality` command (configs/toy/duality.yaml, its `report.json`): a CFM model and its dual forward-only "
        "IFM model trained on the same data, path, coupling and seed; every check C1-C13 with value, tolerance and "
        "kind; C13 (CFM vs IFM) against its noise floor (two CFM networks of different seeds); the EFM "
        "counter-example; and the command's wall time.",
    ),
    "likelihood_duality": (
        "likelihoods",
        "`exact_current`: the exact current of a Gaussian path read through the duality map, against the "
        "closed-form density. `toy_duality`: a trained OT-CFM and its dual forward-only IFM, the log-density of the "
        "same held-out points under each. `digits`: `val/bpd` of the digits CFM and forward-only IFM configs.",
    ),
    "torchcfm_reference": (
        "torchcfm",
        "torchcfm's own OT-CFM, run in its own virtual environment as its 2-D tutorial does, scored on the same "
        "samples as the lightning_fm rows of `config_results`.",
    ),
    "torchcfm_side_by_side": (
        "torchcfm",
        "torchcfm's flow matchers and tutorial loop against lightning_fm's Lightning loop on torchcfm's toy problem, "
        "alternating per seed: training steps a second and W2 of torchcfm's samples.",
    ),
    "unet_vs_torchcfm": (
        "torchcfm",
        "The CIFAR-10 U-Net's training step (forward and backward) against torchcfm's `UNetModelWrapper` of the "
        "same configuration, in alternating rounds.",
    ),
    "ot_cost": (
        "torchcfm",
        "One minibatch OT pairing call against batch size, exact and Sinkhorn, against torchcfm's `OTPlanSampler` on "
        "the same points; times in seconds, `speedup` = torchcfm / lightning_fm.",
    ),
    "startup": (
        "performance",
        "Fresh processes, interleaved repeats: the imports and the default job to the end of its first training step "
        "(stamped by the child) and to its exit.",
    ),
    "train_throughput": (
        "performance",
        "Toy training steps a second of a module in a Lightning `Trainer` against a hand-written PyTorch loop doing "
        "the same work (no EMA, logging or validation on either side).",
    ),
    "image_overhead": (
        "performance",
        "The same comparison with the digits and CIFAR-10 U-Nets (OT-CFM), best of the rounds.",
    ),
    "duality_overhead": (
        "performance",
        "The cost of the DualityCheck callback every recipe ships with (configs/base/): short CLI runs of a toy CFM, "
        "toy forward-only IFM, toy EFM and digits CFM as shipped, `duality/overhead` (seconds in the callback over "
        "seconds of the fit) at the end; the runs check once, after the first step, so this is the one-time cost.",
    ),
    "field_target_cost": (
        "performance",
        "The regression targets of the interaction fields, vectorised against a per-pair Python loop computing the "
        "same numbers (the structure of the reference code's ground truth); times in milliseconds.",
    ),
    "image_config_cost": (
        "performance",
        "Parameters and network FLOPs of each image recipe's training step, and its wall time estimated by scaling "
        "the one published timing of such a run (`reference`). Estimates, not measurements.",
    ),
    "sigkill_resume": (
        "other",
        "The SIGKILL row of the fault table on a shipped config as shipped (`configs/toy/icfm.yaml`: checkpoints "
        "every 1000 steps at the last batch of a 1000-step epoch, validation beside them): a real `kill -9` right "
        "after the step-1000 checkpoint, `--ckpt_path last`, and the largest weight difference to the same run never "
        "interrupted.",
    ),
    "venv_size": (
        "other",
        "A fresh install's size on disk, by `benchmarks/venv_size.sh`: torch from PyPI (CUDA libraries included) "
        "against torch's CPU-only wheel. Where PyTorch's CPU index does not answer, the script takes a local CPU "
        "wheel (the file is named in `source`), and PyPI's torchvision, built for the CUDA torch, does not load beside "
        "it: the default job's failure is that, recorded in `default_job_error`.",
    ),
    "refactor_parity": (
        "other",
        "Shipped configs trained for a few steps by the code before and after a redesign: the metrics and the final "
        "weights must be equal.",
    ),
}


def script_for(stem: str) -> str | None:
    """The benchmark script that writes ``<stem>.json``: the longest ``benchmarks/*.py`` name that begins it."""
    names = sorted((p.stem for p in BENCHMARKS.glob("*.py")), key=len, reverse=True)
    for name in names:
        if stem == name or stem.startswith(name + "_"):
            return f"benchmarks/{name}.py"
    return None


def render_quality_vs_nfe(data: list) -> str:
    out = []
    for run in data:
        steps = sorted({r["steps"] for r in run["rows"]})
        methods = list(dict.fromkeys(r["method"] for r in run["rows"]))
        cells = {(r["method"], r["steps"]): r for r in run["rows"]}
        body = []
        for method in methods:
            row = [code(method)]
            for s in steps:
                r = cells.get((method, s))
                row.append("" if r is None else f"{fmt(r['metric'])} ({fmt(r['nfe'])})")
            body.append(row)
        out.append(
            f"**{code(run['run'])}** ({code(run['module'])}, floor {fmt(run['floor'])}): metric (NFE) per solver "
            "and number of steps\n"
        )
        out.append(table(["solver"] + [f"steps {s}" for s in steps], body))
    return "\n".join(out)


def render_config_results(data: dict) -> str:
    groups: dict[str, list[dict]] = {}
    for key, row in data.items():
        config = row.get("config", key)
        group = Path(config).parent.name
        groups.setdefault(group, []).append({"run": key, **row})
    out = []
    for group, rows in groups.items():
        for r in rows:
            r.pop("config", None)
            r["run"] = code(r["run"])
        out.append(f"**configs/{group}/**\n")
        out.append(rows_table(rows, first="run"))
    return "\n".join(out)


def render_generic(data, level: int = 3) -> str:
    """Scalars as a settings table, lists of dicts and dicts of dicts as tables, nested dicts as subsections."""
    if isinstance(data, list):
        if all(isinstance(x, dict) for x in data):
            return rows_table(data)
        return fmt(data) + "\n"
    out = []
    settings = {k: v for k, v in data.items() if is_scalar(v) or (isinstance(v, list) and all(map(is_scalar, v)))}
    if settings:
        out.append(settings_table(settings))
    for key, value in data.items():
        if key in settings:
            continue
        heading = "#" * level + f" `{key}`\n"
        if isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
            out += [heading, rows_table(value)]
        elif isinstance(value, dict) and value and all(isinstance(x, dict) for x in value.values()):
            rows = [{"key": code(str(k)), **v} for k, v in value.items()]
            out += [heading, rows_table(rows, first="key")]
        elif isinstance(value, dict):
            out += [heading, render_generic(value, level + 1)]
        else:
            out += [heading, fmt(value) + "\n"]
    return "\n".join(out)


RENDERERS = {
    "config_results": render_config_results,
    "quality_vs_nfe_toy": render_quality_vs_nfe,
    "quality_vs_nfe_digits": render_quality_vs_nfe,
}


def render_result(path: Path) -> str:
    stem = path.stem
    data = json.loads(path.read_text())
    group, note = NOTES.get(stem, ("other", ""))
    script = script_for(stem)
    out = [f"## {stem} {{#{stem}}}\n"]
    if note:
        out.append(note + "\n")
    source = f"Written by `{script}`" if script else "Written by a benchmark script"
    out.append(f"{source} to `benchmarks/results/{path.name}`.\n")
    if isinstance(data, dict) and isinstance(data.get("command"), str):
        out.append(f"```bash\n{data['command']}\n```\n")
    elif script:
        out.append(f"```bash\npython {script}\n```\n")
    renderer = RENDERERS.get(stem)
    if renderer is not None:
        # settings beside the rows, then the rows in their own layout
        if isinstance(data, dict):
            out.append(render_generic({k: v for k, v in data.items() if is_scalar(v)}))
        out.append(renderer(data))
    else:
        out.append(render_generic(data))
    png = path.with_suffix(".png")
    if png.exists():
        out.append(f"![{stem}]({png.name})\n")
    md = path.with_suffix(".md")
    if md.exists():
        # the script's own markdown report, its headings moved below this section's
        text = re.sub(r"^(#+) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", md.read_text(), flags=re.M)
        out.append(f"### The report `benchmarks/results/{md.name}`\n\n{text.strip()}\n")
    return "\n".join(out)


def result_files() -> list[Path]:
    return sorted(RESULTS.glob("*.json"))


def results_pages() -> dict[str, str]:
    sections: dict[str, list[str]] = {g: [] for g in GROUPS}
    index_rows: dict[str, list[list[str]]] = {g: [] for g in GROUPS}
    for path in result_files():
        group = NOTES.get(path.stem, ("other", ""))[0]
        sections[group].append(render_result(path))
        script = script_for(path.stem) or ""
        index_rows[group].append(
            [f"[`{path.name}`]({group}.md#{path.stem})", f"`{script}`" if script else "", GROUPS[group][0]]
        )
    pages = {}
    for group, (title, blurb) in GROUPS.items():
        if not sections[group]:
            continue
        pages[f"results/{group}.md"] = (
            f"# {title}\n\n{blurb}\n\n"
            '!!! note "Generated"\n    This page is generated from `benchmarks/results/` by `docs/gen/render.py` '
            "when the site is built: every number on it is read from those files.\n\n" + "\n".join(sections[group])
        )
    listing = [row for g in GROUPS for row in index_rows[g]]
    pages["results/index.md"] = (
        "# Results\n\n"
        "Every benchmark script writes a JSON file to `benchmarks/results/` (and prints a markdown table); these "
        "pages are built from those files when the site is built, so they show exactly what was measured. Unless a "
        "file says otherwise, runs are on CPU, one thread per process, seed 0; no GPU timings have been measured.\n\n"
        "## Headline\n\n"
        "The shipped configs trained end to end (from `config_results.json`; the same table is in the README):\n\n"
        + headline_table()
        + "\n## Every results file\n\n"
        + table(["file", "written by", "page"], listing)
        + "\nTo refresh a file, rerun its script (see [Benchmarks](../guides/benchmarks.md)), then rebuild the site "
        "and the README's table (`python docs/gen/readme.py`).\n"
    )
    return pages


def png_files() -> list[Path]:
    return sorted(RESULTS.glob("*.png"))


# ----------------------------------------------------------------------------------------------------------------
# the README's headline table

HEADLINE = [
    "configs/toy/otcfm.yaml",
    "configs/toy/icfm.yaml",
    "configs/toy/ifm_exact.yaml",
    "configs/toy/forward_only_ifm.yaml",
    "configs/toy/efm.yaml",
    "configs/digits/cfm.yaml",
    "configs/digits/otcfm.yaml",
    "configs/digits/ifm.yaml",
    "configs/digits/forward_only_ifm.yaml",
    "configs/digits/efm.yaml",
    "configs/transfer/digits_2_to_3.yaml",
]


def headline_table() -> str:
    data = json.loads((RESULTS / "config_results.json").read_text())
    body = []
    for config in HEADLINE:
        row = data.get(config)
        if row is None:
            continue
        w2 = f"{row['val/w2']:.3f} ({row['val/w2_floor']:.3f})"
        fd = "" if row.get("val/fd") is None else f"{row['val/fd']:.2f} ({row['val/fd_floor']:.2f})"
        if row.get("val/nll") is not None:
            ll = f"{row['val/nll']:.3f} nats"
        elif row.get("val/bpd") is not None:
            ll = f"{row['val/bpd']:.3f} bpd"
        else:
            ll = ""
        minutes = f"{row['seconds'] / 60:.1f}"
        body.append([code(config), str(row["steps"]), w2, fd, fmt(row["val/nfe"]), ll, minutes])
    header = ["config", "steps", "val/w2 (floor)", "classifier FD (floor)", "NFE", "held-out NLL", "minutes"]
    return table(header, body)


# ----------------------------------------------------------------------------------------------------------------
# the config catalogue

ROLES = [
    ("model", ("model",)),
    ("backbone", ("model", "backbone")),
    ("path", ("model", "path")),
    ("field", ("model", "field")),
    ("coupling", ("model", "coupling")),
    ("volume", ("model", "volume")),
    ("sampler", ("model", "sampler")),
    ("data", ("data",)),
]


def load_yaml(path: Path):
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return {}


def resolve(node, base: Path):
    """A value that names another YAML file (jsonargparse reads it in place) is read from that file."""
    if isinstance(node, str) and node.endswith((".yaml", ".yml")):
        target = (base / node) if not Path(node).is_absolute() else Path(node)
        if not target.exists():
            target = ROOT / node
        if target.exists():
            return load_yaml(target)
    return node


def lookup(config: dict, keys: tuple, base: Path):
    node = config
    for key in keys:
        node = resolve(node, base)
        if not isinstance(node, dict):
            return None
        if key != keys[0] and "init_args" in node and key not in node:
            node = node.get("init_args") or {}
            node = resolve(node, base)
        node = node.get(key) if isinstance(node, dict) else None
    return resolve(node, base)


def class_name(node) -> str:
    if isinstance(node, dict) and "class_path" in node:
        return node["class_path"].rsplit(".", 1)[-1]
    if isinstance(node, str):
        return node.rsplit(".", 1)[-1]
    return ""


def arguments(node) -> str:
    """A component's scalar ``init_args`` as ``name=value`` (nested components are listed under their own key)."""
    if not isinstance(node, dict) or not isinstance(node.get("init_args"), dict):
        return ""
    parts = [
        f"{k}={fmt(v)}"
        for k, v in node["init_args"].items()
        if is_scalar(v) or (isinstance(v, list) and all(map(is_scalar, v)))
    ]
    return fmt(", ".join(parts))


def header_comment(path: Path) -> str:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip() if not line.startswith("#  ") else line[1:].rstrip())
    prose = [ln for ln in lines if not ln.lstrip().startswith("python -m lightning_fm")]
    return " ".join(ln.strip() for ln in prose).strip()


def max_steps(config: dict, base: Path):
    trainer = resolve(config.get("trainer"), base)
    if isinstance(trainer, dict):
        return trainer.get("max_steps")
    return None


def catalogue_page() -> str:
    out = [
        "# Config catalogue\n",
        '!!! note "Generated"\n    This page is generated from `configs/**/*.yaml` by `docs/gen/render.py` when the '
        "site is built: each entry is the file's header comment and the classes it names.\n",
        "Run a recipe with `python -m lightning_fm fit -c <file>`; stack trainer, logger and model settings after it "
        "(`-c RECIPE -c configs/trainer/gpu.yaml`). How recipes are composed: "
        "[Configs](guides/configs.md).\n",
    ]
    files = sorted(CONFIGS.rglob("*.yaml"))
    by_dir: dict[str, list[Path]] = {}
    for f in files:
        by_dir.setdefault(str(f.parent.relative_to(ROOT)), []).append(f)
    summary = []
    sections = []
    for folder, paths in by_dir.items():
        sections.append(f"## `{folder}/`\n")
        for path in paths:
            rel = str(path.relative_to(ROOT))
            config = load_yaml(path)
            config = config if isinstance(config, dict) else {}
            classes = {role: class_name(lookup(config, keys, path.parent)) for role, keys in ROLES}
            steps = max_steps(config, path.parent)
            anchor = re.sub(r"[^a-z0-9]+", "-", rel.lower()).strip("-")
            if classes["model"]:
                family_part = classes["field"] or classes["path"]
                summary.append(
                    [
                        f"[`{rel}`](#{anchor})",
                        classes["model"],
                        family_part,
                        classes["coupling"],
                        classes["data"],
                        fmt(steps),
                    ]
                )
            sections.append(f"### `{rel}` {{#{anchor}}}\n")
            comment = header_comment(path)
            if comment:
                sections.append(comment + "\n")
            items = [
                [role, f"`{name}`", arguments(lookup(config, keys, path.parent))]
                for (role, keys), name in zip(ROLES, classes.values())
                if name
            ]
            base = config.get("base")
            if isinstance(base, str) and (CONFIGS / "base" / f"{base}.yaml").exists():
                base_file = f"configs/base/{base}.yaml"
                items.insert(0, ["base", f"[`{base_file}`](#{re.sub(r'[^a-z0-9]+', '-', base_file).strip('-')})", ""])
                if steps is None:
                    steps = max_steps(load_yaml(CONFIGS / "base" / f"{base}.yaml") or {}, path.parent)
            if steps is not None:
                items.append(["max_steps", fmt(steps), ""])
            if items:
                sections.append(table(["key", "class", "arguments"], items))
            if classes["model"]:
                sections.append(f"```bash\npython -m lightning_fm fit -c {rel}\n```\n")
            elif "base" in path.relative_to(CONFIGS).parts[:-1]:
                sections.append("A shared fragment that the recipes are built from.\n")
            else:
                sections.append(f"Stacked after a recipe: `python -m lightning_fm fit -c RECIPE -c {rel}`.\n")
    out.append("## Recipes at a glance\n")
    out.append(table(["config", "model", "path / field", "coupling", "data", "max_steps"], summary))
    return "\n".join(out + sections)


def pages() -> dict[str, str]:
    result = {"configs.md": catalogue_page()}
    result.update(results_pages())
    return result
