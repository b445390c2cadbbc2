"""What one pipeline run is given (``PipelineConfig``) and where its ImageFolder source comes from."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pyarrow.fs as pafs
from pydantic import Field, field_validator

from senet_dist.data import ShardConfig, fetch_dataset, list_datasets
from senet_dist.errors import ConfigError
from senet_dist.schema import Section
from senet_dist.storage import basename, is_local, is_uri, redact, resolve_filesystem, storage_errors
from senet_dist.train.config import TrainConfig
from senet_dist.train.session import RESOURCE_WAIT_S

DEFAULT_VARIANTS = ("se_resnet_tiny", "se_resnet_cifar")
ARTIFACTS_ENV = "SENET_ARTIFACTS"
CACHE_ENV = "SENET_CACHE"
# A deployment's own allow-lists (set in its job variables / work pool environment, not by whoever starts a run):
# where a run started from it may write (artifacts, shards: comma-separated roots) and which Ray clusters it may join.
ALLOWED_ROOTS_ENV = "SENET_ALLOWED_ROOTS"
ALLOWED_RAY_ENV = "SENET_ALLOWED_RAY_ADDRESSES"
TRAIN_FLOW = "train-senet"


def default_artifacts() -> str:
    """Where tables, reports and Ray checkpoints go unless a run says otherwise: ``$SENET_ARTIFACTS``, else
    ./artifacts."""
    return os.environ.get(ARTIFACTS_ENV) or "artifacts"


class PipelineConfig(Section):
    """One pipeline run: the ``train-senet`` flow's parameters, the CLI's ``run`` options, and their defaults."""

    TITLE: ClassVar[str] = "pipeline config"
    data: str = "lfw-subset"  # an ImageFolder path or URI, or a built-in dataset: NAME or NAME:IMAGES_PER_CLASS
    variants: list[str] = Field(default_factory=lambda: list(DEFAULT_VARIANTS))
    shards: str = "data/shards"  # shards root (local dir or URI); each dataset version gets its own directory
    artifacts: str = Field(default_factory=default_artifacts)  # local dir or object-storage URI
    train: TrainConfig = Field(default_factory=TrainConfig)  # shared by every variant (``model`` is set per variant)
    model_kwargs: dict[str, dict[str, Any]] = Field(default_factory=dict)  # variant -> constructor kwargs
    shard: ShardConfig = Field(default_factory=ShardConfig)
    force: bool = False  # retrain even when data and config are unchanged
    ray_address: str | None = None  # join this Ray cluster (else RAY_ADDRESS, else start a local Ray)
    # On a joined cluster (it may autoscale): how long a worker group may wait for its resources before the run fails.
    resource_wait_s: float = Field(RESOURCE_WAIT_S, ge=0)
    dataset_name: str | None = None  # the model registry's name for this data (one champion each); None: from data

    @field_validator("variants")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("variants must name at least one model")
        if len(set(v)) != len(v):
            raise ValueError(f"variants contains duplicates: {v}")
        return v

    def train_config(self, variant: str) -> TrainConfig:
        """The variant's TrainConfig: the shared ``train`` section plus its own ``model_kwargs`` entry."""
        kwargs = {**self.train.model_kwargs, **self.model_kwargs.get(variant, {})}
        return self.train.with_overrides({"model": variant, "model_kwargs": kwargs})

    @property
    def registry_dataset(self) -> str:
        """The dataset a run's models compete for: ``dataset_name``, else a built-in's name (``lfw-subset:24`` ->
        ``lfw-subset``), else the ImageFolder directory's name. New versions of the same data keep the name."""
        if self.dataset_name:
            return self.dataset_name
        builtin = _builtin(self.data)
        if builtin is not None:
            return builtin[0]
        return basename(self.data) if is_uri(self.data) else Path(self.data).expanduser().resolve().name

    @property
    def joins_cluster(self) -> bool:
        """Whether this run joins a Ray cluster (``ray_address`` or ``RAY_ADDRESS``) instead of starting a local Ray."""
        return bool(self.ray_address or os.environ.get("RAY_ADDRESS"))

    @property
    def artifacts_abs(self) -> str:
        """The artifacts root as an absolute path or URI (flows run from a worker's working directory)."""
        return self.artifacts if is_uri(self.artifacts) else str(Path(self.artifacts).expanduser().resolve())

    def validate(self) -> PipelineConfig:  # type: ignore[override]
        """Checks that need the model registry or the filesystem: unknown variants, missing data."""
        from senet_dist.models import check_model_name

        for name in self.variants:
            self.train_config(name).validate()  # unknown model names included
        for name in self.model_kwargs:  # entries for variants not trained this run are fine; typos are not
            check_model_name(name)
        if _builtin(self.data) is None and not _is_dir(self.data):
            builtins = ", ".join(list_datasets())
            raise FileNotFoundError(
                f"data {self.data!r} is neither an ImageFolder directory nor a built-in dataset ({builtins})"
            )
        return self


def _is_dir(location: str) -> bool:
    """A local directory, or a URI prefix holding objects (a missing bucket or refused key: StorageError)."""
    if not is_uri(location):
        return Path(location).expanduser().is_dir()
    with storage_errors(location):
        fs, path = resolve_filesystem(location)
        return fs.get_file_info(path).type == pafs.FileType.Directory


