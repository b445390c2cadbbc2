"""``senet-dist`` command line: thin wrappers over the library (heavy imports are lazy so ``--help`` is quick).

Option defaults come from the config schema (``ShardConfig``, ``PipelineConfig``), never from literals here."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from senet_dist.data.config import ShardConfig

_SHARD = ShardConfig()  # the defaults `senet-dist shard` shows and uses

app = typer.Typer(
    help="Train Squeeze-and-Excitation classifiers: shard -> Ray Train DDP -> evaluate -> Arrow tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Offline real datasets, materialised as ImageFolder trees.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
console = Console()


def _fail(exc: Exception) -> None:
    """Bad input is the user's to fix: one clear line on stderr (never wrapped), exit code 2, no traceback."""
    message = " ".join(str(exc).split())
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command()
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


@datasets_app.command("list")
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


@datasets_app.command("fetch")
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
        _fail(exc)
    console.print(f"[green]wrote[/] {out}")


@app.command()
def shard(
    src: Annotated[
        Path, typer.Argument(help="ImageFolder root (one folder per class; or train/ + test/ of class folders)")
    ],
    out: Annotated[Path, typer.Argument(help="Shards root; each dataset version gets its own directory")],
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
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    state = "[green]new version[/]" if result.changed else "[yellow]unchanged[/]"
    console.print(
        f"{state} {result.version_dir} fingerprint={result.fingerprint[:12]} counts={dict(result.counts)} "
        f"rejected={result.num_rejected}"
    )


@app.command()
def train(
    model: Annotated[str, typer.Option(help="Registered model name (see `senet-dist models`)")],
    data: Annotated[Path, typer.Option(help="Shards root or dataset version directory")],
    config: Annotated[Path | None, typer.Option(help="YAML/JSON TrainConfig file")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override, e.g. --set epochs=5 --set lr=0.1")] = None,
    storage: Annotated[str, typer.Option(help="Ray Train storage path (local dir or s3:// URI)")] = "runs",
    name: Annotated[str | None, typer.Option(help="Run name; reusing one resumes it")] = None,
) -> None:
    """Train one model with Ray Train DDP and print per-epoch metrics."""
    from senet_dist.errors import TrainingError
    from senet_dist.train.commands import train_command

    try:
        train_command(model, data, config=config, sets=set_ or [], storage_path=storage, run_name=name, console=console)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    except TrainingError as exc:
        console.print(f"[red]training failed:[/] {exc}")
        raise typer.Exit(1) from None


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint directory (contains checkpoint.pt)")],
    data: Annotated[Path, typer.Option(help="Shards root or dataset version directory")],
    split: Annotated[str, typer.Option(help="Split to evaluate")] = "test",
    out: Annotated[Path | None, typer.Option(help="Write report.json and PNG plots here")] = None,
) -> None:
    """Evaluate a checkpoint: accuracy, per-class P/R/F1, confusion matrix, latency."""
    from senet_dist.train.commands import evaluate_command

    try:
        evaluate_command(checkpoint, data, split=split, out_dir=out, console=console)
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)


@app.command("config")
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


@app.command()
def report(
    artifacts: Annotated[
        str | None,
        typer.Option(help="Artifacts root (local dir or s3:// URI) [default: $SENET_ARTIFACTS, else ./artifacts]"),
    ] = None,
    png: Annotated[str | None, typer.Option(help="Write a comparison bar chart here (path or s3:// URI)")] = None,
) -> None:
    """Print the leaderboard from the Arrow tables (and optionally a comparison PNG)."""
    from senet_dist.artifacts import ArtifactStore
    from senet_dist.pipeline import default_artifacts
    from senet_dist.report import format_leaderboard, leaderboard, plot_comparison

    table = leaderboard(ArtifactStore(artifacts or default_artifacts()))
    console.print(format_leaderboard(table))
    if png is not None and table.num_rows:
        plot_comparison(table, png)
        console.print(f"comparison chart: {png}")


