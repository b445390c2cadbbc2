"""ImageFolder tree -> versioned WebDataset shards + Parquet manifest (see docs/architecture.md for the layout).

Flow: scan (``source``, no decoding) -> split (``split``) -> content hashes -> fingerprint (``fingerprint``) -> no-op
if LATEST already has it -> cut each split into shard groups (``groups``) -> encode + write each group (``writer``,
in a process pool or one Ray task per group) -> publish (``publish``: a local OUT gets a build dir + atomic rename, a
URI OUT uploads shards, then tables, then LATEST). This module runs that story; each step is its own module.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from senet_dist.storage import basename, check_bucket, is_uri, join

from .config import ShardConfig
from .fingerprint import compute_fingerprint, hash_files, save_hash_cache
from .groups import EXECUTORS, Executor, cut_groups, run_groups
from .manifest import (
    MANIFEST_SCHEMA,
    REJECTED_SCHEMA,
    DatasetInfo,
    latest_version,
    normalise,
    write_json,
    write_latest,
    write_table,
)
from .publish import (
    BUILD_PREFIX,
    build_dir_prefix,
    next_local_version,
    next_remote_version,
    publish_tables,
    sweep_stale_builds,
)
from .source import SPLITS, DatasetError, SourceFile, SourceTree, scan_source
from .split import assign_splits
from .writer import ShardSink

log = logging.getLogger(__name__)
HASH_CACHE_NAME = ".hash-cache.json"
__all__ = ["BUILD_PREFIX", "HASH_CACHE_NAME", "ShardResult", "shard_dataset", "source_changed", "sweep_stale_builds"]


@dataclass
class ShardResult:
    version_dir: str  # a plain absolute path for a local OUT, else a URI
    fingerprint: str
    changed: bool
    counts: dict[str, int]
    num_rejected: int
    num_ignored: int = 0  # entries of the tree that are not samples (SourceTree.skipped; also in rejected.parquet)
    shards: dict[str, list[str]] = field(default_factory=dict)

    @property
    def message(self) -> str:
        state = "new version" if self.changed else "unchanged"
        return f"{state}: {basename(self.version_dir)} counts={self.counts} rejected={self.num_rejected}"


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


def source_changed(src: str | os.PathLike, shards_root: str, cfg: ShardConfig | None = None) -> tuple[bool, str]:
    """``(changed, fingerprint)``: whether ``src``'s fingerprint differs from the newest version under
    ``shards_root`` (cheap: no encoding). A local shards root lends its content-hash cache; a URI root re-hashes."""
    root = Path(shards_root) if not is_uri(shards_root) else None
    cache = root / HASH_CACHE_NAME if root is not None and root.is_dir() else None
    fingerprint = fingerprint_source(src, cfg, cache_path=cache)
    latest = latest_version(shards_root)
    return latest is None or DatasetInfo.load(latest).fingerprint != fingerprint, fingerprint


def _ordered_work(tree: SourceTree, assigned: dict[str, str], seed: int) -> list[tuple[str, SourceFile]]:
    """Samples per split in a seeded shuffled order, so every shard mixes classes."""
    work: list[tuple[str, SourceFile]] = []
    for split in SPLITS:
        members = [f for f in tree.files if assigned[f.rel] == split]
        random.Random(f"{seed}:{split}").shuffle(members)
        work.extend((split, f) for f in members)
    return work


def _progress(enabled: bool, total: int):
    if not enabled:
        return nullcontext(None)
    from rich.progress import Progress

    return Progress(transient=True)


def _write_version(tree: SourceTree, fp: str, cfg: ShardConfig, sink: ShardSink, executor: Executor) -> dict[str, Any]:
    """Write every shard group through ``sink`` and the two tables into ``sink.directory``; returns dataset.json."""
    assigned = assign_splits(tree.files, cfg.split_config(), tree.mode)
    work = _ordered_work(tree, assigned, cfg.seed)
    with _progress(cfg.progress, len(work)) as bar:
        task = bar.add_task("encoding images", total=len(work)) if bar else None
        tick = (lambda n: bar.advance(task, n)) if bar else None
        results = run_groups(tree, cut_groups(work, cfg.max_count), cfg, sink, executor, tick)
    rows = [r for g in results for r in g.rows]
    rejected = [r for g in results for r in g.rejected]
    if len({r["key"] for r in rows}) != len(rows):
        raise DatasetError("internal error: duplicate sample keys")
    counts = {s: sum(g.count for g in results if g.split == s) for s in SPLITS}
    if counts["train"] == 0:
        raise DatasetError(f"no usable training images in {tree.shown}: all {len(rejected)} candidates were rejected")
    if rejected:
        log.warning(
            "quarantined %d bad image(s) into rejected.parquet (e.g. %s: %s)",
            len(rejected),
            rejected[0]["path"],
            rejected[0]["reason"],
        )
    write_table(rows, MANIFEST_SCHEMA, sink.directory / "manifest.parquet")
    skipped = [
        {"path": s.rel, "class_name": s.class_name, "reason": s.reason, "bytes": s.size, "sha256": ""}
        for s in tree.skipped
    ]
    write_table(rejected + skipped, REJECTED_SCHEMA, sink.directory / "rejected.parquet")
    class_counts = {s: {c: 0 for c in tree.classes} for s in SPLITS}
    for r in rows:
        class_counts[r["split"]][r["class_name"]] += 1
    return {
        "fingerprint": fp,
        "classes": tree.classes,
        "counts": counts,
        "class_counts": class_counts,
        "shards": {s: [n for g in results if g.split == s for n in g.shards] for s in SPLITS},
        "shard_counts": {n: c for g in results for n, c in g.shard_counts.items()},
        "num_rejected": len(rejected),
        "num_ignored": len(tree.skipped),
        "source": tree.shown,
        "split_mode": tree.mode,
        **cfg.fingerprint_config(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "schema": 1,
    }


def shard_dataset(
    src: str | os.PathLike,
    out: str | os.PathLike,
    cfg: ShardConfig | None = None,
    *,
    executor: Executor = "processes",
) -> ShardResult:
    """Write a new dataset version under ``out`` (a path or URI) unless LATEST already holds this exact content +
    config. ``executor``: "processes" (this machine) or "ray" (one task per shard group; see ``groups``)."""
    cfg = cfg or ShardConfig()
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    out = normalise(out)
    local = not is_uri(out)
    if not local:
        check_bucket(out)  # a missing bucket, refused key or dead endpoint: one line, before hashing anything
    cache = Path(out) / HASH_CACHE_NAME if local and cfg.hash_cache and Path(out).is_dir() else None
    tree, digests, fp = _prepare(src, cfg, cache)
    current = latest_version(out)
    if current is not None:
        info = DatasetInfo.load(current)
        if info.fingerprint == fp:
            log.info("unchanged: %s already holds fingerprint %s", basename(current), fp[:12])
            shards = {s: [basename(p) for p in ps] for s, ps in info.shards.items()}
            return ShardResult(current, fp, False, info.counts, info.num_rejected, len(tree.skipped), shards)
    if local:
        version, meta = _publish_local(tree, fp, cfg, Path(out), executor)
        if cfg.hash_cache and not (Path(out) / HASH_CACHE_NAME).exists():
            save_hash_cache(tree, digests, Path(out) / HASH_CACHE_NAME)
    else:
        version, meta = _publish_remote(tree, fp, cfg, out, executor)
    vloc = join(out, version)
    return ShardResult(vloc, fp, True, meta["counts"], meta["num_rejected"], len(tree.skipped), meta["shards"])


def _publish_local(tree: SourceTree, fp: str, cfg: ShardConfig, out: Path, executor: Executor) -> tuple[str, dict]:
    """Build dir inside OUT -> atomic rename to the version name -> LATEST."""
    out.mkdir(parents=True, exist_ok=True)
    sweep_stale_builds(out)
    build = Path(tempfile.mkdtemp(dir=out, prefix=build_dir_prefix()))
    try:
        meta = _write_version(tree, fp, cfg, ShardSink(build), executor)
        version = next_local_version(out, fp)
        meta["version"] = version
        write_json(meta, build / "dataset.json")
        os.rename(build, out / version)  # atomic publish: fails rather than overwrite an existing version
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    write_latest(out, version)
    return version, meta


def _publish_remote(tree: SourceTree, fp: str, cfg: ShardConfig, out: str, executor: Executor) -> tuple[str, dict]:
    """Shards uploaded group by group from a local temp dir, then the tables, dataset.json, and LATEST last."""
    version = next_remote_version(out, fp)
    vloc = join(out, version)
    with tempfile.TemporaryDirectory(prefix="senet-shard-") as tmp:
        build = Path(tmp)
        meta = _write_version(tree, fp, cfg, ShardSink(build, upload_to=vloc), executor)
        meta["version"] = version
        write_json(meta, build / "dataset.json")
        publish_tables(build, vloc)
    write_latest(out, version)
    return version, meta
