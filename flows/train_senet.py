"""Prefect flow ``train-senet``: shard -> train every SE variant on Ray -> evaluate -> store Arrow tables -> promote.

Thin over :mod:`senet_dist.pipeline`; Prefect adds retries (a retried training task reuses its Ray Train run
name, so it resumes from the last checkpoint), per-variant isolation, and the leaderboard artifacts.
Run it through a deployment: ``prefect deployment run train-senet/quickstart --watch``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.context import get_run_context
from prefect.futures import wait
from prefect.states import Completed, Failed, State

from senet_dist.artifacts import ArtifactStore
from senet_dist.data import ShardResult
from senet_dist.errors import is_retryable
from senet_dist.pipeline import (
    PipelineConfig,
    VariantSummary,
    check_destinations,
    prepare_dataset,
    promote,
    run_id_for,
    train_variant,
    variants_to_train,
)
from senet_dist.train import RaySession

if TYPE_CHECKING:
    from senet_dist.release.gate import GateResult


@flow(name="train-senet", log_prints=True)
def train_senet(
    data: str | None = None,
    variants: list[str] | None = None,
    shards: str | None = None,
    artifacts: str | None = None,
    train: dict[str, Any] | None = None,
    model_kwargs: dict[str, dict[str, Any]] | None = None,
    shard: dict[str, Any] | None = None,
    force: bool = False,
    concurrent: bool | None = None,
    ray_address: str | None = None,
    resource_wait_s: float | None = None,
    dataset_name: str | None = None,
) -> list[VariantSummary] | State:
    """Shard ``data`` (ImageFolder path or built-in dataset name), train ``variants``, evaluate, store tables.

    A parameter left unset takes its default from ``senet_dist.pipeline.PipelineConfig`` (``artifacts``:
    ``$SENET_ARTIFACTS``, else ./artifacts). ``train`` overrides TrainConfig fields for every variant
    (``{"epochs": 3, "lr": 0.05}``); ``model_kwargs`` maps a variant to its constructor kwargs.

    Ends early in state ``Unchanged`` when every variant already has a completed run on the same data with the
    same training config, unless ``force``. ``concurrent`` submits the variants together; by default (None) only
    when the Ray cluster can hold all their worker groups at once, so their Ray Train start-ups overlap.

    The new models then go through the promotion gate of ``dataset_name`` (default: derived from ``data``):
    the best becomes champion only if it beats the current one on this version's test split.
    """
    cfg = PipelineConfig.parse(
        _given(
            data=data,
            variants=variants,
            shards=shards,
            artifacts=artifacts,
            train=train,
            model_kwargs=model_kwargs,
            shard=shard,
            force=force,
            ray_address=ray_address,
            resource_wait_s=resource_wait_s,
            dataset_name=dataset_name,
        )
    ).validate()
    deployment = deployment_parameters()
    if deployment is not None:  # started from a deployment: results and Ray go only where it says
        check_destinations(cfg, deployment)
    # One Ray session for the whole run: joined at once on a cluster (the shard groups are Ray tasks there), started
    # on a laptop only when there is something to train.
    with RaySession(cfg.ray_address, resource_wait_s=cfg.resource_wait_s, lazy=not cfg.joins_cluster) as session:
        dataset = shard_task(cfg, session)
        todo = variants_to_train(ArtifactStore(cfg.artifacts_abs), dataset.fingerprint, cfg)
        if not todo:
            get_run_logger().info(
                "dataset %s unchanged, every variant trained: nothing to do", dataset.fingerprint[:12]
            )
            return Completed(name="Unchanged", message="data unchanged; every variant already trained")
        states = _train_all(todo, dataset, cfg, session, concurrent)
    summaries = [s.result() for s in states if s.is_completed()]
    if summaries:
        publish_task(summaries, dataset)
        promote_task(cfg, dataset, [s.run_id for s in summaries])
    failed = [v for v, s in zip(todo, states, strict=True) if not s.is_completed()]
    if failed:
        return Failed(message=f"variants failed: {failed}; completed: {[s.variant for s in summaries]}")
    return summaries


@task(name="shard", task_run_name="shard-{cfg.data}", cache_policy=NO_CACHE)
def shard_task(cfg: PipelineConfig, session: RaySession) -> ShardResult:
    """On a Ray cluster the shard groups are Ray tasks on every node; a laptop shards in processes."""
    return prepare_dataset(cfg, ArtifactStore(cfg.artifacts_abs), session=session)


def _retry_if_transient(task: Any, task_run: Any, state: State) -> bool:
    """A permanent failure (a bad value, a corrupt shard, resources the cluster lacks) would fail the same way
    again; a lost worker or node may not."""
    try:
        state.result(raise_on_failure=True)
    except BaseException as exc:  # noqa: BLE001 - the rule reads every failure's type
        return is_retryable(exc)
    return True


# A retry (or a later flow run after a killed driver) reuses the run id, so Ray Train resumes from the checkpoint.
@task(
    name="train-variant",
    task_run_name="train-{variant}",
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=_retry_if_transient,
    cache_policy=NO_CACHE,
)
def train_task(
    variant: str, dataset: ShardResult, cfg: PipelineConfig, flow_run_id: str, session: RaySession
) -> VariantSummary:
    store = ArtifactStore(cfg.artifacts_abs)
    run_id = run_id_for(store, variant, dataset.fingerprint, cfg, flow_run_id, finished=_flow_run_finished)
    return train_variant(
        variant, dataset.version_dir, cfg, store, run_id=run_id, flow_run_id=flow_run_id, session=session
    )


def _train_all(
    todo: list[str], dataset: ShardResult, cfg: PipelineConfig, session: RaySession, concurrent: bool | None
) -> list[State]:
    """Each variant's final task state, trained side by side or one after another."""
    logger = get_run_logger()
    flow_run_id = str(get_run_context().flow_run.id)  # type: ignore[union-attr]
    if concurrent is None:
        concurrent = len(todo) > 1 and session.room_for_all([cfg.train_config(v) for v in todo])
    logger.info(
        "training %s on %s, %s", todo, dataset.version_dir, "concurrently" if concurrent else "one after another"
    )
    if concurrent:
        futures = [train_task.submit(v, dataset, cfg, flow_run_id, session) for v in todo]
        wait(futures)
        return [f.state for f in futures]
    return [train_task(v, dataset, cfg, flow_run_id, session, return_state=True) for v in todo]


