"""An installed ragkit (a wheel, not the checkout) finds its notebooks and its locustfile.

The wheel is built from this checkout and installed without dependencies into a fresh virtual
environment that reads the project's dependencies from the test interpreter's site-packages;
every command then runs from a folder outside the checkout, so nothing can be found through it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO, SECRET, Stack

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    # Built from a copy: an in-tree build/ folder would keep stale modules between builds.
    source = work / "source"
    for part in ("ragkit", "notebooks"):
        shutil.copytree(REPO / part, source / part, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for part in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / part, source / part)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(work),
         str(source)],
        check=True,
        cwd=work,
    )
    (wheel,) = work.glob("ragkit-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)], check=True)
    # A plain path line: the dependencies become importable, while the checkout's editable
    # install (a .pth of its own in that folder) is not processed and stays invisible.
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    (site / "project-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return env_dir


def run(env_dir: Path, *args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(env_dir / "bin" / "ragkit"), *args],
        cwd=cwd,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_the_wheel_is_what_runs(installed: Path, tmp_path: Path) -> None:
    found = subprocess.run(
        [str(installed / "bin" / "python"), "-c", "import ragkit; print(ragkit.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert Path(found).is_relative_to(installed), f"ragkit came from {found}, not from the installed wheel"


def test_loadtest_finds_its_locustfile(installed: Path, tmp_path: Path) -> None:
    result = run(installed, "loadtest", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--users" in result.stdout
    from_wheel = subprocess.run(
        [str(installed / "bin" / "python"), "-c",
         "from ragkit.workbench.loadtest import DEFAULT_LOCUSTFILE as f; print(f.is_file(), f)"],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.split()
    assert from_wheel[0] == "True" and Path(from_wheel[1]).is_relative_to(installed)


def test_notebook_run_works_from_an_installed_ragkit(installed: Path, tmp_path: Path, stack: Stack) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "breakers.md").write_text("# Breakers\n\nA circuit breaker opens after five failures in a row.\n")
    out = tmp_path / "run"
    result = run(
        installed,
        "notebook", "run", "ingest", "-p", "source", str(docs), "-p", "collection", "from-wheel",
        "--output-dir", str(out),
        cwd=tmp_path,
        env={"RAGKIT_API_URL": stack.url, "INTER_SERVICE_SECRET": SECRET, "RAGKIT_DATA_DIR": str(tmp_path / "data")},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (out / "ingest.ipynb").is_file()
    assert stack.http.get("/api/v1/rag/collections/from-wheel").json()["documents"] == 1
    unknown = run(installed, "notebook", "run", "nosuch", cwd=tmp_path)
    assert unknown.returncode != 0 and "evaluate" in unknown.stderr and "ingest" in unknown.stderr
