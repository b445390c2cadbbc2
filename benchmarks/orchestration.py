"""Orchestration overhead of the ``train-senet`` flow: flow wall time minus the time spent actually training.

Runs the real flow in-process against a temporary Prefect server (SQLite, ``prefect_test_harness``) on a small
LFW subset, with real Ray (2 workers, gloo) and real tables. Driver-side steps are timed by thin wrappers around
the real functions (nothing is mocked); per-epoch training time comes from the ``epochs`` table and the
per-variant wall time from the ``runs`` table (``senet_dist.artifacts.ArtifactStore``).

Modes (see MODES): ``flow`` is the flow as shipped, variants one after another with 2 Ray workers each (whoever
starts Ray inside the flow run pays for it inside the flow's wall time); ``warm-ray`` starts a local Ray *before*
the timer, as a long-lived cluster (``ray_address``) would, so the flow and ``fit`` only join it; ``1-worker`` and
``1-worker-concurrent`` give each variant one Ray worker, so a 2-CPU Ray holds both worker groups at once and the
flow's default (``concurrent=None``) runs them side by side; ``1-worker`` forces them one after another.
``flow-ray-defaults`` is ``flow`` with Ray Train's own settings instead of the ones ``fit`` applies
(``senet_dist.train.launcher.RAY_TRAIN_ENV``).

    .venv/bin/python benchmarks/orchestration.py [--modes flow,flow-ray-defaults,warm-ray,...] [--repeats 1]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

for _k, _v in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}.items():
    os.environ.setdefault(_k, _v)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # flows/ is a top-level package of the repo

VARIANTS = ["se_resnet_tiny", "se_resnet18"]
MODEL_KWARGS = {"se_resnet18": {"stem": "cifar", "width": 8}}  # a second tiny variant (~0.2 M params)
TRAIN = {"epochs": 1, "num_workers": 2, "batch_size": 8, "image_size": 32, "loader_workers": 0}
SHARD = {"max_count": 8}
# mode -> (Ray started before the timer, TRAIN overrides, the flow's ``concurrent`` argument)
MODES: dict[str, tuple[bool, dict[str, Any], bool | None]] = {
    "flow": (False, {}, False),
    "flow-ray-defaults": (False, {}, False),  # RAY_TRAIN_* exported as Ray's defaults: fit's settings off
    "warm-ray": (True, {}, False),
    "1-worker": (False, {"num_workers": 1}, False),
    "1-worker-concurrent": (False, {"num_workers": 1}, None),
}

# (label, module path, attribute): real driver-side functions whose time the breakdown reports.
PROBES = [
    ("shard (fetch + shard_dataset + datasets row)", "flows.train_senet", "prepare_dataset"),
    ("Ray init (RaySession)", "senet_dist.train.session", "RaySession.__enter__"),  # the flow's or fit's own
    ("Ray Train TorchTrainer.fit", "ray.train.torch", "TorchTrainer.fit"),
    ("Ray shutdown", "ray", "shutdown"),
    ("evaluate (test split)", "senet_dist.evaluation.cluster", "evaluate_model"),
    ("report (report.json + plots)", "senet_dist.evaluation.report", "write_report"),
    ("table writes (ArtifactStore.append)", "senet_dist.artifacts", "ArtifactStore.append"),
    ("table reads (ArtifactStore.read)", "senet_dist.artifacts", "ArtifactStore.read"),
]


class Probes:
    """Wraps the PROBES in place for the duration of a context and sums each label's *self* time.

    Nested probes (a table write inside the shard step) are charged to the innermost one only, so the labels
    add up to the probed total without double counting. Each thread keeps its own stack (concurrent variants
    run in Prefect's task threads); their times then add up across threads and can exceed the wall time.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._local = threading.local()

    @property
    def _stack(self) -> list[list[float]]:  # [child seconds] per open probe, this thread's
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack

    def _wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._stack.append([0.0])
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                child = self._stack.pop()[0]
                self.seconds[label] += elapsed - child
                self.calls[label] += 1
                if self._stack:
                    self._stack[-1][0] += elapsed

        return timed

    @contextmanager
    def installed(self) -> Iterator[Probes]:
        import importlib

        undo = []
        for label, module, attr in PROBES:
            owner: Any = importlib.import_module(module)
            *parents, name = attr.split(".")
            for part in parents:
                owner = getattr(owner, part)
            if not hasattr(owner, name):
                continue  # e.g. an older flow that leaves Ray to fit()
            own = name in vars(owner)
            original = getattr(owner, name)
            setattr(owner, name, self._wrap(label, original))
            undo.append((owner, name, original, own))
        try:
            yield self
        finally:
            for owner, name, original, own in reversed(undo):
                if own:
                    setattr(owner, name, original)
                else:
                    delattr(owner, name)  # inherited: drop the wrapper, the base class's method shows again


def run_flow(mode: str, workdir: Path, per_class: int) -> dict[str, Any]:
    """One flow run on a fresh shards/artifacts directory; returns timings and the tables' training times."""
    import ray

    from flows.train_senet import train_senet
    from senet_dist.artifacts import ArtifactStore
    from senet_dist.train import RaySession

    probes = Probes()
    warm, overrides, concurrent = MODES[mode]
    # outside the timer and the probes: the cluster already exists (a local Ray that cannot grow, as the flow's own)
    warm_session = RaySession(fixed_size=True).__enter__() if warm else None
    defaults = {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "2", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "1"}
    saved = {k: os.environ.get(k) for k in defaults}
    if mode == "flow-ray-defaults":
        os.environ.update(defaults)  # a user's exported values win over what fit sets
    try:
        with probes.installed():
            start = time.perf_counter()
            state = train_senet(
                data=f"lfw-subset:{per_class}",
                variants=VARIANTS,
                shards=str(workdir / "shards"),
                artifacts=str(workdir / "artifacts"),
                train={**TRAIN, **overrides},
                model_kwargs=MODEL_KWARGS,
                shard=SHARD,
                force=True,
                concurrent=concurrent,
                return_state=True,
            )
            wall = time.perf_counter() - start
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        if warm_session is not None:
            warm_session.__exit__(None, None, None)
        elif ray.is_initialized():
            ray.shutdown()
    if not state.is_completed():
        raise RuntimeError(f"flow run ended {state.type}: {state.message}")
    store = ArtifactStore(workdir / "artifacts")
    runs = [r for r in store.runs_latest().to_pylist() if r["status"] == "completed"]
    epochs = store.read("epochs").to_pylist()
    if len(runs) != len(VARIANTS):
        raise RuntimeError(f"expected {len(VARIANTS)} completed runs, found {len(runs)}")
    return {
        "mode": mode,
        "concurrent": len({r["variant"] for r in runs}) > 1 and _overlap(runs),
        "flow_wall": wall,
        "runs_wall": sum(r["wall_seconds"] for r in runs),
        "epoch_seconds": sum(e["epoch_seconds"] for e in epochs),
        "seconds": dict(probes.seconds),
        "calls": dict(probes.calls),
    }


def ray_train_floor(workdir: Path) -> dict[str, float]:
    """Fixed Ray costs without our code: local Ray start/stop, and a 2-worker TorchTrainer whose train function
    does nothing (worker group + controller + gloo process group), or only imports our worker module; with Ray
    Train's own settings and with the ones a ``RaySession`` applies (``session.RAY_TRAIN_ENV``)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from senet_dist.train.session import FIXED_SIZE_RAY_TRAIN_ENV, QUIET_ENV, RAY_TRAIN_ENV

    def train_func(config: dict[str, Any]) -> None:  # local function: cloudpickled by value to the workers
        if config["imports"]:
            import senet_dist.train.worker  # noqa: F401  (torch, torchvision, ray.train.torch, our models)

    out: dict[str, float] = {}
    start = time.perf_counter()
    ray.init(
        address="local", include_dashboard=False, runtime_env={"env_vars": dict(QUIET_ENV)}
    )  # no RAY_TRAIN_* settings yet
    out["ray.init (local, 2 CPUs)"] = time.perf_counter() - start
    for label, imports, tuned in (
        ("TorchTrainer.fit, no-op train func, Ray Train defaults", False, False),
        ("TorchTrainer.fit, no-op train func, senet-dist settings", False, True),
        ("TorchTrainer.fit, train func imports senet_dist.train.worker, senet-dist settings", True, True),
    ):
        trainer = TorchTrainer(
            train_func,
            train_loop_config={"imports": imports},
            torch_config=TorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(name=f"noop-{imports}-{time.time_ns()}", storage_path=str(workdir / "ray")),
        )
        start = time.perf_counter()
        tuned_env = {**RAY_TRAIN_ENV, **FIXED_SIZE_RAY_TRAIN_ENV} if tuned else {}
        with _env(tuned_env):
            trainer.fit()
        out[label] = time.perf_counter() - start
    start = time.perf_counter()
    ray.shutdown()
    out["ray.shutdown"] = time.perf_counter() - start
    return out


@contextlib.contextmanager
def _env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


def _overlap(runs: list[dict[str, Any]]) -> bool:
    return max(r["started_at"] for r in runs) < min(r["ended_at"] for r in runs)


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def print_tables(
    results: dict[str, list[dict[str, Any]]], server_start: list[float], per_class: int, floors: list[dict[str, float]]
) -> None:
    n = len(VARIANTS)
    modes = ", ".join(f"{m}: train {o or {}} concurrent={c}" for m, (_, o, c) in MODES.items() if m in results)
    print(
        f"\n# train-senet flow: {n} variants {VARIANTS} on lfw-subset:{per_class} (2 classes), {TRAIN} "
        f"(modes: {modes}); "
        f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}; medians of {len(next(iter(results.values())))} run(s)"
    )
    print(f"Prefect temporary server start (prefect_test_harness, once): {statistics.median(server_start):.1f} s\n")
    print(
        "| mode | flow wall s | sum runs.wall_seconds | sum epochs.epoch_seconds | overhead vs runs / variant |"
        " overhead vs epochs / variant |"
    )
    print("|---|---|---|---|---|---|")
    for mode, rows in results.items():
        wall, runs, ep = _median(rows, "flow_wall"), _median(rows, "runs_wall"), _median(rows, "epoch_seconds")
        print(f"| {mode} | {wall:.1f} | {runs:.1f} | {ep:.1f} | {(wall - runs) / n:.1f} | {(wall - ep) / n:.1f} |")
    print(
        "\nBreakdown of the flow wall time (driver-side, seconds, median; 'calls' from the first run; with "
        "concurrent variants the steps' times add up across threads):"
    )
    labels = list(dict.fromkeys(label for label, _, _ in PROBES))
    modes = list(results)
    print("| step | " + " | ".join(modes) + " | calls |")
    print("|---|" + "---|" * len(modes) + "---|")
    for label in labels:
        cells = [f"{statistics.median(r['seconds'].get(label, 0.0) for r in rows):.1f}" for rows in results.values()]
        calls = next(iter(results.values()))[0]["calls"].get(label, 0)
        print(f"| {label} | " + " | ".join(cells) + f" | {calls} |")
    derived = {
        "  of which in-worker epochs (train + val)": lambda r: r["epoch_seconds"],
        "  of which Ray Train outside epochs (worker group, DDP, checkpoints)": lambda r: (
            r["seconds"].get("Ray Train TorchTrainer.fit", 0.0) - r["epoch_seconds"]
        ),
        "Prefect + everything not probed": lambda r: r["flow_wall"] - sum(r["seconds"].values()),
    }
    for label, fn in derived.items():
        cells = [
            f"{statistics.median(fn(r) for r in rows):.1f}"
            if not (label.startswith("Prefect") and any(r["concurrent"] for r in rows))
            else "n/a (overlap)"
            for rows in results.values()
        ]
        print(f"| {label} | " + " | ".join(cells) + " | |")
    print(f"\nRay fixed costs without our training code (median of {len(floors)}):")
    print("| step | seconds |\n|---|---|")
    for label in floors[0]:
        print(f"| {label} | {statistics.median(f[label] for f in floors):.1f} |")


def main(argv: list[str] | None = None) -> dict[str, list[dict[str, Any]]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--per-class", type=int, default=24, help="LFW-subset images per class (max 100)")
    a = p.parse_args(argv)
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES) or a.repeats < 1:
        p.error(f"--modes takes some of {','.join(MODES)}; --repeats >= 1")
    from prefect.testing.utilities import prefect_test_harness

    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    floors: list[dict[str, float]] = []
    start = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=180):
        server_start = [time.perf_counter() - start]
        for _ in range(a.repeats):
            for mode in modes:  # interleaved, so background load hits both modes alike
                with tempfile.TemporaryDirectory(prefix="senet-orch-") as tmp:
                    results[mode].append(run_flow(mode, Path(tmp), a.per_class))
            with tempfile.TemporaryDirectory(prefix="senet-orch-") as tmp:
                floors.append(ray_train_floor(Path(tmp)))
    print_tables(results, server_start, a.per_class, floors)
    return results


if __name__ == "__main__":
    main()
