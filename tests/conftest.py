"""Fixtures shared by every test package; plain helper functions are in tests/helpers.py.

- environment defaults for Ray and Prefect, set once for the whole session (before any test module imports them);
- one local Ray for the session: ``local_ray`` owns it; tests ask for ``ray_up`` (per test) or ``ray_session`` (per
  module, for module-scoped fixtures), which start it again if a ``ray_down`` test stopped it;
- scikit-image's lfw-subset (real 25x25 faces / non-faces) as an ImageFolder and as shards, each made once per
  session per size: ``lfw_source_factory(limit_per_class)`` and ``lfw_shards_factory(limit_per_class, **shard opts)``.
  A package's ``lfw_source`` / ``lfw_version`` fixtures pick its slice (tests/flows: 24 per class; tests/reliability:
  40 per class; tests/train: all 200 images);
- ``lfw_checkpoint``: a real se_resnet_tiny checkpoint trained in-process (no Ray) on all of lfw-subset;
- ``tiny_config(**overrides)``: the seeded tiny TrainConfig that Ray training tests use;
- ``prefect_harness``: a real temporary Prefect server (SQLite) for the session;
- ``s3_server`` / ``s3_bucket``: a real S3 endpoint on loopback (tests/s3server.py); ``s3_proxy``: the same endpoint
  behind a TCP proxy that can go down for an outage (tests/s3proxy.py).

A sub-package conftest holds only what is local to that package (which slice of data it uses, its own tallies).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.helpers import shard

if TYPE_CHECKING:
    from tests.s3proxy import TcpProxy
    from tests.s3server import S3Server

# RAY_AUTH_MODE=disabled: every Ray the suite starts is this machine's own (a local Ray, tests/raycluster.py), like
# the local Ray a RaySession starts itself; tests/security/test_control_planes.py sets token auth where it tests it.
ENV_DEFAULTS = {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}
for _k, _v in ENV_DEFAULTS.items():
    os.environ.setdefault(_k, _v)


# ---- Ray -------------------------------------------------------------------------------------------
def _ensure_local_ray():
    """Start the session's local Ray unless one is running in this process; returns the ``ray`` module."""
    import ray

    from senet_dist.train.session import QUIET_ENV

    if not ray.is_initialized():
        # 2 training workers + Ray Train's controller on logical CPUs (the box has 2 cores).
        ray.init(address="local", num_cpus=4, include_dashboard=False, runtime_env={"env_vars": dict(QUIET_ENV)})
    return ray


@pytest.fixture(scope="session")
def local_ray():
    """The one local Ray of the session: started on first use, shut down at the end of the session.

    Prefer ``ray_up`` / ``ray_session`` in tests: they also restart it after a ``ray_down`` test stopped it.
    """
    ray = _ensure_local_ray()
    yield ray
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture()
def ray_up(local_ray):
    """The session's local Ray, running for this test; returns the ``ray`` module."""
    return _ensure_local_ray()


@pytest.fixture(scope="module")
def ray_session(local_ray):
    """``ray_up`` for module-scoped fixtures (e.g. tests/train's ``fitted``); returns the ``ray`` module."""
    return _ensure_local_ray()


@pytest.fixture()
def ray_down():
    """No Ray in this process, so a test can assert that bad input never starts one."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    yield
    assert not ray.is_initialized(), "the call under test started Ray"


# ---- Prefect ---------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def prefect_harness():
    """A real temporary Prefect server (SQLite) for the whole session, started on first use."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


# ---- lfw-subset ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def lfw_source_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[[int | None], Path]:
    """``source(limit_per_class=None)``: lfw-subset as an ImageFolder (face/, non_face/), at most ``limit_per_class``
    images per class (None: all 100). Written once per session per limit; treat it as read-only (copy to modify)."""
    made: dict[int | None, Path] = {}

    def source(limit_per_class: int | None = None) -> Path:
        if limit_per_class not in made:
            from senet_dist.data import fetch_dataset

            root = tmp_path_factory.mktemp("lfw-all" if limit_per_class is None else f"lfw-{limit_per_class}")
            made[limit_per_class] = Path(
                fetch_dataset("lfw-subset", root / "lfw", limit_per_class=limit_per_class, num_procs=1)
            )
        return made[limit_per_class]

    return source


