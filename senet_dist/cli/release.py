"""``senet-dist export|registry|promote|rollback|predict``: the release commands (``senet_dist/release``).

Registered in ``senet_dist.cli.__init__``; heavy imports are lazy so ``--help`` is quick."""

from __future__ import annotations

from typing import Annotated

import typer

from senet_dist.cli.common import console, fail

_ARTIFACTS = "Artifacts root holding the tables (local dir or s3:// URI) [default: $SENET_ARTIFACTS, else ./artifacts]"


def _store(artifacts: str | None):  # -> ArtifactStore
    from senet_dist.artifacts import ArtifactStore
    from senet_dist.pipeline.config import default_artifacts

    return ArtifactStore(artifacts or default_artifacts())


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
        fail(exc)
    except VerificationError as exc:
        typer.echo(f"export verification failed: {exc}", err=True)
        raise typer.Exit(1) from None
    v = result.verification
    console.print(
        f"[green]exported[/] {result.uri} ({format_}: {', '.join(result.files)}); verified on {v.images} test images "
        f"of {v.dataset_version}: top-1 agrees, max |logit diff| {v.max_abs_diff:.2g}"
    )


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
    from senet_dist.release.registry import RegistryError, find

    store = _store(artifacts)
    try:
        if dataset is not None and find(store, model_id) is None:
            reg.register_run(store, model_id, dataset, reason=f"registered for promotion: {reason}")
        rec = reg.promote(store, model_id, reason)
    except RegistryError as exc:
        fail(exc)
    console.print(f"[green]champion of {rec.dataset}:[/] {rec.model_id} ({rec.reason})")


def rollback(
    dataset: Annotated[str, typer.Argument(help="Dataset whose champion to retire")],
    reason: Annotated[str, typer.Option(help="Why: recorded with the rollback")],
    artifacts: Annotated[str | None, typer.Option(help=_ARTIFACTS)] = None,
) -> None:
    """Retire DATASET's champion and restore the champion it replaced."""
    from senet_dist.release import registry as reg
    from senet_dist.release.registry import RegistryError

    try:
        restored, retired = reg.rollback(_store(artifacts), dataset, reason)
    except RegistryError as exc:
        fail(exc)
    console.print(f"[green]champion of {dataset}:[/] {restored.model_id} (was {retired.model_id}, now archived)")


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

    from senet_dist.errors import PermanentError
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
        except (PredictError, FileNotFoundError, PermanentError) as exc:  # PermanentError: e.g. a refused checkpoint
            fail(exc)
    m = summary.model
    console.print(
        f"{summary.total} inputs -> {summary.out} in {summary.seconds:.1f}s with {m.get('model_id') or m['location']} "
        f"({m['format']}, {m['device']})"
    )
    console.print(f"outcomes: {summary.counts_line()}")
