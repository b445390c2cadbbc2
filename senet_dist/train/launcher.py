"""Driver side: validate the config, run a ``TorchTrainer`` in a :class:`RaySession`, summarise or raise.

Reusing ``run_name`` with the same ``storage_path`` resumes that run (Ray Train V2 behaviour), so the default
name is unique per call. The resolved config is written as ``<storage>/<run>/config.yaml`` before training
starts: ``senet-dist train --config`` on that file reproduces the run.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from senet_dist.errors import ConfigError, TrainingError, caused_by_permanent, one_line, senet_cause
from senet_dist.storage import is_local, join, resolve_filesystem, ship_credentials, storage_env, uri_for, write_bytes
from senet_dist.train.checkpoint import META_FILE, CheckpointMeta
from senet_dist.train.config import TrainConfig
from senet_dist.train.faults import FaultPlan
from senet_dist.train.progress import BoardRelay, ProgressBoard, ProgressEvent
from senet_dist.train.results import FitResult
from senet_dist.train.session import RaySession

CONFIG_FILE = "config.yaml"
RAY_TRAIN_LOG_LEVEL = "WARNING"
_RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,127}")


def default_run_name(variant: str) -> str:
    return f"{variant}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def fit(
    variant: str,
    version_dir: str | Path,
    cfg: TrainConfig,
    *,
    storage_path: str | Path,
    run_name: str | None = None,
    session: RaySession | None = None,
    ray_address: str | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    on_start: Callable[[TrainConfig, str], None] | None = None,
) -> FitResult:
    """Train ``variant`` on a dataset version directory with ``cfg.num_workers`` DDP ranks under Ray Train.

    Raises :class:`ConfigError` (before Ray starts, or once it shows the cluster cannot hold the workers, or that a
    local ``storage_path`` would be split across several nodes) and
    :class:`TrainingError` when the workers fail beyond ``cfg.max_failures`` restarts. Without ``session``, a
    Ray session is opened (at ``ray_address``) for this call only. ``on_progress`` receives rank 0's
    :class:`~senet_dist.train.progress.ProgressEvent` about every 10 s in the driver (e.g. a
    ``ProgressDisplay``); without it rank 0 prints progress lines that Ray forwards to the driver's output.
    ``on_start(cfg, version_dir)`` is called once the config passed its checks, before Ray starts (the CLI's
    "training ..." line: a refused config has printed nothing).
    """
    from ray.train.torch import TorchTrainer

    from senet_dist.data.manifest import resolve_version
    from senet_dist.train.worker import WorkerArgs, train_func_per_worker

    cfg = cfg.with_overrides({"model": variant}).validate(version_dir)
    if run_name is not None and not _RUN_NAME.fullmatch(run_name):
        # Ray Train's controller crashes on non-ASCII names (they become metric tags): refuse before Ray starts.
        raise ConfigError(f"run name {run_name!r} must be 1-128 ASCII letters, digits, spaces, '.', '_' or '-'")
    if on_start is not None:
        on_start(cfg, str(version_dir))  # the config passed; Ray has not started yet
    ray_path, ray_fs = _ray_storage(storage_path)
    storage = ray_path if ray_fs is None else str(storage_path)  # how results name their checkpoints
    name = run_name or default_run_name(variant)
    with nullcontext(session) if session is not None else RaySession(ray_address) as ray_session:
        ray_session.connect()  # a lazy session (the flow's) starts or joins Ray now
        start = time.perf_counter()
        ray_session.check_storage(storage)  # now, and again once nodes have joined during the resource wait
        ray_session.check_resources(cfg)
        ray_session.check_storage(storage)
        write_bytes(join(storage, name, CONFIG_FILE), cfg.to_yaml().encode())  # only now: a refusal writes nothing
        board = _progress_board() if on_progress is not None else None
        args = WorkerArgs(
            train=cfg,
            version_dir=resolve_version(version_dir),  # a path or URI every node reads (not this node's cwd)
            fault=FaultPlan.from_env(),
            progress_board=board,
            storage_env=storage_env(),
        )
        trainer = TorchTrainer(
            train_func_per_worker, train_loop_config={"args": args}, **_trainer_options(cfg, name, ray_path, ray_fs)
        )
        relay: AbstractContextManager[Any] = (
            BoardRelay(board, on_progress) if board is not None and on_progress is not None else nullcontext()
        )
        try:
            with relay:
                result = trainer.fit()
            error = result.error
        except Exception as exc:  # Ray raises TrainingFailedError when retries are exhausted
            result, error = None, exc
        finally:
            _kill(board)
        summary = _summarise(result, name, storage, time.perf_counter() - start, cfg.keep_best_by)
    if error is not None:
        raise TrainingError(
            f"training {variant} failed: {_describe_failure(error)}",
            retryable=not _permanent(error),
            result=summary,
        ) from error
    return summary


def _progress_board() -> Any:
    """A ProgressBoard actor: no CPU reserved, so it never competes with the workers for the cluster."""
    import ray

    return ray.remote(num_cpus=0)(ProgressBoard).remote()


def _kill(actor: Any) -> None:
    if actor is not None:
        import ray

        ray.kill(actor)


def _trainer_options(cfg: TrainConfig, name: str, ray_path: str, ray_fs: Any) -> dict[str, Any]:
    """TorchTrainer's scaling, backend, checkpoint, failure and logging settings for ``cfg``.

    ``ray.train`` logs at WARNING: at INFO every rank logs its whole ``TrainingReport(...)`` (metrics dict and
    checkpoint) at each epoch's report, which buries the progress lines; warnings and errors still show.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig

    return {
        "torch_config": TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        "scaling_config": ScalingConfig(
            num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=cfg.resources_per_worker
        ),
        "run_config": RunConfig(
            name=name,
            storage_path=ray_path,
            storage_filesystem=ray_fs,
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.keep_best_n, checkpoint_score_attribute=cfg.keep_best_by, checkpoint_score_order="max"
            ),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            logging_config=LoggingConfig(log_level=RAY_TRAIN_LOG_LEVEL),  # type: ignore[call-arg]  # V2 RunConfig
        ),
    }


