"""Shard groups: the unit of sharding work, and the two executors that run them.

Each split's ordered work list is cut into groups of ``max_count`` candidates; a group is encoded and written by one
function (``shard.write_group``) whose shard names depend only on (split, group index). So the local process pool
and one Ray task per group produce the same manifest rows, shard names and counts: only where the work runs differs.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from senet_dist.storage import is_local, storage_env, storage_environment

from .source import SourceFile, SourceTree

if TYPE_CHECKING:
    from .config import ShardConfig
    from .images import Encoded, Rejected

log = logging.getLogger(__name__)
Executor = Literal["processes", "ray"]
EXECUTORS: tuple[Executor, ...] = ("processes", "ray")


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
    from .shard import _encoded, write_group

    work = [item for g in groups for item in g.work]
    encoded = _ticking(_encoded(tree, work, cfg), tick)
    return [write_group(tree, g, cfg, sink, islice(encoded, len(g.work))) for g in groups]


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
    from .shard import write_group

    with storage_environment(env):
        if sink.upload_to is None:
            return write_group(tree, group, cfg, sink)
        with tempfile.TemporaryDirectory(prefix="senet-shard-group-") as tmp:
            return write_group(tree, group, cfg, replace(sink, directory=Path(tmp)))
