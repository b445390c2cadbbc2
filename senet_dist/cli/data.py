"""``senet-dist datasets list|fetch`` and ``senet-dist shard``: get real data and shard it.

Registered in ``senet_dist.cli.__init__``; option defaults come from the config schema (``ShardConfig``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from senet_dist.cli.common import console, fail
from senet_dist.data.config import ShardConfig
from senet_dist.errors import PermanentError

_SHARD = ShardConfig()  # the defaults `senet-dist shard` shows and uses


def datasets_list() -> None:
    """The built-in offline datasets: name, licence and description."""
    from rich.table import Table

    from senet_dist.data.datasets import dataset_specs

    table = Table("name", "licence", "description")
    for spec in dataset_specs():
        table.add_row(spec.name, spec.licence, spec.description)
    console.print(table)


def _dataset_names() -> str:
    """For ``fetch --help``: the registry's names (``senet_dist.data`` imports lazily, so this stays instant)."""
    from senet_dist.data.datasets import DATASETS

    return f"Built-in dataset: {' or '.join(sorted(DATASETS))} (see `senet-dist datasets list`)"


def datasets_fetch(
    name: Annotated[str, typer.Argument(help=_dataset_names())],
    dest: Annotated[Path, typer.Argument(help="Directory to write the ImageFolder tree into")],
    limit_per_class: Annotated[int | None, typer.Option(help="Keep at most N images per class and split")] = None,
) -> None:
    """Materialise an offline dataset as an ImageFolder tree."""
    from senet_dist.data import fetch_dataset

    try:
        out = fetch_dataset(name, dest, limit_per_class=limit_per_class)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(exc)
    console.print(f"[green]wrote[/] {out}")


def shard(
    src: Annotated[
        str,
        typer.Argument(
            help="ImageFolder root, a path or URI (one folder per class; or train/ + test/ of class folders)"
        ),
    ],
    out: Annotated[
        str, typer.Argument(help="Shards root, a path or URI (s3://bucket/shards); each version gets its own directory")
    ],
    val: Annotated[float, typer.Option(help="Validation fraction")] = _SHARD.fractions[1],
    test: Annotated[float, typer.Option(help="Test fraction")] = _SHARD.fractions[2],
    seed: Annotated[int, typer.Option(help="Split seed")] = _SHARD.seed,
    split_mode: Annotated[str, typer.Option(help="auto (honour train/ test/ folders), random or predefined")] = (
        _SHARD.split_mode
    ),
    resize_shorter: Annotated[
        int | None, typer.Option(help="Store images with this shorter side; 0 keeps originals")
    ] = (_SHARD.resize_shorter),
    image_format: Annotated[str, typer.Option("--format", help="Stored format: jpg (GPU-decodable) or png")] = (
        _SHARD.image_format
    ),
    quality: Annotated[int, typer.Option(help="JPEG quality when re-encoding")] = _SHARD.jpeg_quality,
    max_count: Annotated[int, typer.Option(help="Max samples per shard")] = _SHARD.max_count,
    max_mb: Annotated[float, typer.Option(help="Max MiB per shard")] = _SHARD.max_bytes / 1024**2,
    max_pixels: Annotated[int, typer.Option(help="Quarantine images with more pixels (decompression bombs)")] = (
        _SHARD.max_pixels
    ),
    procs: Annotated[int | None, typer.Option(help="Encoding processes (default: CPU count, max 8)")] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar")] = _SHARD.progress,
) -> None:
    """Shard an ImageFolder into WebDataset tars + a Parquet manifest (no-op when the data is unchanged)."""
    from senet_dist.data import shard_dataset

    try:
        cfg = ShardConfig.parse(
            {
                "val_frac": val,
                "test_frac": test,
                "seed": seed,
                "split_mode": split_mode,
                "resize_shorter": resize_shorter or None,
                "image_format": image_format,
                "jpeg_quality": quality,
                "max_count": max_count,
                "max_bytes": int(max_mb * 1024**2),
                "max_pixels": max_pixels,
                "num_procs": procs,
                "progress": progress,
            }
        )
        result = shard_dataset(src, out, cfg)
    except (ValueError, FileNotFoundError, PermanentError) as exc:  # PermanentError: e.g. a bad storage location
        fail(exc)
    state = "[green]new version[/]" if result.changed else "[yellow]unchanged[/]"
    console.print(
        f"{state} {result.version_dir} fingerprint={result.fingerprint[:12]} counts={dict(result.counts)} "
        f"rejected={result.num_rejected}"
    )
