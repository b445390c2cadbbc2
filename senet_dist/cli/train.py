"""``senet-dist models|train|evaluate|config``: models, one training run, one evaluation, the pipeline config.

Registered in ``senet_dist.cli.__init__``; heavy imports are lazy so ``--help`` is quick."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from senet_dist.cli.common import _fail, console


def models(
    names: Annotated[list[str] | None, typer.Argument(help="Model names (default: all registered).")] = None,
    image_size: Annotated[
        int | None, typer.Option(help="Input size for GFLOPs (default 224; 32 for CIFAR nets)")
    ] = None,
    summary: Annotated[bool, typer.Option(help="Per-layer table of ONE model: layer, output shape, params")] = False,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Model kwarg, e.g. --set stem=cifar --set width=32")
    ] = None,
    num_classes: Annotated[int, typer.Option(help="Classes of the classifier head")] = 1000,
) -> None:
    """List registered models with parameter counts and GFLOPs, or one model's per-layer --summary."""
    from rich.table import Table

    from senet_dist.models import model_table
    from senet_dist.schema import parse_overrides

    try:
        kwargs = parse_overrides(set_ or [])
        if summary:
            _print_summary(names or [], image_size, num_classes, kwargs)
            return
        rows = model_table(names or None, image_size=image_size, num_classes=num_classes, **kwargs)
    except (ValueError, TypeError) as exc:  # unknown model or kwarg, bad value
        _fail(exc)
    table = Table("model", "params", "GFLOPs", "input px")
    for r in rows:
        gflops = r.get("gflops")
        table.add_row(
            r["name"], f"{r['params']:,}", "-" if gflops is None else f"{gflops:.2f}", str(r.get("image_size", ""))
        )
    console.print(table)


def _print_summary(names: list[str], image_size: int | None, num_classes: int, kwargs: dict) -> None:
    from rich.table import Table

    from senet_dist.models.summary import summarize

    if len(names) != 1:
        raise ValueError(f"--summary takes exactly one model name, got {len(names)}")
    s = summarize(names[0], num_classes=num_classes, image_size=image_size, **kwargs)
    table = Table("layer", "type", "output shape", "params", title=f"{s.name} at {s.image_size} px")
    for r in s.rows:
        shape = "-" if r.output_shape is None else "x".join(map(str, r.output_shape))
        table.add_row(r.name, r.kind, shape, f"{r.params:,}")
    console.print(table)
    console.print(f"total params: {s.total_params:,}")


def train(
    model: Annotated[str, typer.Option(help="Registered model name (see `senet-dist models`)")],
    data: Annotated[str, typer.Option(help="Shards root or dataset version: a directory or URI (s3://bucket/shards)")],
    config: Annotated[Path | None, typer.Option(help="YAML/JSON TrainConfig file")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. --set epochs=5 --set lr=0.1")] = None,
    storage: Annotated[str, typer.Option(help="Ray Train storage path (local dir or s3:// URI)")] = "runs",
    name: Annotated[str | None, typer.Option(help="Run name; reusing one resumes it")] = None,
) -> None:
    """Train one model with Ray Train DDP and print per-epoch metrics."""
    from senet_dist.errors import PermanentError, TrainingError
    from senet_dist.train.commands import train_command

    try:
        train_command(model, data, config=config, sets=set_ or [], storage_path=storage, run_name=name, console=console)
    except (ValueError, FileNotFoundError, PermanentError) as exc:  # PermanentError: e.g. a bad storage location
        _fail(exc)
    except TrainingError as exc:
        console.print(f"[red]training failed:[/] {exc}")
        raise typer.Exit(1) from None


def evaluate(
    checkpoint: Annotated[
        str,
        typer.Argument(
            help="Checkpoint directory (contains checkpoint.pt) or run directory (its best checkpoint); "
            "a local path or a URI such as s3://bucket/prefix/ray/<run>/checkpoint_..."
        ),
    ],
    data: Annotated[str, typer.Option(help="Shards root or dataset version directory")],
    split: Annotated[str, typer.Option(help="Split to evaluate")] = "test",
    out: Annotated[Path | None, typer.Option(help="Write report.json and PNG plots here")] = None,
) -> None:
    """Evaluate a checkpoint: accuracy, per-class P/R/F1, confusion matrix, latency."""
    from senet_dist.train.commands import evaluate_command

    try:
        evaluate_command(checkpoint, data, split=split, out_dir=out, console=console)
    except (ValueError, OSError) as exc:  # OSError: FileNotFoundError, and storage errors (no bucket, no access)
        _fail(exc)


def show_config(
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override, e.g. --set data=fashion-mnist --set train.epochs=3")
    ] = None,
) -> None:
    """Print the pipeline config (every default, with overrides applied) as YAML: what `run` and the flow use."""
    from senet_dist.pipeline import PipelineConfig

    try:
        cfg = PipelineConfig().with_overrides(set_ or [])
    except ValueError as exc:
        _fail(exc)
    typer.echo(cfg.to_yaml().rstrip())
