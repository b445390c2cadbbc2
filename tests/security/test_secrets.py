"""No storage secret leaves the driver by default, and none is written or logged: a full ``train-senet`` flow run with
its shards and artifacts on the S3 endpoint, scanned afterwards for the access key and the secret everywhere they
could end up: every object in the bucket (tables, reports, checkpoints, dataset versions), every local file the run
wrote, the pickled arguments of the Ray tasks and of the trainer, the process's output and logs, Ray's session logs
and the Prefect database."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest

from senet_dist.storage import SHIP_STORAGE_ENV, list_files, read_bytes

KEY, SECRET = "AKIASENETLEAKPROBE01", "senet-leak-probe-secret-9f8e7d6c"  # moto accepts any keys on loopback
TINY = {"epochs": 1, "batch_size": 8, "num_workers": 1, "image_size": 32, "loader_workers": 0}


class RecordedRemote:
    """A Ray remote function or actor class whose ``.remote(...)`` arguments are pickled (as Ray pickles them)."""

    def __init__(self, inner: Any, pickles: list[bytes]) -> None:
        self.inner, self.pickles = inner, pickles

    def options(self, **kw: Any) -> RecordedRemote:
        return RecordedRemote(self.inner.options(**kw), self.pickles)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        import ray.cloudpickle

        self.pickles.append(ray.cloudpickle.dumps((args, kwargs)))
        return self.inner.remote(*args, **kwargs)


@pytest.fixture
def probe_env(s3_server, monkeypatch) -> str:
    """The S3 endpoint with distinctive keys, in the default mode (no SENET_SHIP_STORAGE_ENV); a fresh bucket."""
    import uuid

    for key in ("AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_SESSION_TOKEN", "AWS_PROFILE", SHIP_STORAGE_ENV):
        monkeypatch.delenv(key, raising=False)
    for key, value in s3_server.env().items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    bucket = f"leak-{uuid.uuid4().hex[:10]}"
    s3_server.create_bucket(bucket)
    return bucket


def found_in(blob: bytes) -> list[str]:
    return [name for name, value in (("access key", KEY), ("secret", SECRET)) if value.encode() in blob]


@pytest.mark.ray
@pytest.mark.prefect
@pytest.mark.timeout(600)
def test_a_flow_run_on_s3_leaks_no_storage_secret(
    prefect_harness, probe_env, lfw_source_factory, tmp_path, monkeypatch, capfd, caplog, ray_down
):
    import ray
    import ray.train.torch

    from flows.train_senet import train_senet
    from senet_dist.train import RaySession

    pickles: list[bytes] = []
    real_remote, real_init = ray.remote, ray.train.torch.TorchTrainer.__init__

    def remote(*args: Any, **kwargs: Any) -> Any:
        made = real_remote(*args, **kwargs)
        if args and callable(args[0]) and not kwargs:  # ray.remote(fn)
            return RecordedRemote(made, pickles)
        return lambda target: RecordedRemote(made(target), pickles)  # ray.remote(**options)(fn)

    def trainer_init(self: Any, *args: Any, **kwargs: Any) -> None:
        pickles.append(ray.cloudpickle.dumps((args, kwargs)))  # train_loop_config, run_config (its filesystem), ...
        real_init(self, *args, **kwargs)

    session_dirs: list[str] = []
    connect = RaySession.connect

    def recording_connect(self: RaySession) -> RaySession:
        out = connect(self)
        session_dirs.append(ray._private.worker._global_node.get_session_dir_path())
        return out

    monkeypatch.setattr(ray, "remote", remote)
    monkeypatch.setattr(ray.train.torch.TorchTrainer, "__init__", trainer_init)
    monkeypatch.setattr(RaySession, "connect", recording_connect)
    caplog.set_level(logging.INFO)
    root = f"s3://{probe_env}"
    state = train_senet(
        data=str(lfw_source_factory(24)),
        variants=["se_resnet_tiny"],
        shards=f"{root}/shards",
        artifacts=f"{root}/senet",
        train=TINY,
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert len(pickles) >= 2  # the trainer and the evaluation task at least

    leaks: dict[str, list[str]] = {}
    for rel in list_files(root):  # every table part, report, checkpoint, dataset version and LATEST
        hits = found_in(read_bytes(f"{root}/{rel}"))
        if hits:
            leaks[f"{root}/{rel}"] = hits
    for path in [p for p in tmp_path.rglob("*") if p.is_file()]:
        hits = found_in(path.read_bytes())
        if hits:
            leaks[str(path)] = hits
    for i, blob in enumerate(pickles):
        if found_in(blob):
            leaks[f"pickled Ray arguments #{i}"] = found_in(blob)
    out, err = capfd.readouterr()
    for name, text in (("stdout", out), ("stderr", err), ("logs", caplog.text)):
        if found_in(text.encode()):
            leaks[name] = found_in(text.encode())
    for session in session_dirs:
        for path in [p for p in Path(session, "logs").rglob("*") if p.is_file()]:
            hits = found_in(path.read_bytes())
            if hits:
                leaks[str(path)] = hits
    database = prefect_database()
    if found_in(database.read_bytes()):
        leaks[str(database)] = found_in(database.read_bytes())
    assert not leaks, leaks
    assert os.environ["AWS_SECRET_ACCESS_KEY"] == SECRET  # the driver still has its keys; only they stayed here


def prefect_database() -> Path:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value())  # the test harness's SQLite file
    path = Path(url.split(":///", 1)[1])
    assert path.is_file(), url
    return path
