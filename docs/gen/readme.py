"""Write the README's headline results table (between its marker comments) from benchmarks/results/.

python docs/gen/readme.py           # rewrite the block in README.md
python docs/gen/readme.py --check   # exit 1 if README.md's block differs from what this script writes
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import render  # noqa: E402

README = render.ROOT / "README.md"
START = "<!-- results:start -->"
END = "<!-- results:end -->"


def block() -> str:
    """The generated block, markers included."""
    return f"{START}\n{render.headline_table()}{END}"


def current(text: str) -> str:
    start, end = text.index(START), text.index(END) + len(END)
    return text[start:end]


def updated(text: str) -> str:
    return text.replace(current(text), block())


def main(argv: list[str]) -> int:
    text = README.read_text()
    if "--check" in argv:
        if current(text) != block():
            print("README.md's results block is out of date: run python docs/gen/readme.py", file=sys.stderr)
            return 1
        return 0
    README.write_text(updated(text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
