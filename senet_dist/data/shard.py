"""ImageFolder tree -> versioned WebDataset shards + Parquet manifest (see docs/architecture.md for the layout).

Flow: scan (no decoding) -> split -> content hashes -> fingerprint -> no-op if LATEST already has it -> encode in a
process pool -> write shards/tables into a temp dir inside OUT -> rename to ``vNNNN-<fp12>`` -> update LATEST.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import repeat
from pathlib import Path
from typing import Any

from senet_dist.storage import is_local

from .config import ShardConfig
from .fingerprint import compute_fingerprint, hash_files, save_hash_cache
from .images import Encoded, Rejected, process_image
from .manifest import (
    MANIFEST_SCHEMA,
    REJECTED_SCHEMA,
    DatasetInfo,
    latest_version,
    list_versions,
    write_json,
    write_latest,
    write_table,
)
from .source import SPLITS, DatasetError, SourceFile, SourceTree, scan_source
from .split import assign_splits
from .writer import RotatingShardWriter

log = logging.getLogger(__name__)
HASH_CACHE_NAME = ".hash-cache.json"
BUILD_PREFIX = ".tmp-build-"


@dataclass
class ShardResult:
    version_dir: Path
    fingerprint: str
    changed: bool
    counts: dict[str, int]
    num_rejected: int
    num_ignored: int = 0  # entries of the tree that are not samples (SourceTree.skipped; also in rejected.parquet)
    shards: dict[str, list[str]] = field(default_factory=dict)

    @property
    def message(self) -> str:
        state = "new version" if self.changed else "unchanged"
        return f"{state}: {self.version_dir.name} counts={self.counts} rejected={self.num_rejected}"


def _prepare(
    src: str | os.PathLike, cfg: ShardConfig, cache_path: Path | None
) -> tuple[SourceTree, dict[str, str], str]:
    tree = scan_source(src, cfg.split_mode)
    assign_splits(tree.files, cfg.split_config(), tree.mode)  # raises for classes too small to split
    digests = hash_files(tree, threads=max(2, cfg.procs()), cache_path=cache_path)
    return tree, digests, compute_fingerprint(tree, digests, cfg.fingerprint_config())


def fingerprint_source(
    src: str | os.PathLike, cfg: ShardConfig | None = None, *, cache_path: Path | None = None
) -> str:
    """The fingerprint ``shard_dataset(src, out, cfg)`` would record, without decoding or writing shards."""
    return _prepare(src, cfg or ShardConfig(), cache_path)[2]


def _key(rel: str) -> str:
    # no dots or slashes: WebDataset splits key/extension at the first dot of the basename
    return "s" + hashlib.sha1(rel.encode("utf-8")).hexdigest()[:24]


def _ordered_work(tree: SourceTree, assigned: dict[str, str], seed: int) -> list[tuple[str, SourceFile]]:
    """Samples per split in a seeded shuffled order, so every shard mixes classes."""
    work: list[tuple[str, SourceFile]] = []
    for split in SPLITS:
        members = [f for f in tree.files if assigned[f.rel] == split]
        random.Random(f"{seed}:{split}").shuffle(members)
        work.extend((split, f) for f in members)
    return work


def _encoded(tree: SourceTree, work: list[tuple[str, SourceFile]], cfg: ShardConfig) -> Iterator[Encoded | Rejected]:
    paths = [tree.location(f.rel) for _, f in work]
    enc = cfg.encode_config()
    if cfg.procs() <= 1 or len(paths) < 64:
        yield from map(process_image, paths, repeat(enc))
        return
    ctx = None if is_local(tree.root) else multiprocessing.get_context("spawn")  # an S3 client does not survive fork
    with ProcessPoolExecutor(max_workers=cfg.procs(), mp_context=ctx) as pool:
        yield from pool.map(process_image, paths, repeat(enc), chunksize=16)


def _progress(enabled: bool, total: int):
    if not enabled:
        return nullcontext(None)
    from rich.progress import Progress

    return Progress(transient=True)


def _write_version(tree: SourceTree, digests: dict[str, str], fp: str, cfg: ShardConfig, build: Path) -> dict[str, Any]:
    assigned = assign_splits(tree.files, cfg.split_config(), tree.mode)
    work = _ordered_work(tree, assigned, cfg.seed)
    writers = {s: RotatingShardWriter(build, s, cfg.max_count, cfg.max_bytes) for s in SPLITS}
    rows: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    with _progress(cfg.progress, len(work)) as bar:
        task = bar.add_task("encoding images", total=len(work)) if bar else None
        for (split, f), res in zip(work, _encoded(tree, work, cfg), strict=True):
            if isinstance(res, Rejected):
                rejected.append(
                    {
                        "path": f.rel,
                        "class_name": f.class_name,
                        "reason": res.reason,
                        "bytes": res.src_bytes,
                        "sha256": res.sha256,
                    }
                )
            else:
                key = _key(f.rel)
                shard = writers[split].write(key, res.ext, res.data, f.label)
                rows.append(
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
            if bar:
                bar.advance(task)
    for w in writers.values():
        w.close()
    if len({r["key"] for r in rows}) != len(rows):
        raise DatasetError("internal error: duplicate sample keys")
    counts = {s: writers[s].total for s in SPLITS}
    if counts["train"] == 0:
        raise DatasetError(f"no usable training images in {tree.shown}: all {len(rejected)} candidates were rejected")
    if rejected:
        log.warning(
            "quarantined %d bad image(s) into rejected.parquet (e.g. %s: %s)",
            len(rejected),
            rejected[0]["path"],
            rejected[0]["reason"],
        )
    write_table(rows, MANIFEST_SCHEMA, build / "manifest.parquet")
    skipped = [
        {"path": s.rel, "class_name": s.class_name, "reason": s.reason, "bytes": s.size, "sha256": ""}
        for s in tree.skipped
    ]
    write_table(rejected + skipped, REJECTED_SCHEMA, build / "rejected.parquet")
    class_counts = {s: {c: 0 for c in tree.classes} for s in SPLITS}
    for r in rows:
        class_counts[r["split"]][r["class_name"]] += 1
    return {
        "fingerprint": fp,
        "classes": tree.classes,
        "counts": counts,
        "class_counts": class_counts,
        "shards": {s: writers[s].names for s in SPLITS},
        "shard_counts": {n: c for w in writers.values() for n, c in w.counts.items()},
        "num_rejected": len(rejected),
        "num_ignored": len(tree.skipped),
        "source": tree.shown,
        "split_mode": tree.mode,
        **cfg.fingerprint_config(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "schema": 1,
    }


def shard_dataset(src: str | os.PathLike, out: str | os.PathLike, cfg: ShardConfig | None = None) -> ShardResult:
    """Write a new dataset version under ``out`` unless LATEST already holds this exact content + config."""
    cfg = cfg or ShardConfig()
    out = Path(out).expanduser().resolve()
    tree, digests, fp = _prepare(src, cfg, out / HASH_CACHE_NAME if cfg.hash_cache and out.is_dir() else None)
    current = latest_version(out)
    if current is not None:
        info = DatasetInfo.load(current)
        if info.fingerprint == fp:
            log.info("unchanged: %s already holds fingerprint %s", current.name, fp[:12])
            return ShardResult(
                current,
                fp,
                False,
                info.counts,
                info.num_rejected,
                len(tree.skipped),
                {s: [p.name for p in ps] for s, ps in info.shards.items()},
            )
    out.mkdir(parents=True, exist_ok=True)
    sweep_stale_builds(out)
    build = Path(tempfile.mkdtemp(dir=out, prefix=f"{BUILD_PREFIX}{_host()}-{os.getpid()}-"))
    try:
        meta = _write_version(tree, digests, fp, cfg, build)
        existing = list_versions(out)
        number = 1 + max((int(p.name[1:].split("-")[0]) for p in existing), default=0)
        version = f"v{number:04d}-{fp[:12]}"
        meta["version"] = version
        write_json(meta, build / "dataset.json")
        os.rename(build, out / version)  # atomic publish: fails rather than overwrite an existing version
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    write_latest(out, version)
    if cfg.hash_cache and not (out / HASH_CACHE_NAME).exists():
        save_hash_cache(tree, digests, out / HASH_CACHE_NAME)
    return ShardResult(out / version, fp, True, meta["counts"], meta["num_rejected"], len(tree.skipped), meta["shards"])


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname()) or "host"


def sweep_stale_builds(out: Path) -> list[Path]:
    """Remove temp build dirs of killed shard runs: only those this host's dead processes left behind.

    A build dir is named ``.tmp-build-<host>-<pid>-<random>``; one from another host (a shared filesystem) or from a
    live process (a concurrent shard run) is kept, and so is any name this code did not write."""
    removed = []
    for d in out.glob(f"{BUILD_PREFIX}*"):
        parts = d.name[len(BUILD_PREFIX) :].rsplit("-", 2)
        if len(parts) != 3 or parts[0] != _host() or not parts[1].isdigit() or _alive(int(parts[1])):
            continue
        shutil.rmtree(d, ignore_errors=True)
        log.info("removed %s, left by a shard run that no longer exists", d.name)
        removed.append(d)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
