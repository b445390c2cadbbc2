"""The per-rank, per-loader-worker sample stream over WebDataset shards.

Two partitioning modes, chosen from the shard count so no reader is ever starved:
- "shard": enough shards for every (rank, worker) slot -> rank gets ``shards[rank::world]`` (split_by_node), then
  worker gets ``rank_shards[w::W]`` (split_by_worker).
- "sample": fewer shards than slots -> every slot reads all shards and keeps samples with ``index % slots == slot``.
  Every slot then reads every byte: ``read_amplification`` times the data per epoch (make_loader warns).
Training streams cycle forever and are cut at an exact batch count; evaluation streams read once, no shuffle.
Shards are paths or URIs, read through data/reader.py (retries, read-ahead of the next shard).
"""

from __future__ import annotations

import math
import random
import re
import tarfile
from collections.abc import Callable, Generator, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from itertools import count
from typing import Any, BinaryIO

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from senet_dist.errors import PermanentError
from senet_dist.storage import redact

from .reader import RemoteShard, RetryPolicy, ShardUnavailableError, open_shard, read_ahead

IMAGE_KEYS = ("jpg", "png", "jpeg")
# The largest file a shard may hold for one sample entry: stored images are re-encoded (or originals, typically a few
# MB); anything near this is not a senet-dist shard, and reading it whole would only exhaust the worker's memory.
MAX_MEMBER_BYTES = 64 << 20
_META = re.compile(r"__[^/]*__($|/)")  # WebDataset's metadata entries, skipped as its own iterator skips them


class ShardReadError(PermanentError, RuntimeError):
    """A shard is missing, truncated, corrupt or inconsistent with the manifest."""


def iter_shard(
    location: str,
    expected: int | None = None,
    stream: BinaryIO | RemoteShard | None = None,
    retry: RetryPolicy | None = None,
) -> Iterator[dict[str, Any]]:
    """Samples of one tar shard (a path or URI) via WebDataset's tar iterators.

    Damage raises ``ShardReadError`` naming the shard and the sample count the manifest expects; storage that stays
    unreachable through the retry budget raises ``ShardUnavailableError`` (retryable). ``stream``: already opened
    (e.g. fetched ahead by :func:`read_ahead`); else the shard is opened here.
    """
    uri = redact(location)
    want = "" if expected is None else f", {expected} samples expected"
    n = 0
    try:
        with stream if stream is not None else open_shard(location, retry) as fileobj:
            files = ({**f, "__url__": uri} for f in tar_members(fileobj, uri))
            for sample in wds.tariterators.group_by_keys(files):
                if "cls" not in sample or not any(k in sample for k in IMAGE_KEYS):
                    raise ShardReadError(f"shard {uri}: sample {sample.get('__key__')} lacks an image or cls entry")
                n += 1
                yield sample
    except ShardUnavailableError as exc:
        raise ShardUnavailableError(exc.message) from None  # WebDataset appended to its args; one line again
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise ShardReadError(f"cannot read shard {uri} (missing, truncated or corrupt?{want}): {exc}") from exc
    if expected is not None and n != expected:
        raise ShardReadError(f"shard {uri} holds {n} samples but the manifest says {expected} (truncated?)")


def tar_members(fileobj: BinaryIO | RemoteShard, uri: str) -> Iterator[dict[str, Any]]:
    """``{fname, data}`` of each regular file of a tar stream, as WebDataset's ``tar_file_iterator`` gives them, but
    a member's size is checked (from its header) before it is read: an oversize member is a ``ShardReadError``."""
    tar = tarfile.open(fileobj=fileobj, mode="r|*")  # type: ignore[call-overload]
    for info in tar:
        if not info.isreg() or not info.name or _META.match(info.name):
            continue
        if info.size > MAX_MEMBER_BYTES:
            raise ShardReadError(
                f"shard {uri}: member {info.name!r} is {info.size:,} bytes, over the {MAX_MEMBER_BYTES:,}-byte limit "
                "for one sample entry (not a senet-dist shard?)"
            )
        member = tar.extractfile(info)
        assert member is not None  # a regular file
        yield {"fname": info.name, "data": member.read()}
        tar.members = []  # a stream of thousands of samples: keep no headers


