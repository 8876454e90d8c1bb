"""docs/layout.md: every module of fedcore by folder, with its line count and the first
sentence of its docstring (`uv run python scripts/layout.py > docs/layout.md`)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Each folder imports only those before it (tests/test_layout.py checks there is no cycle).
FOLDERS = (
    "experiment",
    "data",
    "learning",
    "privacy",
    "flower",
    "engine",
    "report",
    "reproduction",
    "app",
    "deploy",
    "cli",
)
INTRO = """# The house: fedcore by role

Each folder holds one role, and imports only the folders listed before it here
(`fedcore/storage.py`, files on disk, sits beneath them all). `tests/test_layout.py`
fails on an import cycle between modules (imports inside functions included) or
between folders, and on marimo imported outside `fedcore/app/`. Regenerate the
line counts with `uv run python scripts/layout.py > docs/layout.md`.

| module | lines | its job |
| --- | ---: | --- |"""


def first_sentence(path: Path) -> str:
    text = ast.get_docstring(ast.parse(path.read_text())) or ""
    return text.split("\n\n")[0].replace("\n", " ").split(". ")[0].rstrip(".:")


def lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def rows() -> list[str]:
    package = ROOT / "fedcore"
    storage = package / "storage.py"
    out = [f"| `fedcore/storage.py` | {lines(storage)} | {first_sentence(storage)} |"]
    for folder in FOLDERS:
        files = sorted((package / folder).glob("*.py"))
        job = first_sentence(package / folder / "__init__.py")
        out.append(f"| **`fedcore/{folder}/`** | **{sum(map(lines, files))}** | {job} |")
        out += [
            f"| `{f.name}` | {lines(f)} | {first_sentence(f)} |"
            for f in files
            if f.name not in ("__init__.py", "__main__.py")
        ]
    notebook = "the notebook: the words, the controls and the pictures; the rest is a call"
    out.append(f"| **`app.py`** | **{lines(ROOT / 'app.py')}** | {notebook} |")
    return out


if __name__ == "__main__":
    print("\n".join([INTRO, *rows()]))
