"""The registry: a person's promote and rollback (with reasons), the one-champion rule for readers, and promotions
racing in two real processes (the lock serialises them; no table state ever has two champions)."""

from __future__ import annotations

import json
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from senet_dist.artifacts import ArtifactStore, utcnow
from senet_dist.cli import app
from senet_dist.release import registry as reg
from senet_dist.release.lock import RegistryLockTimeout, lock_name, registry_lock
from tests.helpers import PYTHON, REPO, wait_until
from tests.release.conftest import record_run


def _raw_latest(store: ArtifactStore, dataset: str) -> dict[str, str]:
    """model id -> stage of its newest event, WITHOUT the readers' one-champion rule: what the writers left."""
    latest: dict[str, reg.ModelRecord] = {}
    for ev in reg.events(store, dataset):
        latest[ev.model_id] = ev
    return {m: r.stage for m, r in latest.items()}


@pytest.fixture
def store_with_runs(checkpoints, lfw_version, tmp_path) -> ArtifactStore:
    """Four completed runs (real checkpoints, recorded test evaluations) registered as challengers of ``lfw``."""
    store = ArtifactStore(tmp_path / "artifacts")
    for run_id, name in (("old", "untrained"), ("prev", "weak"), ("cur", "strong"), ("other", "weak")):
        record_run(store, run_id, checkpoints[name], lfw_version)
        reg.register_run(store, run_id, "lfw")
    return store


def test_register_promote_and_rollback_walk_back_through_history(store_with_runs):
    store = store_with_runs
    assert reg.champion(store, "lfw") is None
    assert {r.stage for r in reg.states(store).values()} == {"challenger"}
    assert reg.get(store, "cur").accuracy is not None and reg.get(store, "cur").eval_dataset_version

    for model in ("old", "prev", "cur"):
        reg.promote(store, model, f"ship {model}")
    now = reg.states(store, "lfw")
    assert now["cur"].stage == "champion" and now["cur"].reason == "ship cur"
    assert now["prev"].stage == "archived" and now["prev"].reason == "replaced by cur: ship cur"
    assert reg.promote(store, "cur", "again").event_id == now["cur"].event_id  # the champion: nothing written

    restored, retired = reg.rollback(store, "lfw", "cur misfires on new photos")
    assert (restored.model_id, retired.model_id) == ("prev", "cur")
    now = reg.states(store, "lfw")
    assert now["prev"].stage == "champion" and now["prev"].reason == "rollback from cur: cur misfires on new photos"
    assert now["cur"].stage == "archived" and now["cur"].action == "rollback"
    # A second rollback goes further back (never "forward" to the model just rolled back).
    assert reg.rollback(store, "lfw", "prev too")[0].model_id == "old"
    with pytest.raises(reg.RegistryError, match="no earlier champion"):
        reg.rollback(store, "lfw", "nothing left")
    assert [m for m, s in _raw_latest(store, "lfw").items() if s == "champion"] == ["old"]
    with pytest.raises(reg.RegistryError, match="needs a reason"):
        reg.promote(store, "cur", "  ")
    with pytest.raises(reg.RegistryError, match="no champion to roll back"):
        reg.rollback(store, "other-dataset", "why")
    with pytest.raises(reg.RegistryError, match="no registered model 'nope'"):
        reg.promote(store, "nope", "why")


def test_readers_see_one_champion_even_when_writers_raced_without_the_lock(store_with_runs):
    """Two champion events written side by side with the same timestamp (as two lock-less writers could): every
    reader resolves them the same way, by (promoted_at, event_id)."""
    store = store_with_runs
    now = utcnow()
    a, b = reg.get(store, "prev"), reg.get(store, "cur")
    rows = [r.event(at=now, stage="champion", promoted_at=now, reason="race") for r in (a, b)]
    store.append("models", rows)
    assert sorted(m for m, s in _raw_latest(store, "lfw").items() if s == "champion") == ["cur", "prev"]
    winner = max(rows, key=lambda r: r["event_id"])["model_id"]
    for _ in range(3):  # stable
        current = reg.states(store, "lfw")
        assert [m for m, r in current.items() if r.stage == "champion"] == [winner]
    loser = ({"prev", "cur"} - {winner}).pop()
    assert current[loser].stage == "archived" and "superseded by" in current[loser].reason
    assert reg.champion(store, "lfw").model_id == winner


