#!/usr/bin/env bash
# Do the dependency ranges declared in pyproject.toml hold? Builds two fresh virtual environments under a temporary
# folder and checks the package in each:
#   lowest  every direct dependency of [project].dependencies at its floor (`name==floor`), the test tools of the dev
#           extra at their newest; pip resolves the indirect ones (their newest that fit)
#   newest  `pip install -e ".[dev]"` with no pins: the newest releases the declared ranges allow
# In each: the fast test subset `python -m pytest -q -m "not slow"`, and the default job
# `python -m lightning_fm fit --trainer.max_steps 50` (in a scratch working directory); both outputs are searched for
# leak dumps at interpreter exit (`nanobind: leaked ...`). Writes benchmarks/results/compat.json and prints a table.
#
# Not part of .ci/run: it downloads two full torch installations (torch's PyPI wheels carry CUDA, about 3 GB each; the
# CPU-only index https://download.pytorch.org/whl/cpu is used for torch and torchvision where it answers within 10 s).
# Downloads go through pip's cache, so a rerun is quicker. Needs python3 >= 3.11 (tomllib).
#   bash benchmarks/compat.sh [lowest|newest ...]      (both by default; about 20-40 min, most of it downloads)
set -uo pipefail
cd "$(dirname "$0")/.."
repo="$(pwd)"
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
mkdir "$scratch/tmp"
export TMPDIR="$scratch/tmp" MPLBACKEND=Agg WANDB_MODE=offline PIP_DISABLE_PIP_VERSION_CHECK=1
# a machine-wide pip constraints file (a cap on torch, say, from a pip.conf) would hide the newest releases: this check
# resolves against the declared ranges alone (an empty constraints file given through the environment, which takes
# precedence over pip.conf; an empty PIP_CONSTRAINT would not)
: >"$scratch/no-constraints.txt"
export PIP_CONSTRAINT="$scratch/no-constraints.txt"
envs=("$@")
[ ${#envs[@]} -eq 0 ] && envs=(lowest newest)

torch_index=pypi
if curl -sf --max-time 10 -o /dev/null https://download.pytorch.org/whl/cpu/torch/; then torch_index=cpu; fi
echo "torch and torchvision from: $torch_index"

# the floor pins, from pyproject.toml: "name[extras]>=floor(,<cap)" -> "name[extras]==floor"
python3 - "$scratch/floors.txt" <<'EOF'
import re, sys, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
pins = []
for dep in deps:
    m = re.match(r"\s*([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?)\s*(.*)", dep)
    name, spec = m.group(1), m.group(2)
    floor = re.search(r">=\s*([0-9][^,;\s]*)", spec)
    if floor is None:
        sys.exit(f"no floor (>=) declared for {dep!r}")
    pins.append(f"{name}=={floor.group(1)}")
open(sys.argv[1], "w").write("\n".join(pins) + "\n")
EOF
echo "floors: $(tr '\n' ' ' < "$scratch/floors.txt")"

for env in "${envs[@]}"; do
    out="$scratch/$env"
    mkdir -p "$out/job"
    start=$(date +%s)
    python3 -m venv "$out/venv"
    py="$out/venv/bin/python"
    {
        "$py" -m pip install -q --upgrade pip
        torch_args=()
        [ "$torch_index" = cpu ] && torch_args=(--index-url https://download.pytorch.org/whl/cpu)
        if [ "$env" = lowest ]; then
            # torch and torchvision first (from the CPU index where it answers), then the rest at their floors
            "$py" -m pip install -q "${torch_args[@]}" $(grep -E '^(torch|torchvision)==' "$scratch/floors.txt") &&
                "$py" -m pip install -q -r "$scratch/floors.txt" "pytest>=8" "pytest-xdist>=3.5" &&
                "$py" -m pip install -q --no-deps -e .
        else
            if [ "$torch_index" = cpu ]; then
                "$py" -m pip install -q "${torch_args[@]}" "$(grep -oE '"torch>=[^"]*"' pyproject.toml | tr -d '"')" \
                    "$(grep -oE '"torchvision>=[^"]*"' pyproject.toml | tr -d '"')"
            fi
            "$py" -m pip install -q -e ".[dev]"
        fi
    } >"$out/install.log" 2>&1
    echo $? >"$out/install.rc"
    echo $(($(date +%s) - start)) >"$out/install.s"
    "$py" -m pip freeze >"$out/freeze.txt" 2>/dev/null
    echo "[$env] install rc=$(cat "$out/install.rc") in $(cat "$out/install.s")s"
    if [ "$(cat "$out/install.rc")" = 0 ]; then
        start=$(date +%s)
        "$py" -m pytest -q -m "not slow" -p no:cacheprovider >"$out/tests.out" 2>"$out/tests.err"
        echo $? >"$out/tests.rc"
        echo $(($(date +%s) - start)) >"$out/tests.s"
        echo "[$env] tests: $(tail -n 1 "$out/tests.out")"
        start=$(date +%s)
        (cd "$out/job" && "$py" -m lightning_fm fit --trainer.max_steps 50 >"$out/job.out" 2>"$out/job.err")
        echo $? >"$out/job.rc"
        echo $(($(date +%s) - start)) >"$out/job.s"
        echo "[$env] default job rc=$(cat "$out/job.rc") in $(cat "$out/job.s")s"
    fi
done

python3 - "$scratch" "$torch_index" "${envs[@]}" <<'EOF'
import datetime, json, pathlib, platform, re, sys
scratch, torch_index, envs = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
results_path = pathlib.Path("benchmarks/results/compat.json")
old = json.loads(results_path.read_text()) if results_path.exists() else {}
DIRECT = ["torch", "torchvision", "lightning", "torchmetrics", "torch-fidelity", "wandb", "einops", "jsonargparse",
          "torchdiffeq", "POT", "scikit-learn", "matplotlib", "numpy", "PyYAML", "scipy", "triton", "pytest"]
LEAK = re.compile(r"^.*(nanobind: leaked|leaked \d+ (instances|types|functions)).*$", re.M)

def read(path, default=""):
    return path.read_text(errors="replace") if path.exists() else default

def counts(line):
    found = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)", line)}
    if "error" in found:
        found["errors"] = found.pop("error")
    return found

out = {"generated": datetime.date.today().isoformat(), "python": platform.python_version(),
       "platform": platform.platform(), "torch_index": torch_index,
       "floors": read(scratch / "floors.txt").split(), "envs": dict(old.get("envs", {}))}
for env in envs:
    d = scratch / env
    freeze = {}
    for line in read(d / "freeze.txt").splitlines():
        if "==" in line:
            name, version = line.split("==", 1)
            freeze[name.lower().replace("_", "-")] = version
    resolved = {name: freeze.get(name.lower().replace("_", "-")) for name in DIRECT}
    rec = {"install_ok": read(d / "install.rc").strip() == "0", "install_s": int(read(d / "install.s", "0") or 0),
           "resolved": resolved}
    if not rec["install_ok"]:
        rec["install_error"] = read(d / "install.log")[-3000:]
    if (d / "tests.rc").exists():
        tests_out, tests_err = read(d / "tests.out"), read(d / "tests.err")
        last = tests_out.strip().splitlines()[-1] if tests_out.strip() else ""
        rec["tests"] = {"command": 'python -m pytest -q -m "not slow"', "rc": int(read(d / "tests.rc")),
                        "seconds": int(read(d / "tests.s")), "summary": last, **counts(last),
                        "failures": re.findall(r"^(?:FAILED|ERROR) (\S+)", tests_out, re.M)[:40]}
        job_err = read(d / "job.err")
        rec["default_job"] = {"command": "python -m lightning_fm fit --trainer.max_steps 50",
                              "rc": int(read(d / "job.rc")), "ok": read(d / "job.rc").strip() == "0",
                              "seconds": int(read(d / "job.s"))}
        if not rec["default_job"]["ok"]:
            rec["default_job"]["stderr_tail"] = job_err[-2000:]
        rec["leak_lines"] = [line for line in (tests_out + tests_err + job_err).splitlines() if LEAK.match(line)][:10]
    out["envs"][env] = rec
results_path.parent.mkdir(exist_ok=True)
results_path.write_text(json.dumps(out, indent=2) + "\n")

names = [e for e in ("lowest", "newest") if e in out["envs"]]
rows = [("", *names)]
for name in DIRECT:
    rows.append((name, *[str(out["envs"][e]["resolved"].get(name)) for e in names]))
def cell(e, f):
    try:
        return f(out["envs"][e])
    except (KeyError, TypeError):
        return "-"
rows += [
    ("install ok (s)", *[cell(e, lambda r: f"{r['install_ok']} ({r['install_s']})") for e in names]),
    ("tests not slow", *[cell(e, lambda r: f"{r['tests'].get('passed', 0)} passed, {r['tests'].get('failed', 0)} failed, "
                                           f"{r['tests'].get('errors', 0)} errors") for e in names]),
    ("tests time (s)", *[cell(e, lambda r: str(r["tests"]["seconds"])) for e in names]),
    ("default job ok (s)", *[cell(e, lambda r: f"{r['default_job']['ok']} ({r['default_job']['seconds']})") for e in names]),
    ("leak lines", *[cell(e, lambda r: str(len(r["leak_lines"]))) for e in names]),
]
widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
for r in rows:
    print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
for e in names:
    for f in cell(e, lambda r: r["tests"]["failures"]) if cell(e, lambda r: r["tests"]["failures"]) != "-" else []:
        print(f"[{e}] FAILED {f}")
    for line in cell(e, lambda r: r["leak_lines"]) if cell(e, lambda r: r["leak_lines"]) != "-" else []:
        print(f"[{e}] leak: {line}")
print(f"written: {results_path}")
EOF