def _flow_run_finished(flow_run_id: str) -> bool:
    """True only when this Prefect API knows the flow run and it is over (e.g. Crashed after a killed driver)."""
    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except Exception:  # noqa: BLE001 - unknown here (another server, deleted): it may be live; do not adopt its run
        return False
    return state is not None and state.is_final()


@task(name="publish")
def publish_task(summaries: list[VariantSummary], dataset: ShardResult) -> None:
    """Prefect artifacts: a leaderboard table and a markdown confusion matrix per variant."""
    rows = sorted(summaries, key=lambda s: -s.accuracy)
    create_table_artifact(
        key="senet-leaderboard",
        table=[
            {
                "variant": r.variant,
                "accuracy": r.accuracy,
                "macro_f1": r.macro_f1,
                "params": r.params,
                "img_per_s": r.img_per_s,
                "epochs": r.epochs,
                "wall_seconds": r.wall_seconds,
            }
            for r in rows
        ],
        description=f"train-senet leaderboard on dataset {Path(dataset.version_dir).name}",
    )
    for r in rows:
        create_markdown_artifact(
            key=_artifact_key(r.variant), markdown=_confusion_markdown(r), description=f"{r.variant} evaluation"
        )


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(cfg: PipelineConfig, dataset: ShardResult, run_ids: list[str]) -> GateResult:
    """The promotion gate (senet_dist.pipeline.promote) and a champion-vs-challenger artifact."""
    result = promote(cfg, dataset.version_dir, run_ids)
    get_run_logger().info("promotion gate of %s: %s: %s", result.dataset, result.decision, result.reason)
    create_markdown_artifact(
        key="senet-promotion", markdown=result.markdown(), description=f"promotion gate of {result.dataset}"
    )
    create_table_artifact(
        key="senet-champion-vs-challenger", table=result.table(), description=f"{result.dataset} on {result.version}"
    )
    return result


def deployment_parameters() -> dict[str, Any] | None:
    """The parameters of the deployment this flow run was started from (None: not started from one)."""
    flow_run = get_run_context().flow_run  # type: ignore[union-attr]
    if flow_run is None or flow_run.deployment_id is None:
        return None
    with get_client(sync_client=True) as client:
        return dict(client.read_deployment(flow_run.deployment_id).parameters or {})


def _given(**params: Any) -> dict[str, Any]:
    """The parameters a caller set: None means the PipelineConfig default."""
    return {k: v for k, v in params.items() if v is not None}


def _artifact_key(variant: str) -> str:
    return "eval-" + variant.replace("_", "-").lower()


def _confusion_markdown(s: VariantSummary) -> str:
    head = "| true \\ pred | " + " | ".join(s.class_names) + " |\n|---|" + "---|" * len(s.class_names) + "\n"
    rows = zip(s.class_names, s.confusion_matrix, strict=True)
    body = "".join(f"| **{n}** | " + " | ".join(str(v) for v in row) + " |\n" for n, row in rows)
    params = f"{s.params:,}" if s.params is not None else "?"
    return (
        f"# {s.variant}\n\nrun `{s.run_id}`: test accuracy **{s.accuracy:.4f}**, "
        f"macro F1 {s.macro_f1:.4f}, {params} parameters.\n\nReports and plots: `{s.reports}`\n\n"
        f"## Confusion matrix\n\n{head}{body}"
    )


if __name__ == "__main__":
    train_senet()