def _describe_failure(error: BaseException) -> str:
    """One line: a worker's own senet-dist error (a shard that cannot be read, storage that stayed down) as the
    worker raised it, else Ray's error as it is (a lost worker: Ray's text names it)."""
    causes = list((getattr(error, "worker_failures", None) or {}).values()) + [error]
    ours = next((c for c in (senet_cause(x) for x in causes) if c is not None), None)
    return one_line(ours) if ours is not None else f"{type(error).__name__}: {error}"


def _permanent(error: BaseException) -> bool:
    """A worker failed on a PermanentError (a corrupt shard, ...): a retry would fail the same way."""
    causes = list((getattr(error, "worker_failures", None) or {}).values())
    return any(caused_by_permanent(c) for c in causes + [error])


def _ray_storage(storage_path: str | Path) -> tuple[str, Any]:
    """(path Ray sees, pyarrow filesystem or None). Object stores get an explicit filesystem built by
    :func:`senet_dist.storage.resolve_filesystem`, because pyarrow alone ignores AWS_ENDPOINT_URL (MinIO). Ray Train
    pickles it into every worker and its controller: without ``SENET_SHIP_STORAGE_ENV=1`` it carries the endpoint
    but no keys, and each node finds its own credentials."""
    s = str(storage_path)
    if is_local(s):
        return str(Path(s.removeprefix("file://")).expanduser().resolve()), None
    fs, path = resolve_filesystem(s, keys=ship_credentials())
    return path, fs


def _summarise(result: Any, name: str, storage: str, wall: float, score: str = "val_acc") -> FitResult:
    best: list[tuple[Any, dict]] = list(getattr(result, "best_checkpoints", None) or [])
    best.sort(key=lambda cm: cm[1].get(score) or float("-inf"), reverse=True)
    last = getattr(result, "checkpoint", None)
    meta = _read_meta(last) if last is not None else None
    return FitResult(
        run_name=name,
        storage_path=storage,
        history=list(meta.history) if meta is not None else [],
        best_checkpoint=uri_for(storage, best[0][0].path) if best else None,
        last_checkpoint=uri_for(storage, last.path) if last is not None else None,
        checkpoints=[uri_for(storage, c.path) for c, _ in best],
        wall_seconds=wall,
        num_params=meta.num_params if meta is not None else None,
    )


def _read_meta(checkpoint: Any) -> CheckpointMeta:
    """Read meta.json through the checkpoint's own filesystem (works for local dirs and s3://)."""
    fs = checkpoint.filesystem
    with fs.open_input_stream(f"{checkpoint.path}/{META_FILE}") as f:
        return CheckpointMeta.from_json(f.read())


__all__ = ["CONFIG_FILE", "ConfigError", "FitResult", "default_run_name", "fit"]