@app.command()
def run(
    data: Annotated[
        str | None, typer.Option(help="ImageFolder path or built-in dataset (NAME or NAME:PER_CLASS)")
    ] = None,
    variant: Annotated[list[str] | None, typer.Option(help="Model variant (repeatable)")] = None,
    config: Annotated[
        Path | None, typer.Option(help="Recipe (configs/recipes/): variants, train and shard sections")
    ] = None,
    shards: Annotated[str | None, typer.Option(help="Shards root")] = None,
    artifacts: Annotated[
        str | None, typer.Option(help="Artifacts root (local dir or s3:// URI); $SENET_ARTIFACTS when unset")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="TrainConfig override key=value")] = None,
    force: Annotated[bool, typer.Option(help="Retrain even when nothing changed")] = False,
    concurrent: Annotated[
        bool | None,
        typer.Option(
            "--concurrent/--sequential",
            help="Train variants side by side or one after another "
            "[default: side by side when the Ray cluster holds all their workers]",
        ),
    ] = None,
) -> None:
    """Run the train-senet flow in this process (Prefect starts a temporary server unless PREFECT_API_URL is set).

    Unset options take the pipeline config's defaults, as the flow does: `senet-dist config` prints them."""
    from senet_dist.pipeline import PipelineConfig
    from senet_dist.pipeline.recipes import recipe_params
    from senet_dist.schema import parse_overrides
    from senet_dist.train import TrainConfig

    given = {"data": data, "variants": variant, "shards": shards, "artifacts": artifacts}
    params = {k: v for k, v in given.items() if v}
    try:  # validate before Prefect or Ray start: bad input costs milliseconds and exits 2
        overrides = parse_overrides(set_ or [])
        if config:  # the recipe's sections, then the options given here, then --set on its train section
            recipe = recipe_params(config)
            overrides = TrainConfig.parse(recipe.pop("train")).with_overrides(overrides).to_dict()
            params = {**recipe, **params}
        PipelineConfig.parse({**params, "train": overrides}).validate()
    except (ValueError, FileNotFoundError) as exc:
        _fail(exc)
    from flows.train_senet import train_senet

    state = train_senet(**params, train=overrides, force=force, concurrent=concurrent, return_state=True)
    console.print(f"flow run finished: {state.name} {state.message or ''}")
    if not state.is_completed():
        raise typer.Exit(1)


# ---- release: export, registry, promote / rollback, predict (senet_dist/release) -----------------------------
_ARTIFACTS = "Artifacts root holding the tables (local dir or s3:// URI) [default: $SENET_ARTIFACTS, else ./artifacts]"


def _store(artifacts: str | None):  # -> ArtifactStore
    from senet_dist.artifacts import ArtifactStore
    from senet_dist.pipeline.config import default_artifacts

    return ArtifactStore(artifacts or default_artifacts())


@app.command()
def export(
    source: Annotated[str, typer.Argument(help="Run id, run or checkpoint directory, or checkpoint URI")],
    out: Annotated[str, typer.Option(help="New or empty directory, or a URI prefix (s3://...)")],
    format_: Annotated[str, typer.Option("--format", help="torchscript or onnx (onnx: pip install '.[export]')")] = (
        "torchscript"
    ),
    data: Annotated[
        str | None,
        typer.Option(help="Shards root or dataset version to verify on [default: the model's own, from the tables]"),
    ] = None,
    images: Annotated[int, typer.Option(help="Real test images the export is verified on")] = 32,
    artifacts: Annotated[str | None, typer.Option(help=_ARTIFACTS)] = None,
) -> None:
    """Export a trained model plus model.json, verified against the PyTorch model on real test images first."""
    from senet_dist.release.export import ExportError, VerificationError, export_model
    from senet_dist.train.checkpoint import CheckpointError

    try:
        result = export_model(source, format_, out, store=_store(artifacts), data=data, num_images=images)
    except (ExportError, CheckpointError, FileNotFoundError) as exc:
        _fail(exc)
    except VerificationError as exc:
        typer.echo(f"export verification failed: {exc}", err=True)
        raise typer.Exit(1) from None
    v = result.verification
    console.print(
        f"[green]exported[/] {result.uri} ({format_}: {', '.join(result.files)}); verified on {v.images} test images "
        f"of {v.dataset_version}: top-1 agrees, max |logit diff| {v.max_abs_diff:.2g}"
    )


@app.command()
def registry(
    dataset: Annotated[str | None, typer.Option(help="Only this dataset")] = None,
    history: Annotated[bool, typer.Option(help="Every event, oldest first, instead of each model's state")] = False,
    artifacts: Annotated[str | None, typer.Option(help=_ARTIFACTS)] = None,
) -> None:
    """The model registry: each model's stage (champion / challenger / archived), numbers and reason."""
    from rich.markup import escape
    from rich.table import Table

    from senet_dist.release.registry import events, states

    store = _store(artifacts)
    rows = (
        events(store, dataset)
        if history
        else sorted(states(store, dataset).values(), key=lambda r: (r.dataset, r.stage, r.model_id))
    )
    table = Table(title=f"models in {store.root}" + (f" (dataset {dataset})" if dataset else ""))
    for col in ("dataset", "model", "stage", "variant", "trained on", "accuracy", "measured on", "export", "reason"):
        table.add_column(col, overflow="fold")  # ids and URIs are worth reading whole
    for r in rows:
        acc = "-" if r.accuracy is None else f"{r.accuracy:.4f}"
        why = (f"{r.action}: " if history and r.action else "") + (r.reason or "")
        cells = (r.dataset, r.model_id, r.stage, r.variant, r.dataset_version, acc, r.eval_dataset_version)
        table.add_row(*(escape(c or "") for c in (*cells, r.export_for(), why)))
    console.print(table if rows else "no registered models")


