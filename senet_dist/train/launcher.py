"""Driver side: validate the config, start (or join) Ray, run TorchTrainer, summarise the result.

Reusing ``run_name`` with the same ``storage_path`` resumes that run (Ray Train V2 behaviour), so the default
name is unique per call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from senet_dist.storage import is_local, resolve_filesystem, uri_for
from senet_dist.train.checkpoint import META_FILE
from senet_dist.train.config import ConfigError, TrainConfig

log = logging.getLogger(__name__)

QUIET_ENV = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "1",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::UserWarning",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
}

# Ray Train V2 defaults that cost seconds per fit on small runs (docs/performance.md, goal 4); a value the user
# exported wins. The controller polls its worker group every 2 s by default, and start, first report and finish
# each wait for a poll. With the watcher setting below: no-op fit 11.5 -> 9.4 s, flow overhead 20.6 -> 16.4 s per
# variant on the 2-core CI VM.
RAY_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
# Only on a Ray this process started itself: the preemption watcher (one more actor per fit) follows node draining,
# which a one-node local Ray never does.
LOCAL_RAY_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
_started_local = False
_env_lock = threading.Lock()
_env_users = 0
_env_added: dict[str, str] = {}


@dataclass
class FitResult:
    run_name: str
    storage_path: str
    history: list[dict[str, Any]]  # one dict per completed epoch, 1-based "epoch"
    best_checkpoint: str | None  # highest val_acc among the kept checkpoints
    last_checkpoint: str | None
    checkpoints: list[str]  # every checkpoint Ray kept (best-N by val_acc, plus the latest)
    error: str | None
    wall_s: float
    num_params: int | None
    epochs_completed: int
    variant: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)  # last epoch's metrics

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}")


def default_run_name(variant: str) -> str:
    return f"{variant}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def ensure_ray(ray_address: str | None = None, num_cpus: int | None = None) -> bool:
    """Init Ray unless it is already up; returns True when this call started it (so the caller shuts it down)."""
    import ray

    global _started_local
    if ray.is_initialized():
        return False
    for k, v in QUIET_ENV.items():
        os.environ.setdefault(k, v)
    address = ray_address or os.environ.get("RAY_ADDRESS")
    kwargs: dict[str, Any] = {"runtime_env": {"env_vars": dict(QUIET_ENV)}, "log_to_driver": True}
    if address:
        ray.init(address=address, **kwargs)
    else:  # the hook only here: a cluster's nodes may run other code; this process's package is importable
        kwargs["runtime_env"]["worker_process_setup_hook"] = "senet_dist._ray_setup.quiet_ray_workers"
        ray.init(num_cpus=num_cpus, include_dashboard=False, **kwargs)
    _started_local = not address
    return True


def shutdown_ray() -> None:
    """Stop the Ray that :func:`ensure_ray` started (callers only call it when ensure_ray returned True)."""
    global _started_local
    import ray

    ray.shutdown()
    _started_local = False


@contextmanager
def ray_train_env() -> Iterator[dict[str, str]]:
    """Set :data:`RAY_TRAIN_ENV` (and :data:`LOCAL_RAY_TRAIN_ENV` on a local Ray we started) where unset, while
    fits run: Ray Train reads them when a trainer starts its controller and passes them on to the workers.
    Reference-counted, because concurrent variants fit from threads of one process."""
    global _env_users, _env_added
    with _env_lock:
        if _env_users == 0:
            wanted = {**RAY_TRAIN_ENV, **(LOCAL_RAY_TRAIN_ENV if _started_local else {})}
            _env_added = {k: v for k, v in wanted.items() if k not in os.environ}
            os.environ.update(_env_added)
        _env_users += 1
        added = dict(_env_added)
    try:
        yield added
    finally:
        with _env_lock:
            _env_users -= 1
            if _env_users == 0:
                for k in _env_added:
                    os.environ.pop(k, None)


def fit(
    variant: str,
    version_dir: str | Path,
    cfg: TrainConfig,
    *,
    storage_path: str | Path,
    run_name: str | None = None,
    ray_address: str | None = None,
) -> FitResult:
    """Train ``variant`` on a dataset version directory with ``cfg.num_workers`` DDP ranks under Ray Train."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from senet_dist.train.worker import train_func_per_worker

    cfg = cfg.with_overrides({"model": variant}).validate(version_dir)
    if run_name is not None and not _RUN_NAME.fullmatch(run_name):
        # Ray Train's controller crashes on non-ASCII names (they become metric tags): refuse before Ray starts.
        raise ConfigError(f"run name {run_name!r} must be 1-128 ASCII letters, digits, spaces, '.', '_' or '-'")
    ray_path, ray_fs = _ray_storage(storage_path)
    storage = ray_path if ray_fs is None else str(storage_path)  # how results name their checkpoints
    name = run_name or default_run_name(variant)
    started_ray = ensure_ray(ray_address)
    start = time.perf_counter()
    try:
        _check_resources(cfg)
        if ray_fs is None:
            Path(ray_path).mkdir(parents=True, exist_ok=True)  # only now: a refused run leaves nothing behind
        trainer = TorchTrainer(
            train_func_per_worker,
            train_loop_config={"train": cfg.to_dict(), "version_dir": str(Path(version_dir).resolve())},
            torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=cfg.resources_per_worker
            ),
            run_config=RunConfig(
                name=name,
                storage_path=ray_path,
                storage_filesystem=ray_fs,
                checkpoint_config=CheckpointConfig(
                    num_to_keep=cfg.keep_best_n,
                    checkpoint_score_attribute="val_acc",
                    checkpoint_score_order="max",
                ),
                failure_config=FailureConfig(max_failures=cfg.max_failures),
            ),
        )
        try:
            with ray_train_env():
                result = trainer.fit()
            error = result.error
        except Exception as exc:  # Ray raises TrainingFailedError when retries are exhausted
            result, error = None, exc
        return _summarise(result, error, name, storage, variant, time.perf_counter() - start)
    finally:
        if started_ray:
            shutdown_ray()


