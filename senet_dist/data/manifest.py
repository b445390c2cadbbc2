"""Dataset version metadata: manifest.parquet, rejected.parquet, dataset.json, LATEST, and ``DatasetInfo``."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from .source import SPLITS, DatasetError

VERSION_RE = re.compile(r"^v(\d{4,})-([0-9a-f]{12})$")

MANIFEST_SCHEMA = pa.schema(
    [
        ("key", pa.string()),
        ("path", pa.string()),
        ("class_name", pa.string()),
        ("label", pa.int64()),
        ("split", pa.string()),
        ("shard", pa.string()),
        ("bytes", pa.int64()),  # source file size
        ("sha256", pa.string()),  # source file content
        ("width", pa.int64()),  # source size (after EXIF transpose)
        ("height", pa.int64()),
        ("stored_bytes", pa.int64()),  # what the shard holds for this sample
        ("stored_width", pa.int64()),
        ("stored_height", pa.int64()),
    ]
)
REJECTED_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("class_name", pa.string()),
        ("reason", pa.string()),
        ("bytes", pa.int64()),
        ("sha256", pa.string()),
    ]
)


def write_table(rows: list[dict[str, Any]], schema: pa.Schema, path: Path) -> None:
    columns = {name: [r[name] for r in rows] for name in schema.names}
    pq.write_table(pa.table(columns, schema=schema), path)


def write_json(obj: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def write_latest(out: Path, version: str) -> None:
    """Point LATEST at ``version`` atomically (temp file + os.replace)."""
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".LATEST-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(version + "\n")
    os.replace(tmp, out / "LATEST")


def list_versions(out: str | os.PathLike) -> list[Path]:
    """Complete version directories under OUT, oldest first (temp build dirs never match)."""
    out = Path(out)
    if not out.is_dir():
        return []
    found = [
        (int(m.group(1)), p)
        for p in out.iterdir()
        if p.is_dir() and (m := VERSION_RE.match(p.name)) and (p / "dataset.json").is_file()
    ]
    return [p for _, p in sorted(found)]


def latest_version(out: str | os.PathLike) -> Path | None:
    """The version directory named by OUT/LATEST (or the newest complete one), or None if OUT has none."""
    out = Path(out)
    latest = out / "LATEST"
    if latest.is_file():
        name = latest.read_text().strip()
        if VERSION_RE.match(name) and (out / name / "dataset.json").is_file():
            return out / name
    versions = list_versions(out)
    return versions[-1] if versions else None


def resolve_version(path: str | os.PathLike) -> Path:
    """The one way from what a user names to a version directory: a version dir as is, a shards root -> LATEST."""
    p = Path(path).expanduser().resolve()
    if (p / "dataset.json").is_file():
        return p
    if not p.is_dir():
        raise DatasetError(f"dataset directory does not exist: {path}")
    latest = latest_version(p)
    if latest is None:
        raise DatasetError(f"{path} is not a dataset version directory (no dataset.json) nor a shards root (no LATEST)")
    return latest


@dataclass
class DatasetInfo:
    """Parsed dataset.json of one version directory; shard paths are absolute."""

    version_dir: Path
    version: str
    fingerprint: str
    classes: list[str]
    counts: dict[str, int]
    shards: dict[str, list[Path]]
    shard_counts: dict[str, int] = field(default_factory=dict)  # shard file name -> samples
    image_format: str = "jpg"
    num_rejected: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def load(cls, version_dir: str | os.PathLike) -> DatasetInfo:
        """Load a version directory (a shards root with LATEST is resolved to its latest version)."""
        vdir = resolve_version(version_dir)
        meta = json.loads((vdir / "dataset.json").read_text(encoding="utf-8"))
        shards = {s: [vdir / n for n in meta["shards"].get(s, [])] for s in SPLITS}
        return cls(
            version_dir=vdir,
            version=meta["version"],
            fingerprint=meta["fingerprint"],
            classes=list(meta["classes"]),
            counts={s: int(meta["counts"].get(s, 0)) for s in SPLITS},
            shards=shards,
            shard_counts={k: int(v) for k, v in meta.get("shard_counts", {}).items()},
            image_format=meta.get("encode", {}).get("image_format", "jpg"),
            num_rejected=int(meta.get("num_rejected", 0)),
            raw=meta,
        )

    def manifest(self) -> pa.Table:
        return pq.read_table(self.version_dir / "manifest.parquet")

    def rejected(self) -> pa.Table:
        return pq.read_table(self.version_dir / "rejected.parquet")
