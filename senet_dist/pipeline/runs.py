"""A run's identity and resumption: which variants need training, and which run id each one trains under."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from senet_dist.artifacts import ArtifactStore
from senet_dist.pipeline.config import PipelineConfig
from senet_dist.train.config import TrainConfig


def variants_to_train(store: ArtifactStore, fingerprint: str, cfg: PipelineConfig) -> list[str]:
    """Variants without a completed run on this dataset fingerprint with the same training config (all when forced)."""
    if cfg.force:
        return list(cfg.variants)
    done = {
        (row["variant"], row["config_json"])
        for row in store.runs_latest().to_pylist()
        if row["dataset_fingerprint"] == fingerprint and row["status"] == "completed"
    }
    return [v for v in cfg.variants if (v, config_json(cfg.train_config(v))) not in done]


def config_json(train_cfg: TrainConfig) -> str:
    """Canonical JSON of a training config: what the runs table records and the skip decision compares."""
    return json.dumps(train_cfg.to_dict(), sort_keys=True)


def run_id_for(
    store: ArtifactStore,
    variant: str,
    fingerprint: str,
    cfg: PipelineConfig,
    flow_run_id: str | None = None,
    *,
    finished: Callable[[str], bool] = lambda _: False,
) -> str:
    """Resume before restarting: the newest unfinished run (``running`` when its driver was killed, or ``failed``)
    of this variant on the same data and config keeps its id, so Ray Train continues from its last checkpoint.

    Only runs of this flow run, or of flow runs that ``finished(flow_run_id)`` proves are over (crashed, failed),
    are adopted: a run another live flow is training is never shared."""
    wanted = config_json(cfg.train_config(variant))
    unfinished = [
        row
        for row in store.runs_latest().to_pylist()
        if row["variant"] == variant
        and row["dataset_fingerprint"] == fingerprint
        and row["config_json"] == wanted
        and row["status"] in ("running", "failed")
        and row["flow_run_id"]
        and (row["flow_run_id"] == flow_run_id or finished(row["flow_run_id"]))
    ]
    if unfinished:
        return max(unfinished, key=lambda r: r["updated_at"])["run_id"]
    return new_run_id(variant, flow_run_id)


def new_run_id(variant: str, flow_run_id: str | None = None) -> str:
    """Deterministic per (flow run, variant) so a Prefect retry resumes the same Ray Train run from its checkpoint."""
    suffix = flow_run_id.split("-")[0] if flow_run_id else uuid.uuid4().hex[:8]
    return f"{variant}-{suffix}"
