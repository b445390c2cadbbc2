"""The champion lock on a real S3 endpoint (moto's server on loopback): one registry writer per dataset, so two
gates finishing together cannot both crown their model, and a writer that lost its lease writes nothing.

- the lease is created with a conditional put: a live lease written by someone else is never overwritten, and a
  second holder waits until the first releases;
- a held lease is renewed past its lifetime; an expired one is taken over with one warning line, also when the object
  is deleted (or replaced by another waiter) between the read and the takeover's put;
- ``fence()`` refuses, with ``RegistryLockLost``, once another writer took the lease over; through ``register_run``
  and the gate, nothing is appended;
- the lock reaches the endpoint a ``?endpoint_override=`` URI names, with no ``AWS_ENDPOINT_URL`` set;
- an S3 root never runs without the lease (no silent "boto3 missing" path); other filesystems warn;
- two gates in two processes on an S3 artifacts root: exactly one champion, the better model, and the other gate
  waits for the lease, then compares its model with the new champion and records it as a challenger.

Leases here live 1 s, so expiry and renewal take seconds, not minutes."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from senet_dist.artifacts import ArtifactStore, utcnow
from senet_dist.errors import is_retryable
from senet_dist.release import gate
from senet_dist.release import registry as reg
from senet_dist.release.lock import (
    HeldLock,
    RegistryLockLost,
    RegistryLockTimeout,
    _S3Lease,
    lock_name,
    registry_lock,
    s3_client_kwargs,
)
from tests.helpers import PYTHON, REPO, free_port
from tests.release import conftest as release_conftest
from tests.release.conftest import record_run
from tests.s3server import ACCESS_KEY, SECRET_KEY

# tests/release's real tiny models and lfw shards (session fixtures), for the gate tests at the end
checkpoints = release_conftest.checkpoints
lfw_version = release_conftest.lfw_version

DATASET = "lfw"
FOREIGN_TOKEN = "f" * 32


@pytest.fixture
def s3(s3_server) -> Any:
    """A plain boto3 client on the endpoint, independent of the code under test: plays the other writers."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=s3_server.endpoint,
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )


@pytest.fixture
def store(s3_bucket) -> ArtifactStore:
    return ArtifactStore(f"s3://{s3_bucket}/registry")


def lease_key(dataset: str = DATASET) -> str:
    return f"registry/_locks/{lock_name(dataset)}"


def lease_body(s3: Any, bucket: str) -> tuple[str, dict[str, Any]]:
    got = s3.get_object(Bucket=bucket, Key=lease_key())
    return got["ETag"], json.loads(got["Body"].read())


def put_foreign_lease(s3: Any, bucket: str, *, expires_in: float, host: str = "other-host", pid: int = 4242) -> None:
    """A lease another process wrote (alive for ``expires_in`` s, or expired that long ago when negative)."""
    now = time.time()
    body = {"host": host, "pid": pid, "token": FOREIGN_TOKEN, "since": now, "expires": now + expires_in, "lease_s": 1}
    s3.put_object(Bucket=bucket, Key=lease_key(), Body=json.dumps(body).encode())


def lease_exists(s3: Any, bucket: str) -> bool:
    return s3.list_objects_v2(Bucket=bucket, Prefix="registry/_locks/").get("KeyCount", 0) > 0


def lock_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "senet_dist.release.lock" and r.levelname == "WARNING"]


# ---- creation and waiting ----------------------------------------------------------------------------------
def test_a_live_lease_is_never_overwritten_and_a_second_holder_waits(store, s3, s3_bucket):
    put_foreign_lease(s3, s3_bucket, expires_in=30)
    etag, _ = lease_body(s3, s3_bucket)
    with pytest.raises(RegistryLockTimeout, match=r"still held after 0.5s \(holder: other-host pid 4242\)"):
        with registry_lock(store, DATASET, timeout=0.5, lease_s=1.0):
            pass
    assert lease_body(s3, s3_bucket)[0] == etag  # an unconditional create would have replaced it
    s3.delete_object(Bucket=s3_bucket, Key=lease_key())

    got: dict[str, float] = {}

    def second() -> None:
        with registry_lock(store, DATASET, timeout=10, lease_s=1.0):
            got["at"] = time.monotonic()

    with registry_lock(store, DATASET, lease_s=1.0) as first:
        assert isinstance(first, _S3Lease) and lease_body(s3, s3_bucket)[1]["token"] == first.token
        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(1.5)  # longer than a lease: only the renewals keep the waiter out
        assert "at" not in got
        released = time.monotonic()
    waiter.join(timeout=10)
    assert got["at"] >= released
    assert not lease_exists(s3, s3_bucket)  # both released