def source_cache() -> Path:
    """Where built-in datasets are materialised when the shards root is a URI (no local parent to put them in):
    ``$SENET_CACHE/sources``, else ~/.cache/senet-dist/sources."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "senet-dist").expanduser() / "sources"


def resolve_source(data: str, cache_dir: Path) -> Path | str:
    """An ImageFolder path (absolute) or URI (as given) that exists, or a built-in offline dataset (``name`` or
    ``name:N`` for N images per class) materialised once under ``cache_dir``."""
    builtin = _builtin(data)
    if builtin is not None:
        name, limit = builtin
        dest = cache_dir / (name if limit is None else f"{name}-{limit}")
        return Path(fetch_dataset(name, dest, limit_per_class=limit))
    if is_uri(data):
        if not _is_dir(data):
            raise FileNotFoundError(f"data location {data.split('?', 1)[0]} does not exist")
        return data
    path = Path(data).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"data directory {path} does not exist")
    return path


def _builtin(data: str) -> tuple[str, int | None] | None:
    """Parse ``fashion-mnist`` / ``fashion-mnist:500``; None for anything that is not a built-in dataset name."""
    name, _, limit = data.partition(":")
    if is_uri(data) or name not in list_datasets() or Path(data).is_dir():
        return None
    if limit and not limit.isdigit():
        raise ValueError(f"bad dataset spec {data!r}: expected NAME or NAME:IMAGES_PER_CLASS")
    return name, int(limit) if limit else None


def locate(data: str, shards: str) -> tuple[str, Path | str]:
    """(shards root, ImageFolder source): one derivation for check-data and sharding, so their fingerprints agree.

    A local shards root keeps built-in sources next to it (``<parent>/sources``); a URI one uses ``source_cache()``."""
    if not is_local(shards):
        return shards.rstrip("/"), resolve_source(data, source_cache())
    shards_root = Path(shards.removeprefix("file://")).expanduser().resolve()
    return str(shards_root), resolve_source(data, shards_root.parent / "sources")


# ---- what a run started from a deployment may choose -----------------------------------------------------------
def check_destinations(cfg: PipelineConfig, deployment: Mapping[str, Any]) -> None:
    """Refuse a run whose results or Ray cluster are not the deployment's: anyone who may start a deployment may set
    its parameters, but where tables, checkpoints and shards are written (``artifacts``, ``shards``) and which Ray
    cluster is joined (``ray_address``) come from the deployment itself (``deployment``: its own parameters), or
    from its allow-lists (``SENET_ALLOWED_ROOTS``, ``SENET_ALLOWED_RAY_ADDRESSES`` in the worker's environment). Data
    sources stay free: they are read with the deployment's own credentials."""
    roots = _listed(ALLOWED_ROOTS_ENV) + [_where(default_artifacts()), _where(PipelineConfig().shards)]
    for field, value in (("artifacts", cfg.artifacts), ("shards", cfg.shards)):
        if _trusted(field, value, deployment):
            continue
        if not any(_inside(_where(value), root) for root in roots):
            raise ConfigError(
                f"{field} {redact(value)!r} is outside this deployment's roots; a run may write only under "
                f"{', '.join(redact(r) for r in roots)} (the deployment's {ALLOWED_ROOTS_ENV})"
            )
    given = cfg.ray_address
    if given and given != deployment.get("ray_address") and given not in _listed(ALLOWED_RAY_ENV):
        raise ConfigError(
            f"ray_address {redact(given)!r} is not this deployment's Ray cluster; allowed: "
            f"{', '.join(_listed(ALLOWED_RAY_ENV)) or 'only the one the deployment sets'} ({ALLOWED_RAY_ENV})"
        )


def check_deployment_name(name: str) -> str:
    """A deployment ``check-data`` may start: one of ``train-senet``'s (``train-senet/NAME``), nothing else."""
    flow, sep, deployment = name.partition("/")
    if flow != TRAIN_FLOW or not sep or not deployment or "/" in deployment:
        raise ConfigError(f"deployment {name!r} is not one of this project's: expected {TRAIN_FLOW}/<deployment>")
    return name


def _trusted(field: str, value: str, deployment: Mapping[str, Any]) -> bool:
    """The deployment's own value for ``field``, or (when the deployment sets none) the config's default, which the
    worker's environment decides: never a value that only the run's caller chose."""
    return value == (deployment[field] if field in deployment else getattr(PipelineConfig(), field))


def _listed(env: str) -> list[str]:
    return [item.strip() for item in os.environ.get(env, "").split(",") if item.strip()]


def _where(location: str) -> str:
    """A location in one comparable form: an absolute local path, or ``scheme://bucket/path`` without a query, with
    ``.`` and ``..`` resolved (so ``root/../elsewhere`` is not inside ``root``)."""
    if is_local(location):
        return str(Path(location.removeprefix("file://")).expanduser().resolve())
    u = urlsplit(location)
    return f"{u.scheme}://{u.netloc.rsplit('@', 1)[-1]}{posixpath.normpath('/' + u.path.lstrip('/')).rstrip('/')}"


def _inside(location: str, root: str) -> bool:
    return location == root or location.startswith(root.rstrip("/") + "/")
