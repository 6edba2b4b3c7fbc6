"""The README's generated parts and the documentation's generators (docs/gen/): no mkdocs needed."""

import importlib.util
import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _load(name):
    spec = importlib.util.spec_from_file_location(f"docs_gen_{name}", ROOT / "docs" / "gen" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_results_table_is_what_the_script_writes():
    readme = _load("readme")
    assert readme.current(README) == readme.block(), "README.md's results block is stale: run python docs/gen/readme.py"


def test_the_readme_is_short_and_keeps_the_two_setup_commands_near_the_top():
    lines = README.splitlines()
    assert len(lines) <= 200
    head = "\n".join(lines[:40])
    assert "python -m lightning_fm fit\n" in head
    assert 'pip install torch==2.14.1 torchvision==0.29.1 -e ".[dev]" && python -m pytest -q' in head


def test_ci_runs_the_readme_test_command_verbatim():
    command = next(ln for ln in README.splitlines() if ln.startswith("python3 -m venv") and "pytest" in ln)
    install_and_test = command.split(" && ", 2)[2]  # after creating and activating the venv
    ci = (ROOT / ".ci" / "run").read_text().replace("pip install -q ", "pip install ")  # CI's pip is quiet
    assert install_and_test in ci
    assert "mkdocs build --strict" in ci


def test_the_readme_links_exist():
    for target in re.findall(r"\]\(((?:docs/)[^)#]+)(?:#[^)]*)?\)", README):
        assert (ROOT / target).exists() or target.startswith(("docs/configs.md", "docs/results/")), target


def test_every_results_file_and_config_gets_a_generated_section():
    render = _load("render")
    pages = render.pages()
    results = "\n".join(text for name, text in pages.items() if name.startswith("results/"))
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        assert f"{{#{path.stem}}}" in results, path.name
    for png in sorted((ROOT / "benchmarks" / "results").glob("*.png")):
        assert f"]({png.name})" in results, png.name
    catalogue = pages["configs.md"]
    for config in sorted((ROOT / "configs").rglob("*.yaml")):
        assert f"`{config.relative_to(ROOT)}`" in catalogue, config


def test_the_catalogue_commands_parse():
    catalogue = _load("render").catalogue_page()
    commands = re.findall(r"^python -m lightning_fm fit -c (\S+)$", catalogue, flags=re.M)
    assert commands
    for config in commands:
        assert shlex.split(config) == [config] and (ROOT / config).is_file()
