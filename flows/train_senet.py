"""Prefect flow ``train-senet``: shard -> train every SE variant on Ray -> evaluate -> store Arrow tables.

Thin over :mod:`senet_dist.pipeline`; Prefect adds retries (a retried training task reuses its Ray Train run
name, so it resumes from the last checkpoint), per-variant isolation, and the leaderboard artifacts.
Run it through a deployment: ``prefect deployment run train-senet/quickstart --watch``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.context import get_run_context
from prefect.futures import wait
from prefect.states import Completed, Failed

from senet_dist.artifacts import ArtifactStore
from senet_dist.data import DatasetInfo
from senet_dist.train import ConfigError, ensure_ray, room_for_all, shutdown_ray
from senet_dist.pipeline import (
    DEFAULT_VARIANTS,
    PipelineConfig,
    prepare_dataset,
    run_id_for,
    train_variant,
    variants_to_train,
)


@task(name="shard", task_run_name="shard-{cfg.data}")
def shard_task(cfg: PipelineConfig) -> dict[str, Any]:
    result = prepare_dataset(cfg, ArtifactStore(cfg.artifacts_abs))
    return {"version_dir": str(result.version_dir), "fingerprint": result.fingerprint, "changed": result.changed,
            "counts": dict(result.counts), "rejected": result.num_rejected}


def _retry_unless_config_error(task: Any, task_run: Any, state: Any) -> bool:
    """A ConfigError (a bad value, a worker group the cluster cannot hold) would fail the same way again."""
    try:
        state.result(raise_on_failure=True)
    except ConfigError:
        return False
    except BaseException:
        return True
    return True


# A retry (or a later flow run after a killed driver) reuses the run id, so Ray Train resumes from the checkpoint.
@task(name="train-variant", task_run_name="train-{variant}", retries=1, retry_delay_seconds=5,
      retry_condition_fn=_retry_unless_config_error)
def train_task(variant: str, version_dir: str, cfg: PipelineConfig, flow_run_id: str) -> dict[str, Any]:
    store = ArtifactStore(cfg.artifacts_abs)
    run_id = run_id_for(store, variant, DatasetInfo.load(version_dir).fingerprint, cfg, flow_run_id,
                        finished=_flow_run_finished)
    return train_variant(variant, Path(version_dir), cfg, store, run_id=run_id, flow_run_id=flow_run_id)


def _flow_run_finished(flow_run_id: str) -> bool:
    """True only when this Prefect API knows the flow run and it is over (e.g. Crashed after a killed driver)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client

    try:
        with get_client(sync_client=True) as client:
            state = client.read_flow_run(UUID(flow_run_id)).state
    except Exception:  # unknown here (another server, deleted): it may still be live, so do not adopt its run
        return False
    return state is not None and state.is_final()


@task(name="publish")
def publish_task(summaries: list[dict[str, Any]], dataset: dict[str, Any]) -> None:
    """Prefect artifacts: a leaderboard table and a markdown confusion matrix per variant."""
    rows = sorted(summaries, key=lambda s: -s["accuracy"])
    create_table_artifact(
        key="senet-leaderboard",
        table=[{k: r[k] for k in ("variant", "accuracy", "macro_f1", "params", "img_per_s", "epochs", "wall_seconds")}
               for r in rows],
        description=f"train-senet leaderboard on dataset {Path(dataset['version_dir']).name}",
    )
    for r in rows:
        create_markdown_artifact(key=_artifact_key(r["variant"]), markdown=_confusion_markdown(r),
                                 description=f"{r['variant']} evaluation")


def _artifact_key(variant: str) -> str:
    return "eval-" + variant.replace("_", "-").lower()


def _confusion_markdown(summary: dict[str, Any]) -> str:
    names = summary["class_names"]
    head = "| true \\ pred | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
    body = "".join(f"| **{n}** | " + " | ".join(str(v) for v in row) + " |\n"
                   for n, row in zip(names, summary["confusion_matrix"]))
    return (f"# {summary['variant']}\n\nrun `{summary['run_id']}`: test accuracy **{summary['accuracy']:.4f}**, "
            f"macro F1 {summary['macro_f1']:.4f}, {summary['params']:,} parameters.\n\n"
            f"Reports and plots: `{summary['reports']}`\n\n## Confusion matrix\n\n{head}{body}")


@flow(name="train-senet", log_prints=True)
def train_senet(
    data: str = "lfw-subset",
    variants: list[str] = list(DEFAULT_VARIANTS),
    shards: str = "data/shards",
    artifacts: str | None = None,
    train: dict[str, Any] | None = None,
    model_kwargs: dict[str, dict[str, Any]] | None = None,
    shard: dict[str, Any] | None = None,
    force: bool = False,
    concurrent: bool | None = None,
    ray_address: str | None = None,
):
    """Shard ``data`` (ImageFolder path or built-in dataset name), train ``variants``, evaluate, store tables.

    ``train`` overrides TrainConfig fields for every variant (``{"epochs": 3, "lr": 0.05}``); ``model_kwargs``
    maps a variant to its constructor kwargs (``{"se_resnet18": {"stem": "cifar"}}``).

    Ends early in state ``Unchanged`` when every variant already has a completed run on the same data with the
    same training config, unless ``force``. ``concurrent`` submits the variants together; by default (None) only
    when the Ray cluster can hold all their worker groups at once, so their Ray Train start-ups overlap.
    """
    logger = get_run_logger()
    cfg = PipelineConfig(data=data, variants=list(variants), shards=shards, train=train or {},
                         model_kwargs=model_kwargs or {}, shard=shard or {}, force=force, ray_address=ray_address)
    if artifacts:
        cfg.artifacts = artifacts  # else SENET_ARTIFACTS, else ./artifacts
    cfg.validate()
    dataset = shard_task(cfg)
    todo = variants_to_train(ArtifactStore(cfg.artifacts_abs), dataset["fingerprint"], cfg)
    if not todo:
        logger.info("dataset %s unchanged and every variant trained: nothing to do", dataset["fingerprint"][:12])
        return Completed(name="Unchanged", message="data unchanged; every variant already trained")
    flow_run_id = str(get_run_context().flow_run.id)
    logger.info("training %s on %s", todo, dataset["version_dir"])
    started_ray = ensure_ray(cfg.ray_address)  # one Ray for every variant: no per-variant start-up, safe concurrency
    try:
        if concurrent is None:
            concurrent = len(todo) > 1 and room_for_all([cfg.train_config(v) for v in todo])
        logger.info("variants run %s", "concurrently" if concurrent else "one after another")
        if concurrent:
            futures = [train_task.submit(v, dataset["version_dir"], cfg, flow_run_id) for v in todo]
            wait(futures)
            states = [f.state for f in futures]
        else:
            states = [train_task(v, dataset["version_dir"], cfg, flow_run_id, return_state=True) for v in todo]
    finally:
        if started_ray:
            shutdown_ray()
    summaries = [s.result() for s in states if s.is_completed()]
    if summaries:
        publish_task(summaries, dataset)
    failed = [v for v, s in zip(todo, states) if not s.is_completed()]
    if failed:
        return Failed(message=f"variants failed: {failed}; completed: {[s['variant'] for s in summaries]}")
    return summaries


if __name__ == "__main__":
    train_senet()
