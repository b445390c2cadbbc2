"""``senet-dist models|train|evaluate|config``: models, one training run, one evaluation, the pipeline config.

The typer commands parse arguments and call the library through the functions below (``train_command``,
``evaluate_command``), which add rich progress and tables and are usable from a notebook as well. Registered in
``senet_dist.cli.__init__``; heavy imports are lazy so ``--help`` is quick."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from senet_dist.cli.common import console, fail

if TYPE_CHECKING:
    from senet_dist.evaluation.metrics import EvalReport
    from senet_dist.train import EpochMetrics, FitResult, TrainConfig


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
        fail(exc)
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
    config: Annotated[
        str | None, typer.Option(help="A TrainConfig YAML/JSON file, or a recipe (name or file): its train section")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. --set epochs=5 --set lr=0.1")] = None,
    storage: Annotated[str, typer.Option(help="Ray Train storage path (local dir or s3:// URI)")] = "runs",
    name: Annotated[str | None, typer.Option(help="Run name; reusing one resumes it")] = None,
) -> None:
    """Train one model with Ray Train DDP and print per-epoch metrics."""
    from senet_dist.errors import PermanentError, TrainingError

    try:
        train_command(model, data, config=config, sets=set_ or [], storage_path=storage, run_name=name, console=console)
    except (ValueError, FileNotFoundError, PermanentError) as exc:  # PermanentError: e.g. a bad storage location
        fail(exc)
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
    from senet_dist.errors import PermanentError

    try:
        evaluate_command(checkpoint, data, split=split, out_dir=out, console=console)
    except (ValueError, OSError, PermanentError) as exc:  # OSError: storage errors; PermanentError: a bad shard
        fail(exc)


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
        fail(exc)
    typer.echo(cfg.to_yaml().rstrip())


# ---- the library calls behind train and evaluate ----------------------------------------------------------
def load_config(model: str | None, config: str | Path | None, sets: Sequence[str] = ()) -> TrainConfig:
    """File (optional: a TrainConfig, or a recipe whose ``train`` section and ``model``'s kwargs are used) ->
    ``--set k=v`` overrides -> ``--model`` (which wins)."""
    from senet_dist.pipeline.recipes import train_config_from_file
    from senet_dist.train import TrainConfig

    cfg = train_config_from_file(config, model) if config else TrainConfig()
    cfg = cfg.with_overrides(list(sets))
    return cfg.with_overrides({"model": model}) if model else cfg


def train_command(
    model: str | None,
    data: str | Path,
    *,
    config: str | Path | None = None,
    sets: Sequence[str] = (),
    storage_path: str | Path = "runs",
    run_name: str | None = None,
    ray_address: str | None = None,
    console: Console | None = None,
) -> FitResult:
    """Validate, train, print a per-epoch table. ConfigError before Ray starts on bad input; on TrainingError the
    epochs reached are printed, then it is raised."""
    from senet_dist.data import resolve_version
    from senet_dist.errors import TrainingError
    from senet_dist.train import FitResult, fit
    from senet_dist.train.progress import ProgressDisplay

    console = console or Console()
    cfg = load_config(model, config, sets)
    version_dir = resolve_version(data)

    def started(valid: TrainConfig, version: str) -> None:  # fit validated the config; Ray starts next
        console.print(
            f"[bold]training[/] {valid.model} on {version} with {valid.num_workers} worker(s), "
            f"{valid.epochs} epoch(s), global batch {valid.batch_size}"
        )

    try:
        with ProgressDisplay(console) as progress:  # rank 0's steps, img/s and ETA about every 10 s
            result = fit(
                cfg.model,
                version_dir,
                cfg,
                storage_path=storage_path,
                run_name=run_name,
                ray_address=ray_address,
                on_progress=progress,
                on_start=started,
            )
    except TrainingError as exc:
        if isinstance(exc.result, FitResult) and exc.result.history:
            print_wide(console, history_table(exc.result.history))
        raise
    print_wide(console, history_table(result.history))
    console.print(f"[green]run {result.run_name}: {result.epochs_completed} epoch(s) in {result.wall_seconds:.1f}s[/]")
    console.print(f"best checkpoint: {result.best_checkpoint}")
    return result


def history_table(history: Sequence[EpochMetrics]) -> Table:
    """One row per epoch; the EMA's val loss/accuracy columns only when the run kept an EMA."""
    ema = any(h.ema_val_acc is not None for h in history)
    table = Table(title="epochs")
    cols = ["epoch", "train_loss", "train_acc", "val_loss", "val_acc"]
    cols += ["ema_val_loss", "ema_val_acc"] if ema else []
    for col in (*cols, "lr", "img/s", "s"):
        table.add_column(col, justify="right")
    for h in history:
        row = [str(h.epoch), f"{h.train_loss:.4f}", f"{h.train_acc:.4f}", f"{h.val_loss:.4f}", f"{h.val_acc:.4f}"]
        if ema:
            row += [_num(h.ema_val_loss), _num(h.ema_val_acc)]
        table.add_row(*row, f"{h.lr:.4g}", f"{h.img_per_s:.0f}", f"{h.epoch_seconds:.1f}")
    return table


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def evaluate_command(
    checkpoint: str | Path,
    data: str | Path,
    *,
    split: str = "test",
    out_dir: str | Path | None = None,
    batch_size: int = 256,
    device: str = "auto",
    console: Console | None = None,
) -> EvalReport:
    """Evaluate, print a per-class table, and (with ``out_dir``) write the report (``write_report``).

    ``checkpoint``: a checkpoint or run directory, local or a URI (the ``runs``/``checkpoints`` tables record
    ``s3://...`` ones); only the chosen checkpoint is downloaded, into a temp dir removed afterwards."""
    from senet_dist.data import resolve_version
    from senet_dist.evaluation.metrics import evaluate_model, sample_predictions
    from senet_dist.evaluation.report import write_report
    from senet_dist.storage import redact
    from senet_dist.train.checkpoint import load_model

    console = console or Console()
    version = resolve_version(data)
    with console.status(f"evaluating {redact(str(checkpoint))} on {split} ..."):
        loaded = load_model(checkpoint)
        report = evaluate_model(loaded, version, split=split, batch_size=batch_size, device=device)
    _print_report(report, split, console)
    if out_dir is not None:
        samples = sample_predictions(loaded, version, split=split)
        files = write_report(report, out_dir, samples=samples, history=loaded.meta.history)
        console.print(f"wrote {', '.join(files)} to {redact(str(out_dir))}")
    return report


def _print_report(report: EvalReport, split: str, console: Console) -> None:
    table = Table(
        title=f"{report.variant} ({report.weights} weights) on {report.dataset_version}/{split}: "
        f"accuracy {report.accuracy:.4f}"
    )
    for col in ("class", "precision", "recall", "f1", "support"):
        table.add_column(col, justify="right")
    for c in report.per_class:
        table.add_row(c.class_name, f"{c.precision:.4f}", f"{c.recall:.4f}", f"{c.f1:.4f}", str(c.support))
    console.print(table)
    top = f", top-5 {report.top_k_accuracy:.4f}" if report.top_k_accuracy is not None else ""
    console.print(
        f"macro F1 {report.macro_f1:.4f}{top}; {report.latency_ms_per_image:.3f} ms/image "
        f"({report.img_per_s:.0f} img/s)"
    )


def print_wide(console: Console, table: Table) -> None:
    """Rich assumes 80 columns when output goes to a log file or pipe, which cuts the ten-column epoch table's
    figures to ``1.22…``: render it at least 160 wide there."""
    if not console.is_terminal and console.width < 160:  # print(width=) cannot exceed the console's own width
        console = Console(file=console.file, width=160, color_system=None)
    console.print(table)