def read_shards(shards: Iterable[tuple[str, int]], retry: RetryPolicy | None = None) -> Iterator[dict[str, Any]]:
    """Samples of ``shards`` in order, each remote shard fetched while the one before it is parsed."""
    for location, n, stream in read_ahead(shards, retry):
        yield from iter_shard(location, n, stream, retry)


def image_bytes(sample: dict[str, Any]) -> bytes:
    return next(sample[k] for k in IMAGE_KEYS if k in sample)


@dataclass(frozen=True)
class Slot:
    rank: int
    world: int
    worker: int
    workers: int

    @property
    def index(self) -> int:
        return self.rank * self.workers + self.worker

    @property
    def total(self) -> int:
        return self.world * self.workers


def partition_mode(num_shards: int, world: int, workers: int) -> str:
    return "shard" if num_shards >= world * max(1, workers) else "sample"


def read_amplification(num_shards: int, world: int, workers: int) -> int:
    """How many times an epoch reads the split's bytes: 1 in "shard" mode, else once per (rank, worker) slot."""
    return 1 if partition_mode(num_shards, world, workers) == "shard" else world * max(1, workers)


def slot_shards(shards: list[Any], slot: Slot) -> list[Any]:
    """split_by_node then split_by_worker, with rank/worker given explicitly."""
    return shards[slot.rank :: slot.world][slot.worker :: slot.workers]


def eval_slot_size(shards: list[tuple[str, int]], slot: Slot) -> int:
    if partition_mode(len(shards), slot.world, slot.workers) == "shard":
        return sum(n for _, n in slot_shards(shards, slot))
    total = sum(n for _, n in shards)
    return len(range(slot.index, total, slot.total))


def split_evenly(total: int, parts: int, i: int) -> int:
    return total // parts + (1 if i < total % parts else 0)


