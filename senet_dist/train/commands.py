"""What ``senet-dist train`` / ``senet-dist evaluate`` do, as library calls with rich progress output.

The CLI only parses arguments and calls these; they are also usable from a notebook or ``python -c``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from senet_dist.data import resolve_version
from senet_dist.errors import TrainingError
from senet_dist.train.config import TrainConfig
from senet_dist.train.launcher import fit
from senet_dist.train.progress import ProgressDisplay
from senet_dist.train.results import EpochMetrics, FitResult

if TYPE_CHECKING:
    from senet_dist.evaluate import EvalReport


def load_config(model: str | None, config: str | Path | None, sets: Sequence[str] = ()) -> TrainConfig:
    """File (optional: a TrainConfig, or a recipe whose ``train`` section and ``model``'s kwargs are used) ->
    ``--set k=v`` overrides -> ``--model`` (which wins)."""
    from senet_dist.pipeline.recipes import train_config_from_file

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
    console = console or Console()
    cfg = load_config(model, config, sets)
    version_dir = resolve_version(data)
    cfg.validate(version_dir)
    console.print(
        f"[bold]training[/] {cfg.model} on {version_dir} with {cfg.num_workers} worker(s), "
        f"{cfg.epochs} epoch(s), global batch {cfg.batch_size}"
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
            )
    except TrainingError as exc:
        if isinstance(exc.result, FitResult) and exc.result.history:
            _print_wide(console, history_table(exc.result.history))
        raise
    _print_wide(console, history_table(result.history))
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
    """Evaluate, print a per-class table, and (with ``out_dir``) write report.json, confusion.png, curves.png.

    ``checkpoint``: a checkpoint or run directory, local or a URI (the ``runs``/``checkpoints`` tables record
    ``s3://...`` ones); only the chosen checkpoint is downloaded, into a temp dir removed afterwards."""
    import tempfile

    from senet_dist.evaluate import evaluate_checkpoint
    from senet_dist.storage import local_dir, redact
    from senet_dist.train.checkpoint import locate_checkpoint

    console = console or Console()
    version = resolve_version(data)
    located = locate_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory(prefix="senet-eval-") as tmp:
        ckpt = local_dir(located, Path(tmp) / "checkpoint")
        with console.status(f"evaluating {redact(located)} on {split} ..."):
            report = evaluate_checkpoint(ckpt, version, split=split, batch_size=batch_size, device=device)
        report.checkpoint = redact(located)
        _print_report(report, split, console)
        if out_dir is not None:
            _write_report(report, ckpt, version, split, Path(out_dir), console)
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


def _write_report(report: EvalReport, ckpt: Path, version: str | Path, split: str, out: Path, console: Console) -> None:
    from senet_dist.evaluate import sample_predictions
    from senet_dist.plots import plot_confusion_matrix, plot_curves, plot_sample_grid
    from senet_dist.train.checkpoint import read_meta

    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report.to_dict(), indent=2))
    plot_confusion_matrix(report.confusion_matrix, report.classes, out / "confusion.png")
    samples = sample_predictions(ckpt, version, split=split)
    plot_sample_grid(samples.images, samples.titles, out / "samples.png")
    history = [EpochMetrics.from_dict(h) for h in read_meta(ckpt).get("history", [])]
    if history:
        plot_curves(history, out / "curves.png")
    console.print(f"wrote {out}/report.json and plots (confusion, samples, curves)")


def _print_wide(console: Console, table: Table) -> None:
    """Rich assumes 80 columns when output goes to a log file or pipe, which cuts the ten-column epoch table's
    figures to ``1.22…``: render it at least 160 wide there."""
    if not console.is_terminal and console.width < 160:  # print(width=) cannot exceed the console's own width
        console = Console(file=console.file, width=160, color_system=None)
    console.print(table)
