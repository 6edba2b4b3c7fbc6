"""mkdocs-gen-files script: writes the generated pages (config catalogue, results) into the site at build time."""

import sys
from pathlib import Path

import mkdocs_gen_files

sys.path.insert(0, str(Path(__file__).resolve().parent))

import render  # noqa: E402

for name, text in render.pages().items():
    with mkdocs_gen_files.open(name, "w") as f:
        f.write(text)

for png in render.png_files():
    with mkdocs_gen_files.open(f"results/{png.name}", "wb") as f:
        f.write(png.read_bytes())