@app.command()
def promote(
    model_id: Annotated[str, typer.Argument(help="Registered model id (a run id)")],
    reason: Annotated[str, typer.Option(help="Why: recorded with the promotion")],
    dataset: Annotated[
        str | None, typer.Option(help="Register a completed run that is not in the registry yet under this dataset")
    ] = None,
    artifacts: Annotated[str | None, typer.Option(help=_ARTIFACTS)] = None,
) -> None:
    """Make a model its dataset's champion (a person's decision, no gate); the old champion is archived."""
    from senet_dist.release import registry as reg

    store = _store(artifacts)
    try:
        if dataset is not None and reg.find(store, model_id) is None:
            reg.register_run(store, model_id, dataset, reason=f"registered for promotion: {reason}")
        rec = reg.promote(store, model_id, reason)
    except reg.RegistryError as exc:
        _fail(exc)
    console.print(f"[green]champion of {rec.dataset}:[/] {rec.model_id} ({rec.reason})")


@app.command()
def rollback(
    dataset: Annotated[str, typer.Argument(help="Dataset whose champion to retire")],
    reason: Annotated[str, typer.Option(help="Why: recorded with the rollback")],
    artifacts: Annotated[str | None, typer.Option(help=_ARTIFACTS)] = None,
) -> None:
    """Retire DATASET's champion and restore the champion it replaced."""
    from senet_dist.release import registry as reg

    try:
        restored, retired = reg.rollback(_store(artifacts), dataset, reason)
    except reg.RegistryError as exc:
        _fail(exc)
    console.print(f"[green]champion of {dataset}:[/] {restored.model_id} (was {retired.model_id}, now archived)")


@app.command()
def predict(
    inputs: Annotated[list[str], typer.Argument(help="Image files, directories (recursive) or URIs")],
    model: Annotated[str, typer.Option(help="champion:DATASET, a registered model id, or an export/checkpoint dir")],
    out: Annotated[str, typer.Option(help="Parquet file to write (path or URI)")],
    top_k: Annotated[int, typer.Option(help="Labels (with probabilities) kept per image")] = 5,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass")] = 64,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    ray: Annotated[bool, typer.Option("--ray", help="Spread over Ray Data actors (one model copy each)")] = False,
    actors: Annotated[int, typer.Option(help="Ray actors (with --ray); a GPU each when the cluster has enough")] = 2,
    ray_address: Annotated[str | None, typer.Option(help="Ray cluster to join [default: RAY_ADDRESS, else local]")] = (
        None
    ),
    progress: Annotated[bool | None, typer.Option(help="Progress bar [default: on a terminal]")] = None,
    artifacts: Annotated[str | None, typer.Option(help=_ARTIFACTS)] = None,
) -> None:
    """Classify images in batches: one Parquet row per input (top-k labels, or the reason it failed)."""
    from rich.progress import Progress

    from senet_dist.release.predict import PredictError
    from senet_dist.release.predict import predict as run_predict

    show = console.is_terminal if progress is None else progress
    with Progress(console=console, disable=not show or ray, transient=True) as bar:
        task = bar.add_task("predicting", total=None)
        try:
            summary = run_predict(
                model,
                inputs,
                out,
                store=_store(artifacts),
                batch_size=batch_size,
                device=device,
                top_k=top_k,
                use_ray=ray,
                actors=actors,
                ray_address=ray_address,
                progress=lambda n: bar.advance(task, n),
                on_total=lambda n: bar.update(task, total=n),
            )
        except (PredictError, FileNotFoundError) as exc:
            _fail(exc)
    m = summary.model
    console.print(
        f"{summary.total} inputs -> {summary.out} in {summary.seconds:.1f}s with {m.get('model_id') or m['location']} "
        f"({m['format']}, {m['device']})"
    )
    console.print(f"outcomes: {summary.counts_line()}")


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
