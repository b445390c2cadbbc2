"""Shard groups: each split's ordered work list cut into groups of ``max_count`` candidates, and the two executors
that write them (this machine's process pool, or one Ray task per group on a cluster). Each group is written by
``writer.write_group``, whose shard names depend only on (split, group index), so both give the same rows.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from senet_dist.storage import is_local, storage_env, storage_environment

from .source import SourceFile, SourceTree
from .writer import GroupResult, ShardSink, WorkGroup, encoded, write_group

if TYPE_CHECKING:
    from .config import ShardConfig
    from .images import Encoded, Rejected

log = logging.getLogger(__name__)
Executor = Literal["processes", "ray"]
EXECUTORS: tuple[Executor, ...] = ("processes", "ray")


def cut_groups(work: list[tuple[str, SourceFile]], max_count: int) -> list[WorkGroup]:
    """Consecutive runs of ``max_count`` candidates per split (``work`` is ordered split by split)."""
    groups: list[WorkGroup] = []
    by_split: dict[str, list[tuple[str, SourceFile]]] = {}
    for item in work:
        by_split.setdefault(item[0], []).append(item)
    for split, items in by_split.items():
        for g, start in enumerate(range(0, len(items), max_count)):
            groups.append(WorkGroup(split, g, items[start : start + max_count]))
    return groups


def sharding_executor(src: str, out: str, ray_is_cluster: bool) -> Executor:
    """ "ray" only when Ray runs on a cluster AND both the source and OUT are remote URIs every node can reach (a local
    path or ``file://`` names a different disk on each node); else "processes"."""
    remote = not is_local(str(src)) and not is_local(str(out))
    return "ray" if ray_is_cluster and remote else "processes"


def run_groups(
    tree: SourceTree,
    groups: list[WorkGroup],
    cfg: ShardConfig,
    sink: ShardSink,
    executor: Executor,
    tick: Callable[[int], None] | None = None,
) -> list[GroupResult]:
    """Write every group; results in group order whatever the executor."""
    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if executor == "ray":
        return _run_ray(tree, groups, cfg, sink, tick)
    return _run_processes(tree, groups, cfg, sink, tick)


def _ticking(items: Iterable[Encoded | Rejected], tick: Callable[[int], None] | None) -> Iterator[Encoded | Rejected]:
    for item in items:
        yield item
        if tick:
            tick(1)


def _run_processes(
    tree: SourceTree,
    groups: list[WorkGroup],
    cfg: ShardConfig,
    sink: ShardSink,
    tick: Callable[[int], None] | None,
) -> list[GroupResult]:
    """One image-level process pool over all groups (no pool start-up per group); groups written in this process."""
    work = [item for g in groups for item in g.work]
    results = _ticking(encoded(tree, work, cfg), tick)
    return [write_group(tree, g, cfg, sink, islice(results, len(g.work))) for g in groups]


def _run_ray(
    tree: SourceTree,
    groups: list[WorkGroup],
    cfg: ShardConfig,
    sink: ShardSink,
    tick: Callable[[int], None] | None,
) -> list[GroupResult]:
    """One CPU task per group; the tree is put in the object store once, not pickled into every task."""
    import ray

    task = ray.remote(num_cpus=1)(_group_task)
    tree_ref = ray.put(tree)
    one_proc = cfg.model_copy(update={"num_procs": 1, "progress": False})
    env = storage_env()
    refs = [task.remote(tree_ref, g, one_proc, sink, env) for g in groups]
    results: list[GroupResult] = []
    for ref, g in zip(refs, groups, strict=True):
        results.append(ray.get(ref))
        if tick:
            tick(len(g.work))
    return results


def _group_task(
    tree: SourceTree, group: WorkGroup, cfg: ShardConfig, sink: ShardSink, env: dict[str, str]
) -> GroupResult:
    """Runs on any node: remote OUT -> build in a temp dir of this node and upload; local OUT -> the build dir."""
    with storage_environment(env):
        if sink.upload_to is None:
            return write_group(tree, group, cfg, sink)
        with tempfile.TemporaryDirectory(prefix="senet-shard-group-") as tmp:
            return write_group(tree, group, cfg, replace(sink, directory=Path(tmp)))
