"""Read docker/compose.yaml the way Compose does: YAML first, then ``${...}`` interpolation of string values.

Only the interpolation forms the Compose Specification defines are supported (``$VAR``, ``${VAR}``,
``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``${VAR?error}``, ``$$`` escapes), which is enough
to validate the resolved file against the official schema without Docker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.helpers import REPO

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"

# $$ | ${NAME[op word]} | $NAME ; op is one of :- - :? ?
_TOKEN = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:-|-|:\?|\?)?(?P<arg>[^}]*)\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


@dataclass(frozen=True)
class Reference:
    name: str
    op: str | None  # None, ":-", "-", ":?", "?"
    arg: str

    @property
    def has_default(self) -> bool:
        return self.op in (":-", "-")

    @property
    def required(self) -> bool:
        return self.op in (":?", "?") or self.op is None


class InterpolationError(ValueError):
    """A required variable is missing (Compose would refuse to start)."""


def references(text: str) -> list[Reference]:
    """Every variable reference in ``text`` (``$$`` escapes skipped)."""
    out = []
    for m in _TOKEN.finditer(text):
        if m.group(0) == "$$":
            continue
        if m.group("bare"):
            out.append(Reference(m.group("bare"), None, ""))
        else:
            out.append(Reference(m.group("braced"), m.group("op"), m.group("arg") or ""))
    return out


def interpolate(text: str, env: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("bare") or m.group("braced")
        op, arg = m.group("op"), m.group("arg") or ""
        value = env.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return arg if value is None else value
        if op in (":?", "?") and (value is None or (op == ":?" and value == "")):
            raise InterpolationError(f"{name}: {arg}")
        return value or ""

    return _TOKEN.sub(sub, text)


def interpolate_tree(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


def parse_env_file(path: Path) -> dict[str, str]:
    """``KEY=value`` lines of a dotenv file (comments and blank lines skipped)."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ValueError(f"{path.name}: not KEY=value: {line!r}")
        env[key.strip()] = value.strip()
    return env


def documented_names(path: Path) -> set[str]:
    """Variable names assigned or mentioned in commented ``# NAME=...`` lines of a dotenv file."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", path.read_text(), flags=re.M))


def raw_compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def resolved_compose(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The compose file interpolated with ``env`` (default: the values in .env.example)."""
    return interpolate_tree(raw_compose(), parse_env_file(ENV_EXAMPLE) if env is None else env)