def test_renewal_keeps_a_held_lease_past_its_lifetime(store, s3, s3_bucket, caplog):
    with registry_lock(store, DATASET, lease_s=1.0) as lock:
        etags = {lease_body(s3, s3_bucket)[0]}
        with pytest.raises(RegistryLockTimeout):  # would take over after 1 s if the lease were not renewed
            with registry_lock(store, DATASET, timeout=2.5, lease_s=1.0):
                pass
        etag, body = lease_body(s3, s3_bucket)
        etags.add(etag)
        assert body["token"] == lock.token and body["expires"] > time.time()
        assert len(etags) == 2  # renewed (a new body, so a new ETag) while the waiter waited
        lock.fence()  # still ours after 2.5 lease lifetimes
        store.append(reg.TABLE, [model_row("m1")])
    assert not lease_exists(s3, s3_bucket)
    assert not lock_warnings(caplog)
    assert set(reg.states(store, DATASET)) == {"m1"}


# ---- takeover ------------------------------------------------------------------------------------------------
def test_an_expired_lease_is_taken_over_with_one_warning(store, s3, s3_bucket, caplog):
    put_foreign_lease(s3, s3_bucket, expires_in=-5, host="crashed-host", pid=99)
    caplog.set_level(logging.WARNING, logger="senet_dist.release.lock")
    t0 = time.monotonic()
    with registry_lock(store, DATASET, timeout=5, lease_s=1.0) as lock:
        assert time.monotonic() - t0 < 2
        assert isinstance(lock, _S3Lease) and lease_body(s3, s3_bucket)[1]["token"] == lock.token
    (warning,) = lock_warnings(caplog)
    assert "took over" in warning and "crashed-host pid 99" in warning and "expired 5." in warning
    assert "\n" not in warning


@pytest.mark.parametrize("meanwhile", ["deleted", "taken over by another waiter"])
def test_takeover_survives_the_lease_changing_between_read_and_put(store, s3, s3_bucket, monkeypatch, meanwhile):
    """The worst moment, deterministically: ``_S3Lease.before_takeover`` runs between the read of the expired lease
    and the conditional put that takes it over. A deleted key is created afresh (no NoSuchKey crash); a lease another
    waiter took over first is left alone (its ``If-Match`` fails) and waited for."""
    put_foreign_lease(s3, s3_bucket, expires_in=-5)
    calls: list[str] = []

    def meddle(lease: _S3Lease) -> None:
        calls.append(lease.key)
        if meanwhile == "deleted":
            s3.delete_object(Bucket=s3_bucket, Key=lease_key())
        else:
            put_foreign_lease(s3, s3_bucket, expires_in=30, host="faster-waiter")

    monkeypatch.setattr(_S3Lease, "before_takeover", meddle)
    if meanwhile == "deleted":
        with registry_lock(store, DATASET, timeout=5, lease_s=1.0) as lock:
            assert isinstance(lock, _S3Lease) and lease_body(s3, s3_bucket)[1]["token"] == lock.token
        assert calls == [lease_key()] and not lease_exists(s3, s3_bucket)
    else:
        with pytest.raises(RegistryLockTimeout, match="faster-waiter"):
            with registry_lock(store, DATASET, timeout=0.5, lease_s=1.0):
                pass
        assert calls == [lease_key()]
        assert lease_body(s3, s3_bucket)[1]["host"] == "faster-waiter"  # its lease was neither replaced nor deleted


# ---- fencing -------------------------------------------------------------------------------------------------
def test_fence_refuses_a_write_after_another_writer_took_the_lease_over(store, s3, s3_bucket):
    with contextlib.ExitStack() as stack:
        stalled = stack.enter_context(registry_lock(store, DATASET, lease_s=1.0))
        assert isinstance(stalled, _S3Lease)
        stalled.stop_heartbeat()  # its process stalls for longer than a lease (a GC pause, a suspended VM)
        with registry_lock(store, DATASET, timeout=5, lease_s=1.0) as other:  # a real waiter takes it over
            other.fence()
            store.append(reg.TABLE, [model_row("by-other")])
            with pytest.raises(RegistryLockLost, match=r"was taken over by .* pid \d+ while this process held it"):
                stalled.fence()
                store.append(reg.TABLE, [model_row("by-stalled")])
            with pytest.raises(RegistryLockLost):  # lost stays lost
                stalled.fence()
            stack.close()  # the stalled holder leaves first: it must not delete the lease it lost
            assert lease_body(s3, s3_bucket)[1]["token"] == other.token
            other.fence()  # the new holder is unaffected
    assert set(reg.states(store, DATASET)) == {"by-other"}
    assert not lease_exists(s3, s3_bucket)


