"""Dataset version metadata: manifest.parquet, rejected.parquet, dataset.json, LATEST, and ``DatasetInfo``.

Every reader here goes through ``senet_dist.storage`` (pyarrow.fs), so a shards root is a local path or a URI
(``s3://bucket/shards``); locations stay strings in the form the user gave (a local one as a plain absolute path).
A version without dataset.json is never listed: dataset.json is written last but LATEST (see ``publish``)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from senet_dist.storage import (
    basename,
    check_bucket,
    is_local,
    is_uri,
    join,
    read_bytes,
    redact,
    resolve_filesystem,
    storage_errors,
    write_bytes,
)

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


def normalise(location: str | os.PathLike) -> str:
    """A shards root or version location as this module returns it: a plain path absolute (``~`` and symlinks
    resolved, ``file://`` dropped), a URI as given less a trailing slash."""
    loc = str(location)
    if is_local(loc):
        return str(Path(loc.removeprefix("file://")).expanduser().resolve())
    u = urlsplit(loc)
    return urlunsplit((u.scheme, u.netloc, u.path.rstrip("/"), u.query, u.fragment))


def write_latest(out: str | os.PathLike, version: str) -> None:
    """Point LATEST at ``version``: locally atomically (temp file + os.replace), on object storage one PUT."""
    root = normalise(out)
    if is_uri(root):
        with storage_errors(root):
            write_bytes(join(root, "LATEST"), (version + "\n").encode())
        return
    fd, tmp = tempfile.mkstemp(dir=root, prefix=".LATEST-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(version + "\n")
    os.replace(tmp, os.path.join(root, "LATEST"))


def _is_file(location: str) -> bool:
    fs, path = resolve_filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def version_names(out: str | os.PathLike) -> list[str]:
    """Every ``vNNNN-<fp12>`` directory name under OUT, complete or not, oldest first."""
    root = normalise(out)
    with storage_errors(root):
        fs, path = resolve_filesystem(root)
        if not is_uri(root) and not os.path.isdir(path):
            return []
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    found = [
        (int(m.group(1)), i.base_name)
        for i in infos
        if i.type == pafs.FileType.Directory and (m := VERSION_RE.match(i.base_name))
    ]
    return [name for _, name in sorted(found)]


def list_versions(out: str | os.PathLike) -> list[str]:
    """Complete version locations under OUT (those with dataset.json), oldest first; temp build dirs never match."""
    root = normalise(out)
    with storage_errors(root):
        return [join(root, n) for n in version_names(root) if _is_file(join(root, n, "dataset.json"))]


def latest_version(out: str | os.PathLike) -> str | None:
    """The version location named by OUT/LATEST (or the newest complete one), or None if OUT has none."""
    root = normalise(out)
    with storage_errors(root):
        try:
            name = read_bytes(join(root, "LATEST")).decode().strip()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            name = ""
        if VERSION_RE.match(name) and _is_file(join(root, name, "dataset.json")):
            return join(root, name)
        versions = list_versions(root)
    return versions[-1] if versions else None


def resolve_version(path: str | os.PathLike) -> str:
    """The one way from what a user names to a version location: a version as is, a shards root -> LATEST.

    Raises :class:`DatasetError` when there is no version there, :class:`~senet_dist.storage.StorageError` for a
    missing bucket, refused credentials or an unreachable endpoint: one line each, before anything heavy starts."""
    loc = normalise(path)
    with storage_errors(loc):
        if _is_file(join(loc, "dataset.json")):
            return loc
        if not is_uri(loc) and not os.path.isdir(loc):
            raise DatasetError(f"dataset directory does not exist: {path}")
        latest = latest_version(loc)
        if latest is None:
            check_bucket(loc)
            raise DatasetError(
                f"{redact(loc)} is not a dataset version directory (no dataset.json) nor a shards root (no LATEST)"
            )
    return latest


SHARD_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*\.tar")


def shard_name(name: object, version_dir: str) -> str:
    """A shard's name as ``dataset.json`` lists it, if it names a tar file IN the version directory: a hostile
    ``dataset.json`` (``../../other/x.tar``, an absolute path, a URI) must never make a reader open anything else."""
    if not isinstance(name, str) or not SHARD_NAME_RE.fullmatch(name):
        raise DatasetError(f"{redact(version_dir)}/dataset.json names shard {name!r}, not a .tar file in the version")
    return name


@dataclass
class DatasetInfo:
    """Parsed dataset.json of one version; ``version_dir`` and the shard locations are strings (paths or URIs)."""

    version_dir: str
    version: str
    fingerprint: str
    classes: list[str]
    counts: dict[str, int]
    shards: dict[str, list[str]]
    shard_counts: dict[str, int] = field(default_factory=dict)  # shard file name -> samples
    image_format: str = "jpg"
    num_rejected: int = 0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @classmethod
    def load(cls, version_dir: str | os.PathLike) -> DatasetInfo:
        """Load a version (a shards root with LATEST is resolved to its latest version)."""
        vdir = resolve_version(version_dir)
        with storage_errors(vdir):
            meta = json.loads(read_bytes(join(vdir, "dataset.json")).decode("utf-8"))
        shards = {s: [join(vdir, shard_name(n, vdir)) for n in meta["shards"].get(s, [])] for s in SPLITS}
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

    def shard_entries(self, split: str) -> list[tuple[str, int]]:
        """(location, samples the manifest expects) of each shard of ``split``, in order."""
        return [(loc, self.shard_counts.get(basename(loc), 0)) for loc in self.shards[split]]

    def _table(self, name: str) -> pa.Table:
        loc = join(self.version_dir, name)
        with storage_errors(loc):
            fs, path = resolve_filesystem(loc)
            return pq.read_table(path, filesystem=fs)

    def manifest(self) -> pa.Table:
        return self._table("manifest.parquet")

    def rejected(self) -> pa.Table:
        return self._table("rejected.parquet")
