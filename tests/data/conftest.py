"""A small synthetic ImageFolder tree (the writers, ``write_image`` / ``make_tree``, are in tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import make_tree


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src", {"cats": 12, "dogs ü": 10})
