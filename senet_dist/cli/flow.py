"""``senet-dist run|report``: the train-senet flow in this process, and the leaderboard of its tables.

Registered in ``senet_dist.cli.__init__``; unset options take the pipeline config's defaults (no literals here)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from senet_dist import recipes
from senet_dist.cli.common import console, fail


def report(
    artifacts: Annotated[
        str | None,
        typer.Option(help="Artifacts root (local dir or s3:// URI) [default: $SENET_ARTIFACTS, else ./artifacts]"),
    ] = None,
    png: Annotated[str | None, typer.Option(help="Write a comparison bar chart here (path or s3:// URI)")] = None,
) -> None:
    """Print the leaderboard from the Arrow tables (and optionally a comparison PNG)."""
    from senet_dist.artifacts import ArtifactStore
    from senet_dist.evaluation.leaderboard import format_leaderboard, leaderboard, plot_comparison
    from senet_dist.pipeline import default_artifacts

    table = leaderboard(ArtifactStore(artifacts or default_artifacts()))
    console.print(format_leaderboard(table))
    if png is not None and table.num_rows:
        plot_comparison(table, png)
        console.print(f"comparison chart: {png}")


def run(
    data: Annotated[
        str | None,
        typer.Option(help="ImageFolder (path or s3:// URI) or built-in dataset (NAME or NAME:PER_CLASS)"),
    ] = None,
    variant: Annotated[list[str] | None, typer.Option(help="Model variant (repeatable)")] = None,
    config: Annotated[
        str | None,
        typer.Option(help=f"Recipe: a name ({', '.join(recipes.names())}) or a YAML file with variants/train/shard"),
    ] = None,
    shards: Annotated[str | None, typer.Option(help="Shards root (local dir or s3:// URI)")] = None,
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
        fail(exc)
    # Prefect's temporary server would report usage to Prefect, and its telemetry heartbeat races the flow for the
    # SQLite database at start-up ("database is locked" tracebacks in the output): off unless the user set it.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from flows.train_senet import train_senet

    state = train_senet(**params, train=overrides, force=force, concurrent=concurrent, return_state=True)
    console.print(f"flow run finished: {state.name} {state.message or ''}")
    if not state.is_completed():
        raise typer.Exit(1)
