"""Per-rank batch loader over a dataset version's WebDataset shards.

Training: every rank yields exactly ``len(loader)`` batches (steps = train samples // (world * batch)), cycling its
shards as needed, so no rank blocks DDP's all-reduce (webdataset issue #188). Evaluation: ranks together visit every
sample exactly once; ranks may yield *different* batch counts, so callers must not all-reduce per eval step (sum
metrics locally and all-reduce once at the end).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch.utils.data import DataLoader

from senet_dist.devices import resolve_device
from senet_dist.schema import Section

from .gpu_decode import decode_batch
from .manifest import DatasetInfo
from .reader import RetryPolicy
from .source import SPLITS, DatasetError
from .stream import ShardStream, Slot, eval_slot_size, read_amplification
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageDecoder,
    Normalizer,
    build_transform,
    bytes_collate,
    eval_resize,
    raw_bytes,
    uint8_collate,
)


class LoaderOptions(Section):
    """How batches are read and augmented: the part of a loader a training config sets (``TrainConfig.loader``)."""

    TITLE: ClassVar[str] = "loader config"
    num_workers: int = Field(1, ge=0)  # DataLoader worker processes per rank (0: read in the training process)
    gpu_decode: bool = False  # ship encoded bytes, decode + augment on `decode_device`
    decode_device: str | None = None  # None -> "cuda"
    gpu_fallback: Literal["cpu", "error"] = "cpu"  # without CUDA: decode on the CPU, or raise
    shuffle_buffer: int = Field(1000, ge=1)  # samples per loader worker
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    # training view (data/transforms.py AUGMENTS): random_resized_crop (crop_scale of the area; eval: resize +
    # centre crop by eval_crop_ratio), pad_crop (CIFAR: pad `pad` px, random crop), resize (no crop, no zoom)
    augment: Literal["random_resized_crop", "pad_crop", "resize"] = "random_resized_crop"
    crop_scale: tuple[float, float] = (0.08, 1.0)  # random_resized_crop only
    pad: int = Field(4, ge=0)  # pad_crop only: zero padding on each side before the random crop
    hflip: bool = True  # random horizontal flip in training, every augment mode
    eval_crop_ratio: float = Field(0.875, gt=0, le=1)  # random_resized_crop only
    decoder: Literal["torchvision", "pil"] = "torchvision"  # CPU path: torchvision (pre-resized shards) or pil (draft)
    pin_memory: bool | None = None  # None -> torch.cuda.is_available()
    persistent_workers: bool = False
    prefetch_factor: int = Field(2, ge=1)
    # shards on object storage: tries of one read through transient errors (connection reset, 5xx, timeouts), with
    # backoff, before the worker fails with ShardUnavailableError (retried by Ray Train / the flow from a checkpoint)
    read_attempts: int = Field(RetryPolicy.attempts, ge=1)


class LoaderConfig(LoaderOptions):
    """One rank's loader: the options plus what the training run decides (batch, image size, seed)."""

    batch_size: int = Field(64, ge=1)  # per rank
    image_size: int = Field(224, ge=1)
    seed: int = 0
    steps_per_epoch: int | None = None  # override the manifest-derived training steps
    device: str | None = None  # CPU path: move the uint8 batch here, then normalise (e.g. "cuda"); None -> CPU


log = logging.getLogger(__name__)
_WARNED: set[tuple[str, str, int]] = set()  # (version, split, slots): one warning per process, not one per epoch