def _check_resources(cfg: TrainConfig) -> None:
    """A worker group the cluster cannot hold makes Ray Train retry its start every 60 s, forever: say so instead.

    Missing GPUs are always an error (no autoscaler adds GPUs to a CPU-only cluster by accident); other resources
    only on a local Ray this process started, which cannot grow. On a cluster an autoscaler may add nodes, so
    that is a warning and Ray Train keeps waiting."""
    short = _shortfall([cfg])
    if not short:
        return
    if cfg.use_gpu and "GPU" in short:
        need, got = short["GPU"]
        raise ConfigError(f"use_gpu=true needs {need:g} GPU(s) for {cfg.num_workers} worker(s) but the Ray cluster "
                          f"has {got:g}; set use_gpu=false (--set use_gpu=false) to train on CPU")
    what = ", ".join(f"{need:g} {k} (the Ray cluster has {got:g})" for k, (need, got) in short.items())
    if _started_local:
        raise ConfigError(f"{cfg.num_workers} worker(s) need {what}: lower num_workers (--set num_workers=N) or "
                          "each worker's share (resources_per_worker, e.g. {CPU: 0.5})")
    log.warning("%d worker(s) need %s; waiting for the cluster to grow (autoscaler)", cfg.num_workers, what)


def worker_group_demand(cfgs: list[TrainConfig]) -> dict[str, float]:
    """Resources the worker groups of ``cfgs`` hold when they all run at once, per worker as Ray Train's
    ScalingConfig counts them: 1 CPU, or 1 GPU (no CPU) with use_gpu; ``resources_per_worker`` replaces that, and
    use_gpu adds 1 GPU to it unless it names GPUs."""
    total: dict[str, float] = {}
    for cfg in cfgs:
        per_worker = {k: v for k, v in (cfg.resources_per_worker or {"GPU" if cfg.use_gpu else "CPU": 1}).items() if v}
        if cfg.use_gpu:
            per_worker.setdefault("GPU", 1)
        for k, v in per_worker.items():
            total[k] = total.get(k, 0.0) + float(v) * cfg.num_workers
    return total


def room_for_all(cfgs: list[TrainConfig]) -> bool:
    """True when the running Ray cluster can hold every worker group side by side right now.

    Variants are only run concurrently then: otherwise the later ones would only queue for the resources (Ray
    Train retries a worker group's start every 60 s until it fits), holding a controller and a flow thread each
    for nothing."""
    return not _shortfall(cfgs)


def _shortfall(cfgs: list[TrainConfig]) -> dict[str, tuple[float, float]]:
    """{resource: (needed, the cluster's total)} for each resource the worker groups of ``cfgs`` lack together."""
    import ray

    have = ray.cluster_resources()
    return {k: (v, have.get(k, 0.0)) for k, v in worker_group_demand(cfgs).items() if have.get(k, 0.0) < v}


def _ray_storage(storage_path: str | Path) -> tuple[str, Any]:
    """(path Ray sees, pyarrow filesystem or None). Object stores get an explicit filesystem built by
    :func:`senet_dist.storage.resolve_filesystem`, because pyarrow alone ignores AWS_ENDPOINT_URL (MinIO)."""
    s = str(storage_path)
    if is_local(s):
        return str(Path(s.removeprefix("file://")).expanduser().resolve()), None
    fs, path = resolve_filesystem(s)
    return path, fs


def _summarise(result: Any, error: BaseException | None, name: str, storage: str, variant: str, wall: float) -> FitResult:
    best: list[tuple[Any, dict]] = list(getattr(result, "best_checkpoints", None) or [])
    best.sort(key=lambda cm: cm[1].get("val_acc", float("-inf")), reverse=True)
    last = getattr(result, "checkpoint", None)
    meta = _read_meta(last) if last is not None else {}
    history = meta.get("history", [])
    return FitResult(
        run_name=name,
        storage_path=storage,
        history=history,
        best_checkpoint=uri_for(storage, best[0][0].path) if best else None,
        last_checkpoint=uri_for(storage, last.path) if last is not None else None,
        checkpoints=[uri_for(storage, c.path) for c, _ in best],
        error=None if error is None else f"{type(error).__name__}: {error}",
        wall_s=wall,
        num_params=meta.get("num_params"),
        epochs_completed=int(meta.get("epoch", 0)),
        variant=variant,
        metrics=history[-1] if history else {},
    )


def _read_meta(checkpoint: Any) -> dict[str, Any]:
    """Read meta.json through the checkpoint's own filesystem (works for local dirs and s3://)."""
    fs = checkpoint.filesystem
    with fs.open_input_stream(f"{checkpoint.path}/{META_FILE}") as f:
        return json.loads(f.read().decode())


__all__ = ["ConfigError", "FitResult", "default_run_name", "ensure_ray", "fit", "ray_train_env", "room_for_all", "shutdown_ray",
           "worker_group_demand"]
