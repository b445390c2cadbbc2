"""Evaluation where the run trained: a checkpoint's report and sample predictions as one Ray task, placed on the
same kind of node as the run's training workers (a GPU node when ``use_gpu``), never on a CPU-only driver.

The task computes exactly what the driver computes in-process (``evaluate_here``: ``evaluate_model`` +
``sample_predictions``), so a report does not depend on where it was made; only the picklable results
(``EvalReport``, ``Samples``) travel back. Plots and uploads stay with the caller.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from senet_dist.evaluation.metrics import EvalReport, Samples, evaluate_model, sample_predictions
from senet_dist.storage import storage_env, storage_environment
from senet_dist.train.checkpoint import load_model

if TYPE_CHECKING:
    from senet_dist.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalPlacement:
    """What the evaluation task asks Ray for (``ray_options``): one GPU, or one CPU, plus the custom resources that
    pin the run's workers to their kind of node (e.g. ``{"node_b": 1}``)."""

    num_cpus: float = 1
    num_gpus: float = 0
    resources: dict[str, float] = field(default_factory=dict)

    def ray_options(self) -> dict[str, Any]:
        return {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus, "resources": dict(self.resources)}


def eval_placement(cfg: TrainConfig) -> EvalPlacement:
    """The placement of one evaluation task for a run trained with ``cfg``: with ``use_gpu`` one GPU and no CPU (as
    a GPU training worker), else one CPU; ``resources_per_worker``'s custom resources (not CPU/GPU) as they are."""
    custom = {k: float(v) for k, v in (cfg.resources_per_worker or {}).items() if k not in ("CPU", "GPU") and v}
    if cfg.use_gpu:
        return EvalPlacement(num_cpus=0, num_gpus=1, resources=custom)
    return EvalPlacement(num_cpus=1, num_gpus=0, resources=custom)


@dataclass
class Evaluation:
    """One checkpoint evaluated on one split: the report, a few sample predictions, and where it ran."""

    report: EvalReport
    samples: Samples
    node_id: str | None  # the Ray node that evaluated; None when it ran outside Ray


def evaluate_here(
    checkpoint: str | Path,
    version: str | Path,
    split: str,
    *,
    run_id: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
) -> Evaluation:
    """Evaluate in this process: the checkpoint (a path or URI; a run dir -> its best checkpoint) is loaded once
    (downloaded into a temp dir when remote) and scored on ``split`` of the dataset ``version``, with a few sample
    predictions. The report names the checkpoint by its location, not by the temp dir it was read from."""
    loaded = load_model(checkpoint)
    report = evaluate_model(loaded, version, split=split, batch_size=batch_size, device=device, run_id=run_id)
    samples = sample_predictions(loaded, version, split=split)
    return Evaluation(report, samples, _ray_node_id())


def evaluate_on_cluster(
    checkpoint: str | Path,
    version: str | Path,
    split: str,
    placement: EvalPlacement,
    *,
    run_id: str | None = None,
) -> Evaluation:
    """``evaluate_here`` as a Ray task placed by ``placement`` (Ray must be initialised). The checkpoint and the
    dataset are read from their locations on the task's node (``device="auto"`` there picks its GPU). An error in
    the task is raised as the error it was (its type decides the flow's retry), not as a Ray wrapper."""
    import ray
    from ray.exceptions import RayTaskError

    task = ray.remote(_evaluate_task).options(**placement.ray_options())
    try:
        return ray.get(task.remote(checkpoint, version, split, run_id, storage_env()))
    except RayTaskError as exc:
        if isinstance(exc.cause, Exception):
            raise exc.cause from exc
        raise


def _evaluate_task(
    checkpoint: str | Path, version: str | Path, split: str, run_id: str | None, env: dict[str, str]
) -> Evaluation:
    """``evaluate_here`` with positional arguments only (what Ray's typed ``.remote`` accepts), with the driver's
    object-storage settings."""
    with storage_environment(env):
        return evaluate_here(checkpoint, version, split, run_id=run_id)


def evaluate_run(
    checkpoint: str | Path, version: str | Path, split: str, placement: EvalPlacement, *, run_id: str | None = None
) -> Evaluation:
    """The pipeline's evaluation: on the cluster when this process is connected to Ray (the flow trains in a
    ``RaySession``), in this process otherwise."""
    if _ray_node_id() is None:
        return evaluate_here(checkpoint, version, split, run_id=run_id)
    evaluation = evaluate_on_cluster(checkpoint, version, split, placement, run_id=run_id)
    log.info("evaluated %s on %s on Ray node %s", run_id or "the checkpoint", split, evaluation.node_id)
    return evaluation


def _ray_node_id() -> str | None:
    """This process's Ray node when it is connected to Ray (a task always is), else None; never imports Ray."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return str(ray.get_runtime_context().get_node_id())