def warn_read_amplification(info: DatasetInfo, split: str, world: int, workers: int) -> None:
    """Say when every reader slot streams the whole split ("sample" mode), and how many shards would avoid it."""
    slots = world * max(1, workers)
    shards = len(info.shards[split])
    factor = read_amplification(shards, world, workers)
    if factor <= 1 or (info.version, split, slots) in _WARNED:
        return
    _WARNED.add((info.version, split, slots))
    log.warning(
        "split %r of dataset %s has %d shard(s) for %d rank(s) x %d loader worker(s): every one of the %d reader "
        "slots reads all %d shards: %d x the data is read per epoch. Re-shard with --max-count %d (>= %d shards "
        "for this split)",
        split,
        info.version,
        shards,
        world,
        max(1, workers),
        slots,
        shards,
        factor,
        max(1, info.counts[split] // slots),
        slots,
    )


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # N loader processes x M torch threads would oversubscribe the cores


def _decode_device(cfg: LoaderConfig) -> torch.device:
    return resolve_device(
        cfg.decode_device or "cuda", cfg.gpu_fallback, hint="set gpu_decode=False or gpu_fallback='cpu'"
    )


def _shutdown(it: Any) -> None:
    """Best effort: a failure while stopping workers must never replace the error that got us here."""
    stop = getattr(it, "_shutdown_workers", None)  # multiprocessing iterators only
    if stop is not None:
        try:
            stop()
        except Exception:  # noqa: BLE001
            pass


class Loader:
    """Iterable of batches with a known length; each new iteration reshuffles (the next epoch).

    With persistent workers every iteration replays the loader's ``epoch`` (the workers hold a copy of the stream):
    build a new loader per epoch, as the training worker does.
    """

    def __init__(
        self, stream: ShardStream, cfg: LoaderConfig, num_batches: int, train: bool, return_keys: bool
    ) -> None:
        self.stream, self.cfg, self.train, self.return_keys = stream, cfg, train, return_keys
        self.num_batches = num_batches
        self.epoch, self._iterations = stream.epoch, 0
        self.device = _decode_device(cfg) if cfg.gpu_decode else None
        self.normalizer = Normalizer(cfg.mean, cfg.std)
        self._persistent: DataLoader | None = None

    def __len__(self) -> int:
        return self.num_batches

    def _dataloader(self) -> DataLoader:
        cfg = self.cfg
        workers = cfg.num_workers
        pin = torch.cuda.is_available() if cfg.pin_memory is None else cfg.pin_memory
        kwargs: dict[str, Any] = {}
        if workers > 0:
            kwargs = dict(
                prefetch_factor=cfg.prefetch_factor,
                persistent_workers=cfg.persistent_workers,
                worker_init_fn=_worker_init,
                multiprocessing_context=_mp_context(),
            )
        return DataLoader(self.stream, batch_size=None, num_workers=workers, pin_memory=pin, **kwargs)

    def __iter__(self) -> Iterator[tuple]:
        if self.cfg.persistent_workers and self.cfg.num_workers > 0:
            # workers keep their copy of the stream: this loader's epoch, every time
            self.stream.epoch = self.epoch
            self._persistent = self._persistent or self._dataloader()
            loader = self._persistent
        else:
            self.stream.epoch = self.epoch + self._iterations
            self._iterations += 1
            loader = self._dataloader()
        n = 0
        it = iter(loader)
        try:
            for batch in it:
                n += 1
                yield self._finish(batch)
        except BaseException:
            _shutdown(it)  # now, not at some later gc pass (which stalls ~5 s per worker)
            raise
        if self.train and n != self.num_batches:
            raise RuntimeError(f"loader yielded {n} batches, expected {self.num_batches}")

    def _finish(self, batch: tuple) -> tuple:
        datas, labels, keys = batch
        cfg = self.cfg
        if self.device is None:  # CPU path: workers shipped uint8 NCHW
            if cfg.device is not None:
                datas, labels = datas.to(cfg.device, non_blocking=True), labels.to(cfg.device, non_blocking=True)
            images = self.normalizer(datas)
            return (images, labels, keys) if self.return_keys else (images, labels)
        images = decode_batch(
            datas,
            train=self.train,
            image_size=cfg.image_size,
            device=self.device,
            normalizer=self.normalizer,
            augment=cfg.augment,
            scale=cfg.crop_scale,
            hflip=cfg.hflip,
            crop_ratio=cfg.eval_crop_ratio,
            pad=cfg.pad,
        )
        labels = labels.to(self.device, non_blocking=True)
        return (images, labels, keys) if self.return_keys else (images, labels)


def _train_steps(info: DatasetInfo, split: str, cfg: LoaderConfig, world: int) -> int:
    if cfg.steps_per_epoch is not None:
        return cfg.steps_per_epoch
    return max(1, info.counts[split] // (world * cfg.batch_size))


def make_loader(
    version_dir: str | os.PathLike | DatasetInfo,
    split: str,
    cfg: LoaderConfig | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    epoch: int = 0,
    train: bool | None = None,
    return_keys: bool = False,
) -> Loader:
    """Batches of (images float32 NCHW normalised, labels int64[, keys]) for ``rank`` of ``world_size``.

    ``version_dir`` may be an already loaded ``DatasetInfo`` (a version never changes): a training worker loads it
    once, so a new epoch's loaders do not depend on reading dataset.json from object storage again."""
    cfg = cfg or LoaderConfig()
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} out of range for world_size {world_size}")
    train = (split == "train") if train is None else train
    info = version_dir if isinstance(version_dir, DatasetInfo) else DatasetInfo.load(version_dir)
    shards = info.shard_entries(split)
    if train and info.counts[split] == 0:
        raise DatasetError(f"split {split!r} of {info.version_dir} is empty; cannot train on it")
    workers = max(1, cfg.num_workers)
    if train and rank == 0:
        warn_read_amplification(info, split, world_size, workers)
    if train:
        num_batches = _train_steps(info, split, cfg, world_size)
    else:
        sizes = [eval_slot_size(shards, Slot(rank, world_size, w, workers)) for w in range(workers)]
        num_batches = sum(math.ceil(n / cfg.batch_size) for n in sizes)
    center_crop = cfg.augment == "random_resized_crop" and not train
    target = eval_resize(cfg.image_size, cfg.eval_crop_ratio) if center_crop else cfg.image_size
    if cfg.gpu_decode:
        decode, collate = raw_bytes, bytes_collate
    else:
        transform = build_transform(
            cfg.image_size,
            train,
            augment=cfg.augment,
            scale=cfg.crop_scale,
            hflip=cfg.hflip,
            crop_ratio=cfg.eval_crop_ratio,
            pad=cfg.pad,
        )
        decode = ImageDecoder(transform, target if cfg.decoder == "pil" else None)
        collate = uint8_collate
    stream = ShardStream(
        shards,
        rank=rank,
        world=world_size,
        workers=cfg.num_workers,
        train=train,
        batch_size=cfg.batch_size,
        steps=num_batches,
        seed=cfg.seed,
        epoch=epoch,
        shuffle_buffer=cfg.shuffle_buffer,
        decode=decode,
        collate=collate,
        retry=RetryPolicy(attempts=cfg.read_attempts),
        num_classes=info.num_classes,
    )
    return Loader(stream, cfg, num_batches, train, return_keys)


def _mp_context() -> str | None:
    """Fork is fastest and fine inside Ray Train workers, but forked children of a process where Prefect's
    background threads run (after an in-process flow run) die on arrival (exit 1): use forkserver there."""
    return "forkserver" if "prefect" in sys.modules and threading.active_count() > 1 else None
