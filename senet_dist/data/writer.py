"""Writing one shard group: its candidates encoded (``images.process_image``) and written into WebDataset tars
whose names depend only on (split, group index), then handed to the group's sink (uploaded when the version is
remote). A group is the unit of sharding work, so the local process pool and one Ray task per group
(``groups.run_groups``) produce the same manifest rows, shard names and counts: only where the work runs differs.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import webdataset as wds

from senet_dist.storage import is_local, join, storage_errors, upload_file

from .images import Encoded, Rejected, process_image
from .source import SourceFile, SourceTree

if TYPE_CHECKING:
    from .config import ShardConfig

_TAR_OVERHEAD = 3 * 512  # two tar headers + padding per sample, roughly


@dataclass(frozen=True)
class WorkGroup:
    """At most ``max_count`` candidates of one split, in the split's shuffled order; ``index`` counts per split."""

    split: str
    index: int
    work: list[tuple[str, SourceFile]]


@dataclass
class GroupResult:
    """What writing one group produced: table rows (in work order), the shards it wrote and their sample counts."""

    split: str
    index: int
    rows: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    shards: list[str] = field(default_factory=list)
    shard_counts: dict[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.rows)


@dataclass(frozen=True)
class ShardSink:
    """Where a group's finished shards go: written into ``directory`` (a build dir inside a local OUT, or a temp dir),
    and, with ``upload_to`` (a remote version location), uploaded from there and removed locally once complete."""

    directory: Path
    upload_to: str | None = None

    def finish(self, names: Iterable[str]) -> None:
        """A group's shards are complete: upload them (and free the local disk) when the version is remote."""
        if self.upload_to is None:
            return
        for name in names:
            upload(self.directory / name, join(self.upload_to, name))
            (self.directory / name).unlink()


def upload(local: Path, location: str) -> None:
    """The one upload step of publishing (a shard, a table); a fault here must never leave a listed version."""
    with storage_errors(location):
        upload_file(local, location)


class RotatingShardWriter:
    """Writes one shard group's tars lazily, so a group whose candidates were all rejected produces no shard.

    The first shard of group ``g`` is ``{split}-{g:06d}.tar`` (a group holds at most ``max_count`` candidates, so in
    the common case that is its only shard); when ``max_bytes`` rotates inside the group the k-th extra one is
    ``{split}-{g:06d}-{k:02d}.tar``. Names depend only on the group, so groups can be written anywhere, in any order.
    """

    def __init__(self, directory: Path, split: str, max_count: int, max_bytes: int, group: int = 0) -> None:
        self.directory, self.split, self.group = directory, split, group
        self.max_count, self.max_bytes = max_count, max_bytes
        self.names: list[str] = []
        self.counts: dict[str, int] = {}
        self.total = 0
        self._tar: wds.TarWriter | None = None
        self._bytes = 0

    def _rotate(self) -> None:
        self.close()
        k = len(self.names)
        name = f"{self.split}-{self.group:06d}.tar" if k == 0 else f"{self.split}-{self.group:06d}-{k:02d}.tar"
        self.names.append(name)
        self.counts[name] = 0
        # encoder=False: we hand over bytes. mtime is a fixed *int*: identical inputs give identical tars, and a float
        # mtime (TarWriter's default time.time()) adds a 1 KiB PAX header to every member, slowing every read
        self._tar = wds.TarWriter(str(self.directory / name), encoder=False, mtime=0)
        self._bytes = 0

    def write(self, key: str, ext: str, data: bytes, label: int) -> str:
        size = len(data) + _TAR_OVERHEAD
        if (
            self._tar is None
            or self.counts[self.names[-1]] >= self.max_count
            or (self._bytes + size > self.max_bytes and self.counts[self.names[-1]] > 0)
        ):
            self._rotate()
        assert self._tar is not None
        self._tar.write({"__key__": key, ext: data, "cls": str(label).encode()})
        name = self.names[-1]
        self.counts[name] += 1
        self.total += 1
        self._bytes += size
        return name

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None


def sample_key(rel: str) -> str:
    """A sample's key from its path in the source: no dots or slashes, as WebDataset splits key and extension at the
    first dot of the basename."""
    return "s" + hashlib.sha1(rel.encode("utf-8")).hexdigest()[:24]


def encoded(tree: SourceTree, work: list[tuple[str, SourceFile]], cfg: ShardConfig) -> Iterator[Encoded | Rejected]:
    """Each candidate of ``work`` encoded (or rejected), in order; a process pool for more than a few images."""
    paths = [tree.location(f.rel) for _, f in work]
    enc = cfg.encode_config()
    if cfg.procs() <= 1 or len(paths) < 64:
        yield from map(process_image, paths, repeat(enc))
        return
    ctx = None if is_local(tree.root) else multiprocessing.get_context("spawn")  # an S3 client does not survive fork
    with ProcessPoolExecutor(max_workers=cfg.procs(), mp_context=ctx) as pool:
        yield from pool.map(process_image, paths, repeat(enc), chunksize=16)


def write_group(
    tree: SourceTree,
    group: WorkGroup,
    cfg: ShardConfig,
    sink: ShardSink,
    results: Iterable[Encoded | Rejected] | None = None,
) -> GroupResult:
    """Encode (unless ``results`` already holds this group's, in order) and write one shard group into ``sink``."""
    writer = RotatingShardWriter(sink.directory, group.split, cfg.max_count, cfg.max_bytes, group=group.index)
    out = GroupResult(group.split, group.index)
    for (split, f), res in zip(group.work, encoded(tree, group.work, cfg) if results is None else results, strict=True):
        if isinstance(res, Rejected):
            out.rejected.append(
                {
                    "path": f.rel,
                    "class_name": f.class_name,
                    "reason": res.reason,
                    "bytes": res.src_bytes,
                    "sha256": res.sha256,
                }
            )
            continue
        key = sample_key(f.rel)
        shard = writer.write(key, res.ext, res.data, f.label)
        out.rows.append(
            {
                "key": key,
                "path": f.rel,
                "class_name": f.class_name,
                "label": f.label,
                "split": split,
                "shard": shard,
                "bytes": res.src_bytes,
                "sha256": res.sha256,
                "width": res.width,
                "height": res.height,
                "stored_bytes": len(res.data),
                "stored_width": res.stored_width,
                "stored_height": res.stored_height,
            }
        )
    writer.close()
    sink.finish(writer.names)
    out.shards, out.shard_counts = list(writer.names), dict(writer.counts)
    return out
