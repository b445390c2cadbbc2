"""Per-split shard writer with count/byte limits that reports which shard each sample landed in."""

from __future__ import annotations

from pathlib import Path

import webdataset as wds

_TAR_OVERHEAD = 3 * 512  # two tar headers + padding per sample, roughly


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
