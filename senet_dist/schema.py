"""The base of every configuration section: pydantic models with one error style and one override syntax.

Every config (``TrainConfig``, ``ShardConfig``, ``PipelineConfig``) is a :class:`Section`: unknown keys are errors,
values are coerced once by pydantic (YAML 1.1 reads ``1e-3`` as a string; it still becomes a float), and a bad
value becomes one :class:`~senet_dist.errors.ConfigError` line naming the dotted field, the value and the choices.
The same dotted keys work in files (``optimizer.lr: 0.05``), dicts and the CLI (``--set optimizer.lr=0.05``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import ErrorDetails
from typing_extensions import Self

from senet_dist.errors import ConfigError


class Section(BaseModel):
    """A config section: ``extra="forbid"``, dotted keys and shorthands.

    Build one from user input with :meth:`parse` / :meth:`from_file` / :meth:`with_overrides`, which raise
    :class:`ConfigError`; the plain constructor raises pydantic's ``ValidationError`` (also a ``ValueError``).
    """

    model_config = ConfigDict(extra="forbid")
    TITLE: ClassVar[str] = "config"
    # Short spellings for nested keys, e.g. ``{"lr": "optimizer.lr"}`` (``--set lr=0.05``).
    SHORTHANDS: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _expand(cls, data: Any) -> Any:
        """A bare string names the section (``optimizer: adamw``); dotted keys and shorthands become nesting."""
        if isinstance(data, str) and "name" in cls.model_fields:
            return {"name": data}
        if not isinstance(data, Mapping):
            return data
        out = {k: v for k, v in data.items() if not _is_path(cls, k)}
        for key, value in data.items():
            if _is_path(cls, key):
                assign(out, cls, key, value)
        return out

    @classmethod
    def parse(cls, data: Mapping[str, Any] | None = None) -> Self:
        """Validate a (possibly nested, possibly dotted) mapping."""
        try:
            return cls.model_validate(dict(data or {}))
        except ValidationError as exc:
            raise ConfigError(format_errors(exc, cls)) from None

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Load a ``.yaml``/``.yml``/``.json`` file; errors name the file."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        text = p.read_text()
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot parse {p}: {' '.join(str(exc).split())}") from None
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
        try:
            return cls.parse(data)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None

    def with_overrides(self, overrides: Mapping[str, Any] | Iterable[str]) -> Self:
        """A copy with dotted-key overrides: ``{"epochs": 3, "optimizer.lr": 0.05}`` or ``["epochs=3", "lr=0.05"]``.

        CLI strings are parsed as YAML scalars (``3`` is an int, ``null`` is None); a section given as a mapping
        or a bare name is merged into the current one, a free-form dict (``model_kwargs``) is replaced.
        """
        items = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
        data = self.to_dict()
        for key, value in items.items():
            assign(data, type(self), key, value)
        return type(self).parse(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested JSON/YAML-safe data; ``parse(to_dict())`` round-trips."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``["epochs=3", "lr=0.05"]`` -> ``{"epochs": 3, "lr": 0.05}`` (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} must look like key=value")
        key, raw = pair.split("=", 1)
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {pair!r}: cannot parse value: {' '.join(str(exc).split())}") from None
    return out


def _is_path(cls: type[Section], key: object) -> bool:
    return isinstance(key, str) and ("." in key or key in cls.SHORTHANDS)


def _section_type(model: type[Section] | None, name: str) -> type[Section] | None:
    field = model.model_fields.get(name) if model is not None else None
    ann = field.annotation if field is not None else None
    return ann if isinstance(ann, type) and issubclass(ann, Section) else None


def assign(data: dict[str, Any], model: type[Section], key: str, value: Any) -> None:
    """Set dotted ``key`` (or a shorthand) in nested ``data``, merging into sections, replacing anything else."""
    parts = model.SHORTHANDS.get(key, key).split(".")
    node: dict[str, Any] = data
    section: type[Section] | None = model
    for i, part in enumerate(parts[:-1]):
        section = _section_type(section, part)
        child = node.get(part, {})
        if isinstance(child, str) and section is not None:
            child = {"name": child}
        if not isinstance(child, dict):
            raise ConfigError(f"unknown key {key!r} ({'.'.join(parts[: i + 1])} is a value, not a section)")
        node[part] = child = dict(child)
        node = child
    last = parts[-1]
    target = _section_type(section, last)
    current = node.get(last)
    if target is not None and isinstance(current, dict) and isinstance(value, (Mapping, str)):
        value = {**current, **({"name": value} if isinstance(value, str) else value)}
    node[last] = value


# ---- one-line errors ---------------------------------------------------------------------------------
_BOUNDS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}
_BOUND_KEYS = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}
_EXPECTED = {
    "int_parsing": "int",
    "int_type": "int",
    "int_from_float": "an integer",
    "float_parsing": "float",
    "float_type": "float",
    "bool_parsing": "true/false",
    "bool_type": "true/false",
    "string_type": "a string",
    "dict_type": "a mapping",
    "list_type": "a list",
    "tuple_type": "a list",
    "model_type": "a mapping",
}


def format_errors(exc: ValidationError, model: type[Section]) -> str:
    """Every pydantic error as ``<dotted.field> <problem>, got <value>``, joined on one line."""
    seen: dict[str, str] = {}
    for err in exc.errors():
        loc = _dotted(err["loc"])
        seen.setdefault(loc, _describe(err, loc, model))
    return f"invalid {model.TITLE}: " + "; ".join(seen.values())


def _dotted(loc: tuple[int | str, ...]) -> str:
    """Field path only: pydantic adds union-member tags such as ``literal['auto']`` that users never wrote."""
    parts = []
    for part in loc:
        if isinstance(part, str) and not part.replace("_", "a").replace("-", "a").isalnum():
            break
        parts.append(str(part))
    return ".".join(parts)


def _describe(err: ErrorDetails, loc: str, model: type[Section]) -> str:
    kind, ctx, got = err["type"], err.get("ctx") or {}, _short(err.get("input"))
    if kind == "extra_forbidden":
        parent = _known(model, loc.split(".")[:-1])
        return f"unknown key {loc!r}" + (f" (known: {', '.join(parent)})" if parent else "")
    if kind == "missing":
        return f"{loc} is required"
    if kind == "literal_error":
        return f"{loc} must be one of {ctx.get('expected')}, got {got}"
    if kind in _BOUNDS:
        bound = ctx.get(_BOUND_KEYS[kind])
        return (
            f"{loc} must be {_BOUNDS[kind]} {bound:g}, got {got}"
            if isinstance(bound, (int, float))
            else f"{loc} must be {_BOUNDS[kind]} {bound}, got {got}"
        )
    if kind in _EXPECTED:
        return f"{loc}: expected {_EXPECTED[kind]}, got {got}"
    message = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    return f"{loc}: {message}" if loc and not message.startswith(loc) else message


def _known(model: type[Section], parts: list[str]) -> list[str]:
    section: type[Section] | None = model
    for part in parts:
        section = _section_type(section, part)
    return list(section.model_fields) if section is not None else []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


__all__ = ["Section", "assign", "format_errors", "parse_overrides"]
