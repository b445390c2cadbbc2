"""Content fingerprint of a source tree: the identity of a dataset version.

sha256 over sorted (relative path, content sha256, label) plus the split and encode configs; the root is not part of
it, so the same files give the same fingerprint from a local folder or from object storage. File hashing runs in
threads (hashlib and pyarrow release the GIL) and can reuse a small JSON cache keyed by (size, mtime_ns) from the
source listing, which makes the data-change trigger cheap on an unchanged tree (no stat, no read per file).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from senet_dist.storage import is_local

from .images import sha256_file
from .source import SourceFile, SourceTree

REMOTE_READERS = 16  # object-store reads wait on the network, not the CPU: more in flight than cores


def _load_cache(path: Path | None, root: str) -> dict[str, list]:
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data.get("files", {}) if data.get("root") == str(root) else {}


def _save_cache(path: Path, root: str, files: dict[str, list]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".hash-cache-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"root": str(root), "files": files}, f)
    os.replace(tmp, path)


def hash_files(tree: SourceTree, *, threads: int = 8, cache_path: Path | None = None) -> dict[str, str]:
    """sha256 of every source file's content (read through its filesystem), keyed by relative path."""
    cache = _load_cache(cache_path, tree.shown)
    fresh: dict[str, list] = {}
    todo: list[SourceFile] = []
    digests: dict[str, str] = {}
    for f in tree.files:
        hit = cache.get(f.rel)
        if hit and hit[0] == f.size and hit[1] == f.mtime_ns:
            digests[f.rel] = hit[2]
            fresh[f.rel] = hit
        else:
            todo.append(f)
    workers = max(1, threads) if is_local(tree.root) else max(threads, REMOTE_READERS)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        digested = pool.map(lambda f: sha256_file(tree.location(f.rel)), todo)
        for f, digest in zip(todo, digested, strict=True):
            digests[f.rel] = digest
            fresh[f.rel] = [f.size, f.mtime_ns, digest]
    if cache_path is not None and (todo or len(fresh) != len(cache)):
        _save_cache(cache_path, tree.shown, fresh)
    return digests


def save_hash_cache(tree: SourceTree, digests: dict[str, str], cache_path: Path) -> None:
    """Record already-computed hashes (used when OUT did not exist while hashing)."""
    files = {f.rel: [f.size, f.mtime_ns, digests[f.rel]] for f in tree.files}
    _save_cache(cache_path, tree.shown, files)


def compute_fingerprint(tree: SourceTree, digests: dict[str, str], config: dict[str, Any]) -> str:
    h = hashlib.sha256()
    for f in sorted(tree.files, key=lambda f: f.rel):
        h.update(f"{f.rel}\0{digests[f.rel]}\0{f.label}\n".encode())
    h.update(json.dumps({"classes": tree.classes, "mode": tree.mode, **config}, sort_keys=True).encode())
    return h.hexdigest()
