"""Scan an ImageFolder tree (flat or with a predefined train/val/test split) without decoding anything."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from senet_dist.errors import PermanentError

from .images import IMAGE_EXTS

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class DatasetError(PermanentError, ValueError):
    """The input tree or configuration cannot produce a valid dataset version."""


@dataclass(frozen=True)
class SourceFile:
    rel: str  # POSIX path relative to SRC (recorded in the manifest)
    class_name: str
    label: int
    fixed_split: str | None  # set when the tree defines the split (train/, val/, test/)


@dataclass
class SourceTree:
    root: Path
    classes: list[str]
    files: list[SourceFile]
    mode: str  # "random" or "predefined"
    ignored: list[str] = field(default_factory=list)


def _visible_entries(d: Path) -> list[os.DirEntry]:
    with os.scandir(d) as it:
        return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)


def _is_predefined_layout(root: Path) -> bool:
    """True for ``train/<class>/*`` + ``test/<class>/*`` (+ optional ``val/``), with nothing else at the top level."""
    entries = _visible_entries(root)
    names = {e.name for e in entries if e.is_dir()}
    if "train" not in names or not names & {"val", "test"} or names - set(SPLITS):
        return False
    for e in entries:
        if e.is_dir() and not any(c.is_dir() for c in _visible_entries(Path(e.path))):
            return False
    return True


def _class_files(class_dir: Path, root: Path, ignored: list[str]) -> list[str]:
    files = []
    for e in _visible_entries(class_dir):
        rel = Path(e.path).relative_to(root).as_posix()
        if e.is_dir():
            ignored.append(rel + "/")
        elif e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTS:
            files.append(rel)
        else:
            ignored.append(rel)
    return files


def _scan_split_dir(split_dir: Path, root: Path, ignored: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for e in _visible_entries(split_dir):
        if e.is_dir():
            out[e.name] = _class_files(Path(e.path), root, ignored)
        else:
            ignored.append(Path(e.path).relative_to(root).as_posix())
    return out


def scan_source(src: str | os.PathLike, split_mode: str = "auto") -> SourceTree:
    """List class folders and image files; raise ``DatasetError`` for trees that cannot be sharded."""
    if split_mode not in ("auto", "random", "predefined"):
        raise DatasetError(f"split_mode must be auto, random or predefined, got {split_mode!r}")
    root = Path(src).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError(f"source directory does not exist: {root}")
    predefined = _is_predefined_layout(root)
    if split_mode == "predefined" and not predefined:
        raise DatasetError(f"{root} has no train/ + test/ (or val/) folders of class folders for split_mode=predefined")
    mode = "predefined" if (predefined and split_mode != "random") else "random"
    ignored: list[str] = []
    per_split: dict[str | None, dict[str, list[str]]] = {}
    if mode == "predefined":
        for name in SPLITS:
            if (root / name).is_dir():
                per_split[name] = _scan_split_dir(root / name, root, ignored)
    else:
        per_split[None] = _scan_split_dir(root, root, ignored)
    classes = sorted({c for by_class in per_split.values() for c in by_class})
    if not classes:
        raise DatasetError(f"no class folders found in {root} (expected an ImageFolder tree: SRC/<class>/<image>)")
    for split, by_class in per_split.items():
        empty = [c for c in classes if not by_class.get(c)]
        if empty and (split is None or split == "train"):
            where = f"{split}/" if split else ""
            raise DatasetError(f"class folder(s) with no images in {root}/{where}: {', '.join(empty)}")
    if ignored:
        log.warning("ignored %d non-image or misplaced entries in %s (e.g. %s)", len(ignored), root, ignored[0])
    label = {c: i for i, c in enumerate(classes)}
    files = [
        SourceFile(rel, c, label[c], split)
        for split, by_class in per_split.items()
        for c, rels in sorted(by_class.items())
        for rel in rels
    ]
    files.sort(key=lambda f: f.rel)
    return SourceTree(root, classes, files, mode, ignored)
