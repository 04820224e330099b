"""The sdist is the whole project: packagers build, test and document from it.

Built here without isolation (offline: the environment's setuptools builds it), unpacked
into a fresh folder, checked against the checkout's files, and tested there: the fast
subset (``-m "not slow"``) runs in the unpacked tree with this environment's packages,
the docs-build tests included when the docs extra is installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Tracked files that only matter to a git checkout.
NOT_IN_SDIST = {".gitignore"}

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist of this checkout, built with ``python -m build`` and unpacked."""
    pytest.importorskip("build", reason="needs build: pip install -e '.[dev]'")
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run(
        [sys.executable, "-m", "build", "--sdist", "--no-isolation", "--outdir", str(dist)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (archive,) = dist.glob("factorkit-*.tar.gz")
    target = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):  # Python >= 3.10.12: refuse unsafe members
            tar.extractall(target, filter="data")
        else:
            tar.extractall(target)  # our own archive, just built
    (tree,) = target.iterdir()
    return tree


def sdist_files(tree: Path) -> set[str]:
    return {p.relative_to(tree).as_posix() for p in tree.rglob("*") if p.is_file()}


def test_the_sdist_holds_every_tracked_file(unpacked: Path) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (with git installed) to list the tracked files")
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    tracked = {f for f in listed if (ROOT / f).is_file()}  # deleted, not yet committed: gone
    assert tracked - NOT_IN_SDIST - sdist_files(unpacked) == set()


def test_the_sdist_carries_license_metadata_and_no_build_debris(unpacked: Path) -> None:
    info = (unpacked / "PKG-INFO").read_text()
    assert "License-Expression: MIT" in info.splitlines()
    assert "License-File: LICENSE" in info.splitlines()
    assert not [f for f in sdist_files(unpacked) if "__pycache__" in f or f.endswith(".pyc")]


def test_the_fast_tests_pass_in_the_unpacked_sdist(unpacked: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # The unpacked tree's own factorkit is the one imported (pytest puts "." first).
    where = subprocess.run(
        [sys.executable, "-c", "import sys; sys.path.insert(0, '.'); import factorkit as f; "
         "print(f.__file__)"],
        cwd=unpacked, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(unpacked)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider"],
        cwd=unpacked,
        env=env,
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout.splitlines()[-1]
