"""ARCHITECTURE.md stays true to the tree, and the tree stays in rooms a person can read."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "ragkit"
MAP = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
MAX_MODULE_LINES = 400
# `core/errors.py`, `adapters/stores/`, `http/routes/` ...: paths relative to ragkit/.
_MENTIONED = re.compile(r"`((?:core|adapters|rag|http|cli|workbench)(?:/[\w.]+)*/?)`")


def _modules() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]


def test_every_package_is_on_the_map() -> None:
    packages = {p.parent.relative_to(PACKAGE).as_posix() for p in PACKAGE.rglob("__init__.py")} - {"."}
    missing = sorted(p for p in packages if f"`{p}/" not in MAP and f"`{p}`" not in MAP)
    assert not missing, f"ARCHITECTURE.md does not mention these packages: {missing}"


def test_every_path_on_the_map_exists() -> None:
    mentioned = set(_MENTIONED.findall(MAP))
    assert len(mentioned) > 20, "the map names the packages and modules it describes"
    absent = sorted(m for m in mentioned if not (PACKAGE / m).exists())
    assert not absent, f"ARCHITECTURE.md names paths that are not in ragkit/: {absent}"


def test_every_top_level_module_is_on_the_map() -> None:
    for module in PACKAGE.glob("*.py"):
        if module.name in ("__init__.py", "__main__.py"):
            continue
        assert f"`{module.name}`" in MAP, f"ARCHITECTURE.md does not mention ragkit/{module.name}"


def test_no_module_is_a_hall() -> None:
    lines = {p.relative_to(REPO).as_posix(): len(p.read_text().splitlines()) for p in _modules()}
    long = {path: n for path, n in lines.items() if n > MAX_MODULE_LINES}
    assert not long, f"split these by responsibility (over {MAX_MODULE_LINES} lines): {long}"


def test_every_test_security_md_cites_exists() -> None:
    text = (REPO / "SECURITY.md").read_text(encoding="utf-8")
    cited = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`|`::(\w+)`", text)
    assert len(cited) > 30
    current_file = None
    missing = []
    for path, name, sibling in cited:
        if path:
            current_file = REPO / path
            if not current_file.is_file():
                missing.append(path)
                continue
        test = name or sibling
        if test and current_file is not None and f"def {test}(" not in current_file.read_text(encoding="utf-8"):
            missing.append(f"{current_file.relative_to(REPO)}::{test}")
    assert not missing, f"SECURITY.md cites tests that do not exist: {missing}"
