"""Training configuration: one dataclass, loaded from YAML/JSON, overridable, validated before Ray starts.

Validation happens in the driver so that a typo costs milliseconds, not a Ray cluster start-up: unknown keys
are errors (a misspelt ``learning_rate`` silently training at the default lr is worse than a crash).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "step", "none")
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
# Short CLI spellings for nested keys: ``--set lr=0.05`` means ``optimizer.lr=0.05``.
ALIASES = {
    "lr": "optimizer.lr",
    "weight_decay": "optimizer.weight_decay",
    "momentum": "optimizer.momentum",
    "warmup_epochs": "schedule.warmup_epochs",
}


class ConfigError(ValueError):
    """A bad training configuration, raised before any worker starts."""


@dataclass
class OptimizerConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.999)


@dataclass
class ScheduleConfig:
    """Per-step LR multiplier: linear warmup, then cosine / step decay / constant."""

    name: str = "cosine"
    warmup_epochs: float = 0.0
    warmup_steps: int = 0  # > 0 overrides warmup_epochs
    min_lr_ratio: float = 0.0  # cosine floor as a fraction of the peak lr
    step_epochs: int = 30  # step schedule: multiply by gamma every step_epochs
    gamma: float = 0.1


@dataclass
class TrainConfig:
    model: str = "se_resnet18"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 128  # global; each of num_workers ranks gets batch_size // num_workers
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    image_size: int = 32
    num_workers: int = 2  # Ray Train workers (DDP ranks)
    loader_workers: int = 1  # DataLoader processes per rank
    loader_kwargs: dict[str, Any] = field(default_factory=dict)  # extra LoaderConfig fields, e.g. crop_scale, hflip
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    precision: str = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    channels_last: str | bool = "auto"  # auto: on for GPU
    compile: bool = False
    seed: int = 0
    keep_best_n: int = 2  # checkpoints kept, ranked by val_acc (the latest is always kept too)
    max_failures: int = 1
    patience: int | None = None  # early stopping: epochs without val_acc improvement
    max_steps_per_epoch: int | None = None  # cap for smoke runs and benchmarks
    # Test hook (resume test, reliability suite): rank ``fault_kill_rank`` SIGKILLs itself after
    # ``fault_kill_after_steps`` steps of epoch ``fault_kill_epoch``, once: ``fault_marker`` records that it fired.
    fault_kill_rank: int | None = None
    fault_kill_epoch: int | None = None
    fault_kill_after_steps: int = 1
    fault_marker: str | None = None

    # ---- construction -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a (possibly nested) mapping; unknown keys raise :class:`ConfigError`."""
        cfg = cls()
        return cfg.with_overrides(_flatten(data))

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Load a ``.yaml``/``.yml``/``.json`` file (nested sections or dotted keys both work)."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p}")
        text = p.read_text()
        try:
            data = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot parse {p}: {exc}") from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{p}: {exc}") from None

    def with_overrides(self, overrides: Mapping[str, Any] | Iterable[str]) -> TrainConfig:
        """Copy with dotted-key overrides: ``{"epochs": 3, "optimizer.lr": 0.05}`` or ``["epochs=3", "lr=0.05"]``.

        String values (from the CLI) are parsed as YAML scalars, so ``3`` is an int and ``null`` is None.
        """
        items = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
        data = asdict(self)
        for key, value in items.items():
            _set_path(data, ALIASES.get(key, key), value)
        return _build(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON/YAML-safe); ``from_dict(to_dict())`` round-trips."""
        d = asdict(self)
        d["optimizer"]["betas"] = list(d["optimizer"]["betas"])
        return d

    # ---- derived values -----------------------------------------------------------------------
    @property
    def per_worker_batch_size(self) -> int:
        return self.batch_size // self.num_workers

    def resolved_precision(self, on_gpu: bool) -> str:
        if self.precision == "auto":
            return "bf16" if on_gpu else "fp32"
        return self.precision

    def resolved_channels_last(self, on_gpu: bool) -> bool:
        return on_gpu if self.channels_last == "auto" else bool(self.channels_last)

    # ---- validation ---------------------------------------------------------------------------
    def validate(self, version_dir: str | Path | None = None) -> TrainConfig:
        """Raise :class:`ConfigError` naming the bad field; checks ``version_dir`` exists when given."""
        from senet_dist.models import UnknownModelError, check_model_name

        try:
            check_model_name(self.model)
        except UnknownModelError as exc:
            raise ConfigError(f"model: {exc}") from None
        errors = _field_errors(self) + _loader_errors(self.loader_kwargs)
        if version_dir is not None and not Path(version_dir).is_dir():
            errors.append(f"dataset directory does not exist: {version_dir}")
        if errors:
            raise ConfigError("invalid training config: " + "; ".join(errors))
        return self


def _field_errors(c: TrainConfig) -> list[str]:
    o, s = c.optimizer, c.schedule
    checks = [
        (c.epochs >= 1, f"epochs must be >= 1, got {c.epochs}"),
        (c.num_workers >= 1, f"num_workers must be >= 1, got {c.num_workers}"),
        (c.batch_size >= c.num_workers, f"batch_size {c.batch_size} is smaller than num_workers {c.num_workers}"),
        (c.num_workers < 1 or c.batch_size % c.num_workers == 0,
         f"batch_size {c.batch_size} is not divisible by num_workers {c.num_workers}"),
        (o.lr > 0, f"optimizer.lr must be > 0, got {o.lr}"),
        (o.name in OPTIMIZERS, f"optimizer.name must be one of {OPTIMIZERS}, got {o.name!r}"),
        (o.weight_decay >= 0, f"optimizer.weight_decay must be >= 0, got {o.weight_decay}"),
        (0 <= o.momentum < 1, f"optimizer.momentum must be in [0, 1), got {o.momentum}"),
        (s.name in SCHEDULES, f"schedule.name must be one of {SCHEDULES}, got {s.name!r}"),
        (s.warmup_epochs >= 0 and s.warmup_steps >= 0, "schedule warmup must be >= 0"),
        (0 <= s.min_lr_ratio <= 1, f"schedule.min_lr_ratio must be in [0, 1], got {s.min_lr_ratio}"),
        (s.step_epochs >= 1 and 0 < s.gamma <= 1, "schedule.step_epochs must be >= 1 and gamma in (0, 1]"),
        (0 <= c.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {c.label_smoothing}"),
        (c.image_size >= 32, f"image_size must be >= 32 (every model needs >= 32 px), got {c.image_size}"),
        (c.loader_workers >= 0, f"loader_workers must be >= 0, got {c.loader_workers}"),
        (c.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {c.precision!r}"),
        (c.channels_last in ("auto", True, False), f"channels_last must be auto/true/false, got {c.channels_last!r}"),
        (c.keep_best_n >= 1, f"keep_best_n must be >= 1, got {c.keep_best_n}"),
        (c.max_failures >= -1, f"max_failures must be >= -1 (-1 = retry forever), got {c.max_failures}"),
        (c.patience is None or c.patience >= 1, f"patience must be >= 1 or null, got {c.patience}"),
        (c.max_steps_per_epoch is None or c.max_steps_per_epoch >= 1, "max_steps_per_epoch must be >= 1 or null"),
        (c.grad_clip is None or c.grad_clip > 0, f"grad_clip must be > 0 or null, got {c.grad_clip}"),
        (c.use_gpu or c.precision not in ("fp16",), "precision fp16 needs use_gpu (use bf16 or fp32 on CPU)"),
        (c.fault_kill_rank is None or c.fault_marker is not None,
         "fault_kill_rank needs fault_marker (so the fault fires only once)"),
    ]
    return [msg for ok, msg in checks if not ok]


_LOADER_OWNED = {"batch_size", "image_size", "num_workers", "seed"}  # set from TrainConfig fields


def _loader_errors(kwargs: dict[str, Any]) -> list[str]:
    from senet_dist.data import LoaderConfig

    known = {f.name for f in fields(LoaderConfig)} - _LOADER_OWNED
    bad = sorted(set(kwargs) - known)
    if not bad:
        return []
    return [f"loader_kwargs: unknown or TrainConfig-owned keys {bad} (allowed: {', '.join(sorted(known))})"]


# ---- helpers ---------------------------------------------------------------------------------
def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections -> dotted keys; ``model_kwargs``/``resources_per_worker`` stay whole (free-form dicts)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and path in ("optimizer", "schedule"):
            out.update(_flatten(value, f"{path}."))
        elif isinstance(value, str) and path in ("optimizer", "schedule"):
            out[f"{path}.name"] = value  # shorthand: ``optimizer: adamw``
        else:
            out[path] = value
    return out


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
            raise ConfigError(f"override {pair!r}: cannot parse value: {exc}") from None
    return out


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for i, part in enumerate(parts):
        if not isinstance(node, dict) or part not in node:
            known = sorted(node) if isinstance(node, dict) else []
            where = ".".join(parts[:i]) or "config"
            raise ConfigError(f"unknown key {dotted!r} (no {part!r} in {where}; known: {', '.join(known)})")
        if i == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def _build(data: dict[str, Any]) -> TrainConfig:
    """Rebuild the dataclasses from a nested dict, coercing types so YAML ``1e-3`` (a str in YAML 1.1) works."""
    try:
        opt = OptimizerConfig(**_coerce(OptimizerConfig, data.pop("optimizer")))
        sched = ScheduleConfig(**_coerce(ScheduleConfig, data.pop("schedule")))
        return TrainConfig(optimizer=opt, schedule=sched, **_coerce(TrainConfig, data))
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


_SCALARS = {"int": int, "float": float, "bool": bool, "str": str}


def _coerce(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Coerce each value to the field's declared scalar type (keeping None where the field is optional)."""
    out = dict(values)
    for f in fields(cls):
        if f.name not in out or out[f.name] is None:
            continue
        v, ann = out[f.name], str(f.type)
        base = ann.split("|")[0].strip()
        if f.name == "channels_last":
            continue
        if base in _SCALARS and not isinstance(v, dict | list):
            out[f.name] = _to_scalar(f.name, _SCALARS[base], v)
        elif f.name == "betas":
            out[f.name] = tuple(float(b) for b in v)
    return out


def _to_scalar(name: str, typ: type, v: Any) -> Any:
    if typ is bool:
        if isinstance(v, bool):
            return v
        if str(v).lower() in ("true", "1", "yes", "on"):
            return True
        if str(v).lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name}: expected true/false, got {v!r}")
    if typ is int and isinstance(v, float) and not v.is_integer():
        raise ConfigError(f"{name}: expected an integer, got {v!r}")
    try:
        return typ(float(v)) if typ is int and isinstance(v, str) else typ(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {typ.__name__}, got {v!r}") from None


__all__ = ["ConfigError", "OptimizerConfig", "ScheduleConfig", "TrainConfig", "parse_overrides"]
