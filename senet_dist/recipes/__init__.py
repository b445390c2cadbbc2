"""The reference recipes, one YAML file per write-up, shipped as package data (so a wheel carries them).

Only the index lives here (names and texts, read with ``importlib.resources``, import-light for ``--help``);
``senet_dist.pipeline.recipes`` parses and validates them.
"""

from __future__ import annotations

from importlib import resources

SUFFIX = ".yaml"


def names() -> list[str]:
    """Every shipped recipe's name (its file name without ``.yaml``), sorted."""
    return sorted(p.name.removesuffix(SUFFIX) for p in resources.files(__name__).iterdir() if p.name.endswith(SUFFIX))


def text(name: str) -> str:
    """The YAML text of the shipped recipe ``name`` (a ``KeyError`` for any other name)."""
    if name not in names():
        raise KeyError(name)
    return resources.files(__name__).joinpath(name + SUFFIX).read_text()