PROMOTER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from senet_dist.artifacts import ArtifactStore
    from senet_dist.release import registry as reg
    root, model, go, rounds = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    store = ArtifactStore(root)
    (go.parent / f"ready-{model}").touch()  # imported: waiting for the start signal
    while not go.exists():
        time.sleep(0.005)
    for i in range(rounds):
        reg.promote(store, model, f"round {i} by {model}")
    print("DONE", model)
    """
)


def test_concurrent_promotions_in_two_processes_never_leave_two_champions(store_with_runs, tmp_path):
    store = store_with_runs
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", PROMOTER, store.root, model, str(go), "15"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model in ("prev", "cur")
    ]
    wait_until(lambda: all((tmp_path / f"ready-{m}").exists() for m in ("prev", "cur")), 120, "promoters ready")
    go.touch()
    seen_raw = []
    while any(p.poll() is None for p in procs):  # a third process reads while they write
        seen_raw.append(sum(s == "champion" for s in _raw_latest(store, "lfw").values()))
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and "DONE" in out, err
    assert all(n <= 1 for n in seen_raw), seen_raw
    raw = _raw_latest(store, "lfw")
    assert sorted(raw.values()).count("champion") == 1
    champ = reg.champion(store, "lfw").model_id
    assert raw[champ] == "champion"
    # Every promotion archived exactly the champion it replaced: replaying the log, each champion event of one
    # model is followed (same part) by the archiving of the previous champion.
    evs = [e for e in reg.events(store, "lfw") if e.action == "promote"]
    champions = [e for e in evs if e.stage == "champion"]
    assert len(champions) >= 2  # they did alternate at least once
    previous = None
    for e in champions:
        if previous is not None and previous != e.model_id:
            assert any(a.stage == "archived" and a.model_id == previous and a.created_at == e.created_at for a in evs)
        previous = e.model_id


def test_cli_promote_rollback_and_registry(checkpoints, lfw_version, tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    for run_id in ("r1", "r2"):
        record_run(store, run_id, checkpoints["weak"], lfw_version)
    runner = CliRunner()
    env = {"COLUMNS": "250"}
    art = ["--artifacts", store.root]
    unregistered = runner.invoke(app, ["promote", "r1", "--reason", "first", *art])
    assert unregistered.exit_code == 2 and "no registered model 'r1'" in unregistered.output
    for run_id in ("r1", "r2"):
        res = runner.invoke(app, ["promote", run_id, "--reason", f"pick {run_id}", "--dataset", "lfw", *art], env=env)
        assert res.exit_code == 0 and f"champion of lfw: {run_id}" in res.output, res.output
    back = runner.invoke(app, ["rollback", "lfw", "--reason", "r2 is worse in production", *art], env=env)
    assert back.exit_code == 0 and "champion of lfw: r1 (was r2" in back.output, back.output
    assert runner.invoke(app, ["rollback", "lfw", *art]).exit_code == 2  # --reason is required
    listed = runner.invoke(app, ["registry", *art], env=env)
    assert listed.exit_code == 0 and "champion" in listed.output and "r2 is worse in production" in listed.output
    history = runner.invoke(app, ["registry", "--history", "--dataset", "lfw", *art], env=env)
    assert history.output.count("rollback:") == 2 and history.output.count("promote:") >= 3


# ---- the lock itself --------------------------------------------------------------------------------------------
HOLDER = textwrap.dedent(
    """
    import sys, time
    from senet_dist.artifacts import ArtifactStore
    from senet_dist.release.lock import registry_lock
    with registry_lock(ArtifactStore(sys.argv[1]), sys.argv[2]):
        print("HELD", flush=True)
        time.sleep(600)
    """
)


def test_local_lock_times_out_while_held_and_frees_when_the_holder_is_killed(tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    proc = subprocess.Popen(
        [PYTHON, "-c", HOLDER, store.root, "my data ü"], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "HELD"
        with pytest.raises(RegistryLockTimeout, match=rf"still held after 0.3s \(holder: .*\"pid\": {proc.pid}"):
            with registry_lock(store, "my data ü", timeout=0.3):
                pass
        with registry_lock(store, "another dataset", timeout=0.3):  # one lock per dataset
            pass
    finally:
        proc.send_signal(signal.SIGKILL)  # a crashed holder: the kernel drops its lock, nothing stale remains
        proc.wait(timeout=30)
    t0 = time.monotonic()
    with registry_lock(store, "my data ü", timeout=5):
        assert time.monotonic() - t0 < 1
    assert (Path(store.base) / "_locks" / lock_name("my data ü")).is_file()
    assert lock_name("a/b") != lock_name("a b") and "/" not in lock_name("a/b")


def test_s3_lease_excludes_expires_and_is_taken_over(s3_bucket):
    store = ArtifactStore(f"s3://{s3_bucket}/registry")
    with registry_lock(store, "lfw", timeout=1):
        with pytest.raises(RegistryLockTimeout, match="still held"):
            with registry_lock(store, "lfw", timeout=0.5):
                pass
    with registry_lock(store, "lfw", timeout=0.5):  # released
        pass
    # A holder that died without releasing: its lease expires and one waiter takes it over.
    from senet_dist.release.lock import _S3Lease

    dead = _S3Lease.for_store(store, lock_name("lfw"), lease_s=0.5)
    dead.acquire(timeout=1)
    dead.stop_heartbeat()  # it died: no more renewals
    with pytest.raises(RegistryLockTimeout):
        with registry_lock(store, "lfw", timeout=0.2):
            pass
    time.sleep(0.6)
    with registry_lock(store, "lfw", timeout=2):
        ours = json.loads(dead.client.get_object(Bucket=dead.bucket, Key=dead.key)["Body"].read())
        assert ours["expires"] > time.time()
        dead.release()  # the late holder wakes up: it must not delete the lease it lost
        still = json.loads(dead.client.get_object(Bucket=dead.bucket, Key=dead.key)["Body"].read())
        assert still["token"] == ours["token"]
