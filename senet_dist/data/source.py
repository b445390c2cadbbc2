"""Scan an ImageFolder tree (flat or with a predefined train/val/test split) without decoding anything.

The tree may be a local folder or any ``pyarrow.fs`` URI (``s3://bucket/photos``): both are read through ONE
recursive listing (on S3: one LIST request per 1000 objects, no per-file HEAD), which also yields every file's size
and mtime for the hash cache. Semantics follow torchvision's ``ImageFolder`` (``find_classes`` / ``make_dataset``):
the classes are the folders directly under the root (or under each split folder), and every image anywhere below a
class folder belongs to that class. Every entry not used is kept as a ``Skipped`` with its reason, so nothing is
dropped silently.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.fs as pafs

from senet_dist import storage
from senet_dist.errors import PermanentError

from .images import IMAGE_EXTS

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
NOT_IN_SPLIT = "not in a split folder (train/, val/, test/)"
OUTSIDE_CLASS = "outside any class folder"


class DatasetError(PermanentError, ValueError):
    """The input tree or configuration cannot produce a valid dataset version."""


@dataclass(frozen=True)
class SourceFile:
    rel: str  # POSIX path relative to SRC (recorded in the manifest)
    class_name: str
    label: int
    fixed_split: str | None  # set when the tree defines the split (train/, val/, test/)
    size: int = 0  # bytes, from the listing (the hash cache key, with mtime_ns: no second stat)
    mtime_ns: int = 0


@dataclass(frozen=True)
class Skipped:
    """An entry of the tree that is not a sample (recorded in rejected.parquet)."""

    rel: str  # a file, or a hidden folder as "<rel>/" (its contents are one entry)
    reason: str
    class_name: str = ""  # the class folder it lies in, "" when outside every class
    size: int = 0  # bytes (a folder: the total of its files)


@dataclass
class SourceTree:
    root: str  # absolute local path, or the URI as given
    classes: list[str]
    files: list[SourceFile]
    mode: str  # "random" or "predefined"
    skipped: list[Skipped] = field(default_factory=list)

    def location(self, rel: str) -> str:
        """Where the file ``rel`` is: a local path or a URI (readable by ``images.read_source``)."""
        return storage.join(self.root, rel)

    @property
    def shown(self) -> str:
        """The root for messages and records (``storage.redact``: no user:password, no query string)."""
        return storage.redact(self.root)


@dataclass(frozen=True)
class _Entry:
    parts: tuple[str, ...]  # path components relative to the root
    size: int
    mtime_ns: int


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _list(root: str) -> tuple[list[_Entry], set[tuple[str, ...]]]:
    """(every file, every folder) under ``root`` from one recursive listing; folders implied by keys included."""
    try:
        fs, base = storage.resolve_filesystem(root)
    except ValueError as exc:  # resolve_filesystem's message shows the location redacted
        raise DatasetError(str(exc)) from None
    with storage.storage_errors(root):  # a missing bucket, refused keys, a dead endpoint: one StorageError line
        storage.check_bucket(root)
        if fs.get_file_info(base).type != pafs.FileType.Directory:
            raise DatasetError(f"source directory does not exist: {storage.redact(root)}")
        listing = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    prefix = base.rstrip("/") + "/"
    files: list[_Entry] = []
    dirs: set[tuple[str, ...]] = set()
    for info in listing:
        parts = tuple(info.path[len(prefix) :].strip("/").split("/"))
        if info.type == pafs.FileType.Directory:
            dirs.add(parts)
        elif info.type == pafs.FileType.File:
            files.append(_Entry(parts, info.size or 0, info.mtime_ns or 0))
            dirs.update(parts[:i] for i in range(1, len(parts)))
    return files, dirs


def _is_predefined_layout(dirs: set[tuple[str, ...]]) -> bool:
    """True for ``train/<class>/*`` + ``test/<class>/*`` (+ optional ``val/``), with no other folder at the top."""
    names = {d[0] for d in dirs if len(d) == 1 and not _hidden(d[0])}
    if "train" not in names or not names & {"val", "test"} or names - set(SPLITS):
        return False
    return all(any(len(d) == 2 and d[0] == n and not _hidden(d[1]) for d in dirs) for n in names)


def _place(parts: tuple[str, ...], predefined: bool, uri: bool) -> tuple[str, str, str | None]:
    """(key, class name or "", reason to skip or None) for one file; key is the rel of the entry it counts under."""
    depth = 1 if predefined else 0  # index of the class folder in ``parts``
    rel = "/".join(parts)
    if any(p in ("", ".", "..") for p in parts):  # an object store key such as "cls//x.jpg" or "cls/../x.jpg"
        return rel, "", "unsafe name (an empty, '.' or '..' path segment)"
    cls = parts[depth] if len(parts) > depth + 1 else ""
    hidden = next((i for i, p in enumerate(parts) if _hidden(p)), None)
    if hidden is not None:
        owner = cls if hidden > depth else ""
        if hidden < len(parts) - 1:
            return "/".join(parts[: hidden + 1]) + "/", owner, "hidden folder"
        return rel, owner, "hidden file"
    if predefined and len(parts) == 1:
        return rel, "", NOT_IN_SPLIT
    if not cls:
        return rel, "", OUTSIDE_CLASS
    ext = os.path.splitext(parts[-1])[1].lower()
    if ext not in IMAGE_EXTS:
        return rel, cls, f"not an image file ({ext or 'no extension'})"
    if uri and "?" in rel:  # in a URI, "?" starts the query string: this object cannot be named by a location
        return rel, cls, "name contains '?' (not addressable in a URI)"
    return rel, cls, None


def _skipped(found: dict[str, Skipped], rel: str, cls: str, reason: str, size: int) -> None:
    prev = found.get(rel)
    found[rel] = Skipped(rel, reason, cls, size + (prev.size if prev else 0))


def _log_skipped(skipped: list[Skipped], root: str) -> None:
    """A warning when something that looks like data was skipped; hidden entries alone (``.DS_Store``, a built-in
    dataset's marker) are only logged: they are listed in rejected.parquet either way."""
    if skipped:
        reasons = Counter(s.reason for s in skipped).most_common()
        summary = ", ".join(f"{n} {reason}" for reason, n in reasons[:5]) + (", ..." if len(reasons) > 5 else "")
        level = logging.INFO if all(s.reason.startswith("hidden") for s in skipped) else logging.WARNING
        log.log(level, "skipped %d entries in %s: %s (e.g. %s)", len(skipped), root, summary, skipped[0].rel)


def _check_classes(per_split: dict[str | None, dict[str, list[_Entry]]], classes: list[str], root: str) -> None:
    if not classes:
        raise DatasetError(
            f"no class folders found in {root} (expected an ImageFolder tree: SRC/<class>/[<subfolders>/]<image>)"
        )
    for split, by_class in per_split.items():
        empty = [c for c in classes if not by_class.get(c)]
        if empty and (split is None or split == "train"):
            where = f"{split}/" if split else ""
            raise DatasetError(f"class folder(s) with no images in {root}/{where}: {', '.join(empty)}")


def _root(src: str | os.PathLike) -> str:
    if storage.is_uri(src):
        return str(src)
    return str(Path(src).expanduser().resolve())


def scan_source(src: str | os.PathLike, split_mode: str = "auto") -> SourceTree:
    """List class folders and image files; raise ``DatasetError`` for trees that cannot be sharded."""
    if split_mode not in ("auto", "random", "predefined"):
        raise DatasetError(f"split_mode must be auto, random or predefined, got {split_mode!r}")
    root = _root(src)
    shown = storage.redact(root)
    entries, dirs = _list(root)
    predefined = _is_predefined_layout(dirs)
    if split_mode == "predefined" and not predefined:
        raise DatasetError(
            f"{shown} has no train/ + test/ (or val/) folders of class folders for split_mode=predefined"
        )
    mode = "predefined" if (predefined and split_mode != "random") else "random"
    depth = 1 if mode == "predefined" else 0
    per_split: dict[str | None, dict[str, list[_Entry]]] = {}
    for d in sorted(dirs):  # every visible folder at the class level is a class (torchvision's find_classes)
        if len(d) == depth + 1 and not any(map(_hidden, d)):
            per_split.setdefault(d[0] if depth else None, {}).setdefault(d[depth], [])
    found: dict[str, Skipped] = {}
    for e in entries:
        rel, cls, reason = _place(e.parts, mode == "predefined", storage.is_uri(root))
        if reason is None:
            per_split[e.parts[0] if depth else None][cls].append(e)
        else:
            _skipped(found, rel, cls, reason, e.size)
    classes = sorted({c for by_class in per_split.values() for c in by_class})
    _check_classes(per_split, classes, shown)
    skipped = sorted(found.values(), key=lambda s: s.rel)
    _log_skipped(skipped, shown)
    label = {c: i for i, c in enumerate(classes)}
    files = [
        SourceFile("/".join(e.parts), c, label[c], split, e.size, e.mtime_ns)
        for split, by_class in per_split.items()
        for c, members in by_class.items()
        for e in members
    ]
    files.sort(key=lambda f: f.rel)
    return SourceTree(root, classes, files, mode, skipped)
