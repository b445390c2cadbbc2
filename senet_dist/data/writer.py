"""Per-split shard writer with count/byte limits that reports which shard each sample landed in."""

from __future__ import annotations

from pathlib import Path

import webdataset as wds

_TAR_OVERHEAD = 3 * 512  # two tar headers + padding per sample, roughly


class RotatingShardWriter:
    """Writes ``{split}-{n:06d}.tar`` files lazily, so an empty split produces no shard and a non-empty one >= 1."""

    def __init__(self, directory: Path, split: str, max_count: int, max_bytes: int) -> None:
        self.directory, self.split = directory, split
        self.max_count, self.max_bytes = max_count, max_bytes
        self.names: list[str] = []
        self.counts: dict[str, int] = {}
        self.total = 0
        self._tar: wds.TarWriter | None = None
        self._bytes = 0

    def _rotate(self) -> None:
        self.close()
        name = f"{self.split}-{len(self.names):06d}.tar"
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