@pytest.fixture(scope="session")
def lfw_shards_factory(lfw_source_factory, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``version(limit_per_class=None, **shard_opts)``: that lfw-subset source sharded with ``tests.helpers.shard``
    (``TINY_SHARD`` | ``shard_opts``); returns the version dir. Made once per session per arguments; read-only."""
    made: dict[str, Path] = {}

    def version(limit_per_class: int | None = None, **shard_opts) -> Path:
        key = repr((limit_per_class, sorted(shard_opts.items())))
        if key not in made:
            made[key] = shard(lfw_source_factory(limit_per_class), tmp_path_factory.mktemp("lfw-shards"), **shard_opts)
        return made[key]

    return version


@pytest.fixture(scope="session")
def lfw_checkpoint(lfw_shards_factory, tmp_path_factory: pytest.TempPathFactory):
    """``(checkpoint_dir, version_dir, DatasetInfo)``: se_resnet_tiny trained 2 epochs in-process (seeded, no Ray)
    on all 200 lfw-subset images; it separates them well above chance. Read-only (copy it to modify)."""
    import torch

    from senet_dist.data import DatasetInfo, LoaderConfig, make_loader
    from senet_dist.train.checkpoint import CheckpointMeta, save_checkpoint
    from senet_dist.train.components import build_components, training_state
    from senet_dist.train.config import TrainConfig
    from senet_dist.train.loops import train_epoch

    root = tmp_path_factory.mktemp("eval")
    version = lfw_shards_factory(None, max_count=50)  # all 200 images, no resize, PNG
    info = DatasetInfo.load(version)
    torch.manual_seed(0)
    cfg = TrainConfig(model="se_resnet_tiny", epochs=2, batch_size=16, num_workers=1).with_overrides({"lr": 0.05})
    lcfg = LoaderConfig(batch_size=16, image_size=32, num_workers=0, crop_scale=(0.5, 1.0))
    comp = build_components(cfg, info.num_classes, torch.device("cpu"), len(make_loader(version, "train", lcfg)))
    for epoch in (1, 2):
        loader = make_loader(version, "train", lcfg, epoch=epoch)
        train_epoch(comp.model, loader, comp.criterion, comp.optimizer, comp.scheduler, comp.opts)
    meta = CheckpointMeta(
        model=cfg.model,
        num_classes=info.num_classes,
        classes=list(info.classes),
        image_size=32,
        epoch=2,
        run_name="eval-test",
        dataset_version=info.version,
        dataset_fingerprint=info.fingerprint,
    )
    ckpt = save_checkpoint(root / "ckpt", training_state(comp), meta)
    return ckpt, version, info


# ---- training configs ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def tiny_config():
    """Factory: ``tiny_config(**dotted_overrides)``, a seeded tiny-model TrainConfig that reliably separates lfw-subset
    in 2 epochs on 2 CPU workers."""
    return _tiny_config


def _tiny_config(**overrides):
    from senet_dist.train import TrainConfig

    base = {
        "model": "se_resnet_tiny",
        "epochs": 2,
        "batch_size": 16,
        "num_workers": 2,
        "loader_workers": 1,
        "image_size": 32,
        "optimizer.lr": 0.05,
        "loader.crop_scale": [0.5, 1.0],
        "seed": 0,
    }
    return TrainConfig().with_overrides(base | overrides)


# ---- S3 --------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """``moto_server`` on a free 127.0.0.1 port, started on first use and stopped at the end of the session."""
    from tests.s3server import start_server, stop_server

    server, proc = start_server(tmp_path_factory.mktemp("moto") / "server.log")
    try:
        yield server
    finally:
        stop_server(proc)


@pytest.fixture
def s3_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket; the AWS_* environment points at the server for this test, and its keys may go to Ray's
    workers (``SENET_SHIP_STORAGE_ENV=1``). Returns the bucket name."""
    from senet_dist.storage import SHIP_STORAGE_ENV

    for key in ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    # Opt in to shipping the driver's keys: the session's local Ray (and a test's cluster) may have started before this
    # test set them, so its nodes lack them. The default (no keys leave the driver) is tested in tests/security.
    monkeypatch.setenv(SHIP_STORAGE_ENV, "1")
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture
def s3_proxy(s3_bucket: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[TcpProxy]:
    """A ``TcpProxy`` (tests/s3proxy.py) in front of ``s3_server``, up; ``AWS_ENDPOINT_URL`` points at it for this
    test, so every S3 client of the test goes through it and a ``proxy.outage(s)`` cuts storage off."""
    from tests.s3proxy import TcpProxy

    proxy = TcpProxy(s3_server.endpoint)
    proxy.up()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    try:
        yield proxy
    finally:
        proxy.close()
