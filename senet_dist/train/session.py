"""``RaySession``: one Ray connection, its environment, and what it can hold, for the length of a ``with`` block.

The flow opens one session for every variant it trains (one Ray start-up, safe concurrency from threads); ``fit``
opens its own only when it is given none. On exit the session restores every environment variable it set and
shuts down the Ray it started (never one it joined).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from typing import Any

from typing_extensions import Self

from senet_dist.errors import ResourceError
from senet_dist.train.config import TrainConfig

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
# Only on a Ray that cannot grow: the preemption watcher (one more actor per fit) follows node draining, which a
# one-node local Ray never does.
FIXED_SIZE_RAY_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
_SETUP_HOOK = "senet_dist._ray_setup.quiet_ray_workers"


class RaySession:
    """Start a local Ray (``address`` None and no ``RAY_ADDRESS``) or join one, while the ``with`` block runs.

    ``fixed_size``: whether the cluster can never grow, so a worker group it cannot hold is an error rather than
    a wait for an autoscaler. None means: True exactly when this session started a local Ray.
    """

    def __init__(
        self, address: str | None = None, *, num_cpus: int | None = None, fixed_size: bool | None = None
    ) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self._fixed_size = fixed_size
        self.started = False
        self._env_added: list[str] = []

    @property
    def fixed_size(self) -> bool:
        return self.started if self._fixed_size is None else self._fixed_size

    def __enter__(self) -> Self:
        import ray

        self._setdefault_env(QUIET_ENV)
        if not ray.is_initialized():
            runtime_env: dict[str, Any] = {"env_vars": dict(QUIET_ENV)}
            if self.address:
                ray.init(address=self.address, runtime_env=runtime_env, log_to_driver=True)
            else:  # the hook only here: a cluster's nodes may run other code; this process's package is importable
                runtime_env["worker_process_setup_hook"] = _SETUP_HOOK
                # address="local": a new Ray of our own, never a `ray start` cluster that happens to run on this
                # machine (plain ray.init() would join it, and this session would wrongly think it can't grow)
                ray.init(
                    address="local",
                    num_cpus=self.num_cpus,
                    include_dashboard=False,
                    runtime_env=runtime_env,
                    log_to_driver=True,
                )
                self.started = True
        # Ray Train reads these when a trainer starts its controller and passes them on to the workers.
        self._setdefault_env({**RAY_TRAIN_ENV, **(FIXED_SIZE_RAY_TRAIN_ENV if self.fixed_size else {})})
        return self

    def __exit__(self, *exc: object) -> None:
        import ray

        try:
            if self.started:
                ray.shutdown()
        finally:
            for key in self._env_added:
                os.environ.pop(key, None)
            self._env_added, self.started = [], False

    def _setdefault_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            if key not in os.environ:
                os.environ[key] = value
                self._env_added.append(key)

    # ---- what the cluster can hold ----------------------------------------------------------------
    def shortfall(self, cfgs: Iterable[TrainConfig]) -> dict[str, tuple[float, float]]:
        """{resource: (needed, the cluster's total)} for each resource the worker groups of ``cfgs`` lack together."""
        import ray

        have = ray.cluster_resources()
        return {k: (v, have.get(k, 0.0)) for k, v in worker_group_demand(cfgs).items() if have.get(k, 0.0) < v}

    def room_for_all(self, cfgs: Iterable[TrainConfig]) -> bool:
        """True when the cluster holds every worker group side by side right now.

        Variants only run concurrently then: otherwise the later ones would only queue for the resources (Ray Train
        retries a worker group's start every 60 s until it fits), holding a controller and a flow thread each."""
        return not self.shortfall(cfgs)

    def check_resources(self, cfg: TrainConfig) -> None:
        """A worker group the cluster cannot hold makes Ray Train retry its start every 60 s, forever: say so.

        Missing GPUs are always an error (no autoscaler adds GPUs to a CPU-only cluster by accident); other
        resources only on a fixed-size Ray. Elsewhere an autoscaler may add nodes: a warning, and Ray Train waits."""
        short = self.shortfall([cfg])
        if not short:
            return
        if cfg.use_gpu and "GPU" in short:
            need, got = short["GPU"]
            raise ResourceError(
                f"use_gpu=true needs {need:g} GPU(s) for {cfg.num_workers} worker(s) but the Ray "
                f"cluster has {got:g}; set use_gpu=false (--set use_gpu=false) to train on CPU"
            )
        what = ", ".join(f"{need:g} {k} (the Ray cluster has {got:g})" for k, (need, got) in short.items())
        if self.fixed_size:
            raise ResourceError(
                f"{cfg.num_workers} worker(s) need {what}: lower num_workers (--set num_workers=N) "
                "or each worker's share (resources_per_worker, e.g. {CPU: 0.5})"
            )
        log.warning("%d worker(s) need %s; waiting for the cluster to grow (autoscaler)", cfg.num_workers, what)


def worker_group_demand(cfgs: Iterable[TrainConfig]) -> dict[str, float]:
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


__all__ = ["QUIET_ENV", "RaySession", "worker_group_demand"]