def test_a_released_lease_is_lost_too_and_the_error_is_permanent_and_one_line(store, s3, s3_bucket):
    with registry_lock(store, DATASET, lease_s=1.0) as lock:
        assert isinstance(lock, _S3Lease)
        lock.stop_heartbeat()
        s3.delete_object(Bucket=s3_bucket, Key=lease_key())  # expired, taken over and released by someone else
        with pytest.raises(RegistryLockLost) as caught:
            lock.fence()
    assert not is_retryable(caught.value) and "\n" not in str(caught.value) and "released" in str(caught.value)


def taken_over(real: Callable[..., Any], s3: Any) -> Callable[..., Any]:
    """``registry_lock`` as it goes for a writer that stalls once it holds the lease: another writer takes it over
    before the writer's first write."""

    @contextlib.contextmanager
    def lock(store: ArtifactStore, dataset: str, **kw: Any) -> Iterator[HeldLock]:
        with real(store, dataset, **kw) as held:
            held.stop_heartbeat()
            put_foreign_lease(s3, held.bucket, expires_in=30)
            yield held

    return lock


def test_register_run_writes_nothing_once_its_lease_is_lost(store, s3, s3_bucket, monkeypatch):
    now = utcnow()
    run = {"run_id": "r1", "variant": "se_resnet_tiny", "dataset_version": "v1", "dataset_fingerprint": "f"}
    store.append("runs", [run | {"status": "completed", "best_checkpoint_uri": "s3://x/ckpt", "updated_at": now}])
    monkeypatch.setattr(reg, "registry_lock", taken_over(registry_lock, s3))
    with pytest.raises(RegistryLockLost):
        reg.register_run(store, "r1", DATASET)
    assert reg.states(store) == {}
    assert lease_body(s3, s3_bucket)[1]["token"] == FOREIGN_TOKEN  # the new holder's lease was not deleted
    monkeypatch.setattr(reg, "registry_lock", registry_lock)
    s3.delete_object(Bucket=s3_bucket, Key=lease_key())
    assert reg.register_run(store, "r1", DATASET).stage == "challenger"  # the same call, holding the lease


# ---- where the lease lives, and when there is one ----------------------------------------------------------
def test_an_endpoint_override_uri_reaches_its_endpoint_with_no_endpoint_in_the_environment(
    s3_server, s3_bucket, s3, monkeypatch
):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    host = s3_server.endpoint.split("://", 1)[1]
    store = ArtifactStore(f"s3://{s3_bucket}/registry?endpoint_override={host}&scheme=http&region=us-east-1")
    with registry_lock(store, DATASET, timeout=5, lease_s=1.0) as lock:
        assert isinstance(lock, _S3Lease)
        assert lease_body(s3, s3_bucket)[1]["token"] == lock.token
        lock.fence()
        store.append(reg.TABLE, [model_row("m1")])
    assert set(reg.states(store, DATASET)) == {"m1"} and not lease_exists(s3, s3_bucket)


