"""A non-editable install carries what users need: the wheel built from this tree, installed with ``--no-deps`` into
a fresh target and run from a directory outside the repository, finds the recipes by name (package data, read with
importlib.resources), lists them in ``senet-dist run --help``, and imports the flows."""

from __future__ import annotations

import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from senet_dist import recipes
from tests.helpers import PYTHON, REPO


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree installed into a new target directory (no dependencies: the venv has them)."""
    dist, target = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("site")
    subprocess.run(
        [PYTHON, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        check=True,
        capture_output=True,
    )
    (wheel,) = dist.glob("senet_dist-*.whl")
    shipped = {Path(n).name for n in zipfile.ZipFile(wheel).namelist() if n.startswith("senet_dist/recipes/")}
    assert {f"{name}.yaml" for name in recipes.names()} <= shipped
    subprocess.run(
        [PYTHON, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    return target


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(target), "COLUMNS": "300"}
    return subprocess.run([PYTHON, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_the_installed_package_has_its_recipes_and_flows(installed: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    where = run_installed(installed, outside, "-c", "import senet_dist, flows.train_senet; print(senet_dist.__file__)")
    assert where.returncode == 0, where.stderr
    assert where.stdout.strip().startswith(str(installed))  # the wheel's copy, not this checkout
    helped = run_installed(installed, outside, "-m", "senet_dist.cli", "run", "--help")
    assert helped.returncode == 0, helped.stderr
    assert all(name in helped.stdout for name in recipes.names())
    by_name = run_installed(
        installed, outside, "-m", "senet_dist.cli", "run", "--config", "se_densenet121_monkeypox", "--data", "nowhere"
    )
    assert by_name.returncode == 2  # the recipe loaded by its name; the missing data is what is refused
    assert "neither an ImageFolder directory nor a built-in dataset" in by_name.stderr, by_name.stderr
