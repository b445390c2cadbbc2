"""The per-rank, per-loader-worker sample stream over WebDataset shards.

Two partitioning modes, chosen from the shard count so no reader is ever starved:
- "shard": enough shards for every (rank, worker) slot -> rank gets ``shards[rank::world]`` (split_by_node), then
  worker gets ``rank_shards[w::W]`` (split_by_worker).
- "sample": fewer shards than slots -> every slot reads all shards and keeps samples with ``index % slots == slot``.
Training streams cycle forever and are cut at an exact batch count; evaluation streams read once, no shuffle.
"""

from __future__ import annotations

import math
import random
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import count
from typing import Any

import torch
import webdataset as wds
from torch.utils.data import IterableDataset, get_worker_info

from senet_dist.errors import PermanentError

IMAGE_KEYS = ("jpg", "png", "jpeg")


class ShardReadError(PermanentError, RuntimeError):
    """A shard is truncated, corrupt or inconsistent with the manifest."""


def iter_shard(path: str, expected: int | None = None) -> Iterator[dict[str, Any]]:
    """Samples of one tar shard via WebDataset's tar iterators; any damage raises ``ShardReadError`` naming it."""
    n = 0
    try:
        with open(path, "rb") as stream:
            files = ({**f, "__url__": path} for f in wds.tariterators.tar_file_iterator(stream))
            for sample in wds.tariterators.group_by_keys(files):
                if "cls" not in sample or not any(k in sample for k in IMAGE_KEYS):
                    raise ShardReadError(f"shard {path}: sample {sample.get('__key__')} lacks an image or cls entry")
                n += 1
                yield sample
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise ShardReadError(f"cannot read shard {path} (truncated or corrupt?): {exc}") from exc
    if expected is not None and n != expected:
        raise ShardReadError(f"shard {path} holds {n} samples but the manifest says {expected} (truncated?)")


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
    ) -> None:
        self.shards, self.rank, self.world, self.workers = shards, rank, world, max(1, workers)
        self.train, self.batch_size, self.steps = train, batch_size, steps
        self.seed, self.epoch, self.shuffle_buffer = seed, epoch, shuffle_buffer
        self.decode, self.collate = decode, collate
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

    def _train_samples(self, slot: Slot) -> Iterator[dict[str, Any]]:
        order = list(self.shards)
        random.Random(f"{self.seed}:{self.epoch}:assign").shuffle(order)  # new shard subsets every epoch
        mine = slot_shards(order, slot) if self.mode == "shard" else order
        seen = count()  # runs across cycles, so even a tiny split reaches every slot
        for cycle in count():
            random.Random(f"{self.seed}:{self.epoch}:{cycle}:{slot.index if self.mode == 'shard' else 0}").shuffle(mine)
            for path, n in mine:
                for sample in iter_shard(path, n):
                    if self.mode == "shard" or next(seen) % slot.total == slot.index:
                        yield sample

    def _eval_samples(self, slot: Slot) -> Iterator[dict[str, Any]]:
        if self.mode == "shard":
            for path, n in slot_shards(self.shards, slot):
                yield from iter_shard(path, n)
            return
        for i, sample in enumerate(s for path, n in self.shards for s in iter_shard(path, n)):
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

    def _shuffled(self, samples: Iterator[dict[str, Any]], rng: random.Random, size: int) -> Iterator[dict[str, Any]]:
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
        try:
            label = int(sample["cls"])
            return self.decode(image_bytes(sample), sample), label, sample["__key__"]
        except ShardReadError:
            raise
        except Exception as exc:  # undecodable image inside an otherwise intact shard
            raise ShardReadError(
                f"shard {sample.get('__url__')}: cannot decode sample {sample.get('__key__')}: {exc}"
            ) from exc

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