class ShardStream(IterableDataset):
    """Yields ready batches (collated in the worker) for one rank; ``batch_size=None`` in the DataLoader."""

    def __init__(
        self,
        shards: list[tuple[str, int]],
        *,
        rank: int,
        world: int,
        workers: int,
        train: bool,
        batch_size: int,
        steps: int,
        seed: int,
        epoch: int,
        shuffle_buffer: int,
        decode: Callable[[bytes, dict[str, Any]], Any],
        collate: Callable[[list[Any], list[int], list[str]], Any],
        retry: RetryPolicy | None = None,
        num_classes: int | None = None,
    ) -> None:
        self.shards, self.rank, self.world, self.workers = shards, rank, world, max(1, workers)
        self.num_classes = num_classes  # labels are checked against it (None: unchecked)
        self.train, self.batch_size, self.steps = train, batch_size, steps
        self.seed, self.epoch, self.shuffle_buffer = seed, epoch, shuffle_buffer
        self.decode, self.collate, self.retry = decode, collate, retry or RetryPolicy()
        self.mode = partition_mode(len(shards), world, self.workers)

    def __len__(self) -> int:
        return self.steps  # batches this rank yields (the DataLoader asks when workers are persistent)

    def _slot(self) -> Slot:
        info = get_worker_info()
        if info is None:
            return Slot(self.rank, self.world, 0, 1)
        if info.num_workers != self.workers:
            raise RuntimeError(f"stream planned for {self.workers} loader workers, DataLoader has {info.num_workers}")
        return Slot(self.rank, self.world, info.id, info.num_workers)

    def _train_plan(self, slot: Slot) -> Iterator[tuple[str, int]]:
        """This slot's shards, cycled forever, re-shuffled every cycle."""
        order = list(self.shards)
        random.Random(f"{self.seed}:{self.epoch}:assign").shuffle(order)  # new shard subsets every epoch
        mine = slot_shards(order, slot) if self.mode == "shard" else order
        for cycle in count():
            random.Random(f"{self.seed}:{self.epoch}:{cycle}:{slot.index if self.mode == 'shard' else 0}").shuffle(mine)
            yield from list(mine)

    def _train_samples(self, slot: Slot) -> Generator[dict[str, Any], None, None]:
        seen = count()  # runs across cycles, so even a tiny split reaches every slot
        for sample in read_shards(self._train_plan(slot), self.retry):
            if self.mode == "shard" or next(seen) % slot.total == slot.index:
                yield sample

    def _eval_samples(self, slot: Slot) -> Generator[dict[str, Any], None, None]:
        if self.mode == "shard":
            yield from read_shards(slot_shards(self.shards, slot), self.retry)
            return
        for i, sample in enumerate(read_shards(self.shards, self.retry)):
            if i % slot.total == slot.index:
                yield sample

    def _buffer_size(self, slot: Slot) -> int:
        """Never buffer more than one pass of this slot's samples: a larger buffer only re-reads the shards."""
        total = sum(n for _, n in self.shards)
        if self.mode == "sample":
            per_slot = total / slot.total
        else:
            per_slot = total * len(slot_shards(self.shards, slot)) / len(self.shards)
        return max(1, min(self.shuffle_buffer, int(per_slot)))

    def _shuffled(
        self, samples: Iterator[dict[str, Any]], rng: random.Random, size: int
    ) -> Generator[dict[str, Any], None, None]:
        buf: list[dict[str, Any]] = []
        for s in samples:
            if len(buf) < size:
                buf.append(s)
                continue
            j = rng.randrange(len(buf))
            yield buf[j]
            buf[j] = s
        rng.shuffle(buf)
        yield from buf

    def _decoded(self, sample: dict[str, Any]) -> tuple[Any, int, str]:
        label = self._label(sample)
        try:
            return self.decode(image_bytes(sample), sample), label, sample["__key__"]
        except ShardReadError:
            raise
        except Exception as exc:  # undecodable image inside an otherwise intact shard
            raise ShardReadError(
                f"shard {sample.get('__url__')}: cannot decode sample {sample.get('__key__')}: {exc}"
            ) from exc

    def _label(self, sample: dict[str, Any]) -> int:
        """The sample's class index, which must name one of the dataset's classes: an out-of-range label would index
        past the model's logits (a crash on the CPU, undefined behaviour on a GPU)."""
        raw, where = sample["cls"], f"shard {sample.get('__url__')}: sample {sample.get('__key__')}"
        try:
            label = int(raw)
        except (TypeError, ValueError):
            shown = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            raise ShardReadError(f"{where} has label {shown!r}, not a class index") from None
        if self.num_classes is not None and not 0 <= label < self.num_classes:
            raise ShardReadError(
                f"{where} has label {label}, outside the dataset's {self.num_classes} classes "
                f"(0..{self.num_classes - 1})"
            )
        return label

    def __iter__(self) -> Iterator[Any]:
        slot = self._slot()
        if get_worker_info() is not None:  # augmentation RNG: reproducible per (seed, epoch, slot)
            torch.manual_seed(hash((self.seed, self.epoch, slot.index)) & 0x7FFFFFFF)
        if self.train:
            rng = random.Random(f"{self.seed}:{self.epoch}:buffer:{slot.index}")
            samples = self._shuffled(self._train_samples(slot), rng, self._buffer_size(slot))
            limit = split_evenly(self.steps, slot.workers, slot.worker) * self.batch_size
        else:
            samples, limit = self._eval_samples(slot), math.inf  # type: ignore[assignment]  # int or no limit
        items, labels, keys = [], [], []
        emitted = 0
        with closing(samples):  # stops the read-ahead threads as soon as this slot has its share
            for sample in samples:
                if emitted >= limit:
                    break
                item, label, key = self._decoded(sample)
                items.append(item)
                labels.append(label)
                keys.append(key)
                emitted += 1
                if len(items) == self.batch_size:
                    yield self.collate(items, labels, keys)
                    items, labels, keys = [], [], []
        if items:
            yield self.collate(items, labels, keys)
