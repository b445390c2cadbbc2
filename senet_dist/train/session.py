"""``RaySession``: one Ray connection, its environment, and what it can hold, for the length of a ``with`` block.

The flow opens one session for every variant it trains (one Ray start-up, safe concurrency from threads); ``fit``
opens its own only when it is given none. On exit the session restores every environment variable it set and
shuts down the Ray it started (never one it joined).

Before a worker group starts, the session checks what the cluster holds: a local Ray cannot grow, so a shortfall
is an error at once; a joined cluster may autoscale (KubeRay scales GPU workers from zero), so the session waits
for the resources up to ``resource_wait_s``. A local storage path on a cluster of several nodes is refused too:
each node would write its checkpoints to its own disk.

Authentication: a joined cluster's Ray token auth is honoured as the environment gives it (``RAY_AUTH_MODE``,
``RAY_AUTH_TOKEN`` or ``RAY_AUTH_TOKEN_PATH``); only the local Ray the session starts itself runs with auth disabled
by default.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import Any

from typing_extensions import Self

from senet_dist.errors import ConfigError, ResourceError
from senet_dist.storage import is_local
from senet_dist.train.config import TrainConfig

log = logging.getLogger(__name__)

# Set (unless the user exported them) for every Ray this session starts or joins, and shipped to its workers.
QUIET_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "1",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::UserWarning",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
}
# Only for the local Ray this session starts itself (address="local", serving this one process): Ray's default there,
# token auth, would write a token to ~/.ray/auth_token and log a notice at every start. Its ports still listen on every
# interface while it runs, so on a shared network export RAY_AUTH_MODE=token: an exported value wins (Ray then reads
# or generates the token). Never set or shipped when joining a cluster: a driver must match its nodes' setting (token
# on our deployments, docs/security.md).
LOCAL_RAY_ENV = {"RAY_AUTH_MODE": "disabled"}
# Ray Train V2 defaults that cost seconds per fit on small runs (docs/performance.md, "Orchestration"); a value the user
# exported wins. The controller polls its worker group every 2 s by default, and start, first report and finish
# each wait for a poll. With the watcher setting below: no-op fit 11.5 -> 9.4 s, flow overhead 20.6 -> 16.4 s per
# variant on the 2-core CI VM.
RAY_TRAIN_ENV = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5"}
# Only on a Ray that cannot grow: the preemption watcher (one more actor per fit) follows node draining, which a
# one-node local Ray never does.
FIXED_SIZE_RAY_TRAIN_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}
_SETUP_HOOK = "senet_dist.ray_hooks.quiet_ray_workers"
# How long a cluster that can grow gets to provide a worker group's resources: the default of
# PipelineConfig.resource_wait_s (the flow's parameter) and of every RaySession; 10 minutes covers a cloud GPU node's
# provisioning and image pull. While waiting, what is missing is logged every WAIT_LOG_EVERY_S.
RESOURCE_WAIT_S = 600.0
WAIT_LOG_EVERY_S = 30.0
_WAIT_POLL_S = 1.0
# Set to 1 when a local-looking storage path (/mnt/nfs/...) is a shared mount that every Ray node sees at that path.
SHARED_STORAGE_ENV = "SENET_SHARED_STORAGE"


class RaySession:
    """Start a local Ray (``address`` None and no ``RAY_ADDRESS``) or join one, while the ``with`` block runs.

    ``fixed_size``: whether the cluster can never grow, so a worker group it cannot hold is an error rather than
    a wait for an autoscaler. None means: True exactly when no cluster address is given (a local Ray, started by
    this session or already running in this process). ``resource_wait_s``: how long a cluster that can grow gets
    to provide a worker group's resources before :meth:`check_resources` gives up. ``lazy``: connect on first use
    (:meth:`connect`, called by everything that needs Ray) instead of on entry, so one session can span a flow run
    that may find nothing to train without starting a Ray for it.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        num_cpus: int | None = None,
        fixed_size: bool | None = None,
        resource_wait_s: float = RESOURCE_WAIT_S,
        lazy: bool = False,
    ) -> None:
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self._fixed_size = self.address is None if fixed_size is None else fixed_size
        self.resource_wait_s = resource_wait_s
        self.lazy = lazy
        self.started = False  # this session started the Ray it uses (and shuts it down on exit)
        self.connected = False
        self._entered = False
        self._env_added: list[str] = []

    @property
    def fixed_size(self) -> bool:
        return self._fixed_size

    def __enter__(self) -> Self:
        self._entered = True
        if not self.lazy:
            self.connect()
        return self

    def connect(self) -> Self:
        """Start or join Ray now, if this session has not yet (idempotent; only inside the ``with`` block)."""
        import ray

        if self.connected:
            return self
        if not self._entered:
            raise RuntimeError("RaySession.connect() outside its with block")
        self._setdefault_env(QUIET_ENV)
        if not ray.is_initialized():
            # never RAY_AUTH_MODE: workers inherit their raylet's, which is the one their cluster checks
            runtime_env: dict[str, Any] = {"env_vars": dict(QUIET_ENV)}
            if self.address:
                ray.init(address=self.address, runtime_env=runtime_env, log_to_driver=True)
            else:  # the hook only here: a cluster's nodes may run other code; this process's package is importable
                self._setdefault_env(LOCAL_RAY_ENV)  # read by ray.init; its raylet and workers inherit it
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
        self.connected = True
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.started:
                import ray

                ray.shutdown()
        finally:
            for key in self._env_added:
                os.environ.pop(key, None)
            self._env_added, self.started, self.connected, self._entered = [], False, False, False

    def _setdefault_env(self, values: dict[str, str]) -> None:
        for key, value in values.items():
            if key not in os.environ:
                os.environ[key] = value
                self._env_added.append(key)

    # ---- what the cluster can hold ----------------------------------------------------------------
    def shortfall(self, cfgs: Iterable[TrainConfig]) -> dict[str, tuple[float, float]]:
        """{resource: (needed, the cluster's total)} for each resource the worker groups of ``cfgs`` lack together."""
        import ray

        self.connect()
        have = ray.cluster_resources()
        return {k: (v, have.get(k, 0.0)) for k, v in worker_group_demand(cfgs).items() if have.get(k, 0.0) < v}

    def room_for_all(self, cfgs: Iterable[TrainConfig]) -> bool:
        """True when the cluster holds every worker group side by side right now.

        Variants only run concurrently then: otherwise the later ones would only queue for the resources (Ray Train
        retries a worker group's start every 60 s until it fits), holding a controller and a flow thread each."""
        return not self.shortfall(cfgs)

    def check_resources(self, cfg: TrainConfig) -> None:
        """A worker group the cluster cannot hold makes Ray Train retry its start every 60 s, forever: on a fixed-size
        Ray that is an error now; on a cluster that can grow, wait up to ``resource_wait_s`` for the autoscaler
        (GPU nodes included: KubeRay scales them from zero), then an error naming what is still missing."""
        short = self.shortfall([cfg])
        if short and self.fixed_size:
            if cfg.use_gpu and "GPU" in short:
                need, got = short["GPU"]
                raise ResourceError(
                    f"use_gpu=true needs {need:g} GPU(s) for {cfg.num_workers} worker(s) but the Ray "
                    f"cluster has {got:g}; set use_gpu=false (--set use_gpu=false) to train on CPU"
                )
            raise ResourceError(
                f"{cfg.num_workers} worker(s) need {_describe(short)}: lower num_workers (--set num_workers=N) "
                "or each worker's share (resources_per_worker, e.g. {CPU: 0.5})"
            )
        if short:
            self._wait_for(cfg, short)

    def _wait_for(self, cfg: TrainConfig, short: dict[str, tuple[float, float]]) -> None:
        start = time.monotonic()
        deadline, next_log = start + self.resource_wait_s, start
        while short:
            now = time.monotonic()
            if now >= deadline:
                raise ResourceError(
                    f"{cfg.num_workers} worker(s) need {_describe(short)}, and the Ray cluster did not grow to hold "
                    f"them within resource_wait_s={self.resource_wait_s:g} s: add nodes with those resources, "
                    "lower num_workers or resources_per_worker, or raise resource_wait_s"
                )
            if now >= next_log:
                log.warning(
                    "%d worker(s) need %s; waiting up to %.0f s more for the cluster to grow (autoscaler)",
                    cfg.num_workers,
                    _describe(short),
                    deadline - now,
                )
                next_log = now + WAIT_LOG_EVERY_S
            time.sleep(min(_WAIT_POLL_S, deadline - now))
            short = self.shortfall([cfg])
        log.info("the Ray cluster holds %d worker(s) after %.0f s", cfg.num_workers, time.monotonic() - start)

    def alive_nodes(self) -> int:
        import ray

        self.connect()
        return sum(1 for node in ray.nodes() if node.get("Alive"))

    def check_storage(self, storage_path: str) -> None:
        """Ray Train has every node write its checkpoints under ``storage_path``: a path on one machine's disk breaks
        a multi-node run (Ray Train refuses it, or resume finds half the checkpoints). Refuse it before any worker
        starts, unless ``SENET_SHARED_STORAGE=1`` says the path is a mount that every node shares."""
        if not is_local(storage_path) or os.environ.get(SHARED_STORAGE_ENV, "").lower() in ("1", "true", "yes"):
            return
        nodes = self.alive_nodes()
        if nodes > 1:
            raise ConfigError(
                f"storage path {storage_path} is on local disk but the Ray cluster has {nodes} nodes: use an "
                f"object-storage URI (artifacts / SENET_ARTIFACTS=s3://bucket/prefix) or a shared mount present "
                f"at that path on every node (then set {SHARED_STORAGE_ENV}=1)"
            )


def _describe(short: dict[str, tuple[float, float]]) -> str:
    return ", ".join(f"{need:g} {k} (the Ray cluster has {got:g})" for k, (need, got) in short.items())


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


__all__ = ["LOCAL_RAY_ENV", "QUIET_ENV", "RESOURCE_WAIT_S", "SHARED_STORAGE_ENV", "RaySession", "worker_group_demand"]
