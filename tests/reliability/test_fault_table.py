"""docs/reliability.md: every row names tests, and every named test exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).parents[2]
TABLE = ROOT / "docs" / "reliability.md"


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def test_every_row_names_a_test_that_exists():
    rows = [line for line in TABLE.read_text().splitlines()
            if line.startswith("| ") and not line.startswith(("| Fault", "|---"))]
    assert len(rows) >= 40
    for row in rows:
        refs = re.findall(r"`((?:tests/[\w/]+/)?[\w]+\.py)(?:::(\w+))?`", row.split("|")[-2])
        assert refs, f"a row without a test: {row}"
        for file, name in refs:
            path = ROOT / file if file.startswith("tests/") else Path(__file__).parent / file
            assert path.is_file(), f"{file} (row: {row[:60]})"
            if name:
                assert name in _functions(path), f"{file}::{name} does not exist"


def test_the_readme_links_the_table():
    assert "](docs/reliability.md)" in (ROOT / "README.md").read_text()
