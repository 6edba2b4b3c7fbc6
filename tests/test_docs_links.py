"""The repository cites its own documentation, and every cited page and anchor exists.

(a) No text file of the repository (tracked, or untracked and not ignored) points at the team's private notes,
    which users do not have. (b) Every ``docs/<path>.md#<anchor>`` reference in the code, tests, benchmarks, configs
    and README names an existing page and an existing anchor of it. (c) Relative links between the documentation
    pages resolve the same way. Pages are the Markdown files under docs/ plus the pages that ``docs/gen/render.py``
    generates at build time (config catalogue, results). Anchors are computed from the Markdown headings with the slug
    rule of MkDocs' ``toc`` extension, plus explicit ``{#id}`` attributes (``attr_list``) and ``<a id=...>`` tags.
    Pure Python, no Lightning.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import unicodedata
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Built from pieces so that this file does not match its own patterns.
_MD = r"\.md"
FORBIDDEN = re.compile("|".join([r"\bMATH" + _MD, r"\bDESIGN" + _MD, r"\bREFERENCE" + _MD, r"\.\./" + "shared"]))
DOC_REF = re.compile(r"(?<![\w/.-])" + "docs" + r"/([\w./-]+?" + _MD + r")(?:#([\w-]+))?")
CHECKED_PREFIXES = ("lightning_fm/", "tests/", "benchmarks/", "configs/")
CHECKED_FILES = ("README.md",)


@cache
def repository_files() -> tuple[str, ...]:
    """Tracked files plus untracked files that git does not ignore, as paths relative to the root."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8", "surrogateescape")
    return tuple(sorted({p for p in out.split("\0") if p and (ROOT / p).is_file()}))


@cache
def read_text(rel: str) -> str | None:
    """The file's text, or None for a binary file."""
    data = (ROOT / rel).read_bytes()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _slugify_fallback(value: str, separator: str = "-") -> str:
    """Python-Markdown's ``toc.slugify``: ASCII-fold, drop punctuation but ``-``/``_``, lowercase, spaces -> ``-``."""
    value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    value = re.sub(r"[^\w\s-]", "", value).strip().lower()
    return re.sub(rf"[{separator}\s]+", separator, value)


try:
    from markdown.extensions.toc import slugify as _md_slugify

    def slugify(value: str) -> str:
        return _md_slugify(value, "-")

except ImportError:  # the markdown package is a docs dependency, not a test one
    slugify = _slugify_fallback


HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
ATTR_LIST = re.compile(r"\s*\{:?([^}]*)\}\s*$")
HTML_ID = re.compile(r"<a\s+[^>]*(?:id|name)=[\"']([^\"']+)[\"']")
FENCE = re.compile(r"^\s*(```|~~~)")


def heading_text(raw: str) -> str:
    """The text a heading renders to: links reduced to their text, inline markup removed by the slug rule."""
    return re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", raw)


@cache
def generated_pages() -> dict[str, str]:
    """``{path inside docs/: text}`` of the pages generated at build time (empty without the generator)."""
    script = DOCS / "gen" / "render.py"
    if not script.is_file():
        return {}
    spec = importlib.util.spec_from_file_location("_docs_gen_render", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return dict(module.pages())


def page_text(page: Path) -> str | None:
    """The Markdown of a page of docs/ (a file, or a generated page), or None if there is no such page."""
    page = page.resolve()
    if page.is_file():
        return page.read_text(encoding="utf-8")
    try:
        rel = page.relative_to(DOCS.resolve()).as_posix()
    except ValueError:
        return None
    return generated_pages().get(rel)


@cache
def anchors(page: Path) -> frozenset[str]:
    """Every anchor of a Markdown page: heading slugs (or their explicit ``{#id}``) and ``<a id=...>`` tags."""
    found: set[str] = set()
    in_fence = False
    for line in (page_text(page) or "").splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
            continue
        if in_fence:
            continue
        found.update(HTML_ID.findall(line))
        m = HEADING.match(line)
        if not m:
            continue
        text = m.group(2)
        attrs = ATTR_LIST.search(text)
        explicit = None
        if attrs:
            ids = re.findall(r"#([\w-]+)", attrs.group(1))
            explicit = ids[0] if ids else None
            text = text[: attrs.start()]
        found.add(explicit if explicit else slugify(heading_text(text)))
    return frozenset(found)


def check_reference(page: Path, anchor: str | None) -> str | None:
    """None if ``page#anchor`` resolves, else why not."""
    if page_text(page) is None:
        return "no such page"
    if anchor and anchor not in anchors(page):
        return f"no anchor #{anchor} (anchors: {', '.join(sorted(anchors(page)))})"
    return None


def test_slug_rule():
    assert _slugify_fallback("The multi-sample target") == "the-multi-sample-target"
    assert _slugify_fallback("C1: divergence-free pair field") == "c1-divergence-free-pair-field"
    assert _slugify_fallback("Superposition = marginalisation") == "superposition-marginalisation"
    assert _slugify_fallback("PFGM and PFGM++") == "pfgm-and-pfgm"
    assert slugify("Time, density and velocity") == "time-density-and-velocity"


def test_no_file_cites_private_notes():
    """(a) The team's notes live outside the repository; code, tests, configs and docs cite docs/ instead."""
    offenders = []
    for rel in repository_files():
        text = read_text(rel)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if FORBIDDEN.search(line):
                offenders.append(f"{rel}:{number}: {line.strip()[:160]}")
    assert not offenders, f"{len(offenders)} line(s) cite files users do not have:\n" + "\n".join(offenders)


def test_docs_references_resolve():
    """(b) Every docs/<page>.md#<anchor> named in code, tests, benchmarks, configs and README exists."""
    broken = []
    checked = 0
    for rel in repository_files():
        if not (rel.startswith(CHECKED_PREFIXES) or rel in CHECKED_FILES):
            continue
        text = read_text(rel)
        if text is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for m in DOC_REF.finditer(line):
                checked += 1
                why = check_reference(DOCS / m.group(1), m.group(2))
                if why:
                    broken.append(f"{rel}:{number}: {m.group(0)}: {why}")
    assert not broken, f"{len(broken)} broken documentation reference(s):\n" + "\n".join(broken)
    assert checked > 0, "no documentation references found: has the pattern or the layout changed?"


MD_LINK = re.compile(r"\]\(([^)\s]+?)\)")


def test_links_between_docs_pages_resolve():
    """(c) Relative links between pages of docs/ (``page.md#anchor``, ``#anchor``) resolve."""
    if not DOCS.is_dir():
        pytest.skip("no docs/")
    broken = []
    for page in sorted(DOCS.rglob("*.md")):
        in_fence = False
        for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if FENCE.match(line):
                in_fence = not in_fence
            if in_fence:
                continue
            for target in MD_LINK.findall(line):
                if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
                    continue  # an external URL or a site-absolute path
                path, _, anchor = target.partition("#")
                if path and not path.endswith(".md"):
                    continue  # an image or another asset
                why = check_reference(page.parent / path if path else page, anchor or None)
                if why:
                    broken.append(f"{page.relative_to(ROOT)}:{number}: {target}: {why}")
    assert not broken, f"{len(broken)} broken link(s) between documentation pages:\n" + "\n".join(broken)