def test_client_settings_follow_the_uri_over_the_environment(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "env-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    env_only = s3_client_kwargs("s3://b/p")
    assert env_only["endpoint_url"].startswith("http://127.0.0.1:") and env_only["region_name"] == "eu-west-1"
    assert env_only["aws_access_key_id"] == "env-key"
    uri = s3_client_kwargs("s3://b/p?endpoint_override=minio:9000&scheme=http&region=us-west-2")
    assert (uri["endpoint_url"], uri["region_name"]) == ("http://minio:9000", "us-west-2")
    assert uri["aws_access_key_id"] == "env-key"  # keys still from the environment
    no_scheme = s3_client_kwargs("s3://b/p?endpoint_override=minio:9000")
    assert no_scheme["endpoint_url"] == "https://minio:9000"  # pyarrow's default, whatever the environment's scheme
    keyed = s3_client_kwargs("s3://uri-key:uri%2Fsecret@b/p")
    assert (keyed["aws_access_key_id"], keyed["aws_secret_access_key"]) == ("uri-key", "uri/secret")


def test_an_s3_root_never_runs_without_its_lease(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "boto3", None)  # an install without boto3: loud, never a silent "no lock"
    with pytest.raises(ImportError):
        with registry_lock(store, DATASET):
            pytest.fail("entered the critical section without a lease")


def test_a_filesystem_without_locks_warns(caplog):
    store = ArtifactStore("mock:///registry")
    with registry_lock(store, DATASET) as lock:
        lock.fence()  # nothing to fence
    (warning,) = lock_warnings(caplog)
    assert "no lock for this filesystem" in warning


def model_row(model_id: str) -> dict[str, Any]:
    """A minimal ``models`` event: the lock tests only need a write to fence."""
    return {"event_id": f"e-{model_id}", "model_id": model_id, "dataset": DATASET, "stage": "challenger"}


# ---- two gates -----------------------------------------------------------------------------------------------
GATE = textwrap.dedent(
    """
    import contextlib, json, sys, time
    from pathlib import Path
    from senet_dist.artifacts import ArtifactStore
    from senet_dist.release import gate
    root, version, run, sync = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    real_lock = gate.registry_lock

    @contextlib.contextmanager
    def traced_lock(store, dataset, **kw):
        # Both gates have measured the champion ("untrained") before either asks for the lease. "strong" asks
        # first and holds it 1.5 s before appending; "weak" asks while it is held, so it must wait for the lease.
        (sync / f"compared-{run}").touch()
        while not all((sync / f"compared-{r}").exists() for r in ("weak", "strong")):
            time.sleep(0.005)
        while run == "weak" and not (sync / "strong-holds").exists():
            time.sleep(0.005)
        asked = time.time()
        with real_lock(store, dataset, **kw) as lock:
            got = time.time()
            if run == "strong":
                (sync / "strong-holds").touch()
                time.sleep(1.5)
            yield lock
            done = time.time()
        with open(sync / f"held-{run}.jsonl", "a") as fh:
            fh.write(json.dumps({"asked": asked, "got": got, "done": done}) + "\\n")

    gate.registry_lock = traced_lock
    result = gate.promote_best(ArtifactStore(root), "lfw", version, [run])
    print("RESULT", run, result.decision, result.reason)
    """
)


def test_two_gates_in_two_processes_on_s3_keep_the_better_model(
    store, s3, s3_bucket, checkpoints, lfw_version, tmp_path
):
    record_run(store, "untrained", checkpoints["untrained"], lfw_version)
    assert gate.promote_best(store, DATASET, lfw_version, ["untrained"]).decision == "promoted"
    for name in ("weak", "strong"):
        record_run(store, name, checkpoints[name], lfw_version)
    procs = {
        run: subprocess.Popen(
            [PYTHON, "-c", GATE, store.root, str(lfw_version), run, str(tmp_path)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run in ("weak", "strong")
    }
    outs = {}
    for run, p in procs.items():
        out, err = p.communicate(timeout=180)
        assert p.returncode == 0 and "RESULT" in out, err[-3000:]
        outs[run] = out
    assert "RESULT strong promoted strong beats champion untrained" in outs["strong"]
    assert "RESULT weak challenger weak does not beat champion strong" in outs["weak"]  # compared again, with strong

    held = {run: [json.loads(x) for x in (tmp_path / f"held-{run}.jsonl").read_text().splitlines()] for run in procs}
    (strong,) = held["strong"]
    first_weak = held["weak"][0]  # saw the champion changed and compared again: a second hold decided
    assert len(held["weak"]) == 2
    assert first_weak["asked"] < strong["done"] <= first_weak["got"]  # asked while strong held it, and waited
    spans = sorted((h["got"], h["done"]) for hs in held.values() for h in hs)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # never two holders at once

    latest: dict[str, reg.ModelRecord] = {}
    for ev in reg.events(store, DATASET):  # raw events, without the readers' one-champion rule
        latest[ev.model_id] = ev
    stages = {m: r.stage for m, r in latest.items()}
    assert stages == {"untrained": "archived", "strong": "champion", "weak": "challenger"}
    assert "does not beat champion strong" in (latest["weak"].reason or "")
    assert not lease_exists(s3, s3_bucket)


def test_a_gate_that_lost_its_lease_writes_nothing(store, s3, s3_bucket, checkpoints, lfw_version, monkeypatch):
    record_run(store, "strong", checkpoints["strong"], lfw_version)
    monkeypatch.setattr(gate, "registry_lock", taken_over(registry_lock, s3))
    with pytest.raises(RegistryLockLost):
        gate.promote_best(store, DATASET, lfw_version, ["strong"])
    assert reg.states(store, DATASET) == {}
    assert lease_body(s3, s3_bucket)[1]["token"] == FOREIGN_TOKEN
