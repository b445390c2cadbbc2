"""End-to-end ``train-senet`` through a temporary Prefect server: tables, artifacts, unchanged rerun, data change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flows.train_senet import train_senet
from senet_dist.artifacts import ArtifactStore
from senet_dist.release import registry
from senet_dist.train import RaySession

pytestmark = [pytest.mark.ray, pytest.mark.prefect, pytest.mark.timeout(900)]


# Tiny but real: LFW images, 2 Ray workers, 1 epoch.
TINY_TRAIN = {"epochs": 1, "num_workers": 2, "batch_size": 8, "image_size": 32, "lr": 0.05, "loader_workers": 0}
TINY_MODELS = {"se_resnet_cifar": {"filters": 16, "blocks": 1}}
VARIANTS = ["se_resnet_tiny", "se_resnet_cifar"]


def _run(src: Path, tmp: Path, train: dict | None = None, **kw):
    return train_senet(
        data=str(src),
        variants=VARIANTS,
        shards=str(tmp / "shards"),
        artifacts=str(tmp / "artifacts"),
        train=train or TINY_TRAIN,
        model_kwargs=TINY_MODELS,
        shard={"max_count": 8},
        return_state=True,
        **kw,
    )


def _read_artifacts(keys: list[str]) -> dict[str, object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    return {a.key: a for a in found}


def test_flow_trains_stores_skips_and_retrains_on_change(prefect_harness, source_copy, tmp_path, monkeypatch):
    sessions: list[RaySession] = []  # every session entered, and the ids of those that started or joined Ray
    connected: set[int] = set()
    enter, connect = RaySession.__enter__, RaySession.connect
    monkeypatch.setattr(RaySession, "__enter__", lambda self: sessions.append(self) or enter(self))
    monkeypatch.setattr(RaySession, "connect", lambda self: connected.add(id(self)) or connect(self))
    state = _run(source_copy, tmp_path)
    assert state.is_completed(), state.message
    assert len(sessions) == 1 and connected == {id(sessions[0])}  # one Ray session for shard, train and evaluate
    summaries = state.result()
    assert sorted(s.variant for s in summaries) == sorted(VARIANTS)

    store = ArtifactStore(str(tmp_path / "artifacts"))
    runs = store.runs_latest().to_pylist()
    assert sorted(r["variant"] for r in runs if r["status"] == "completed") == sorted(VARIANTS)
    epochs = store.read("epochs")
    assert epochs.num_rows == len(VARIANTS) * TINY_TRAIN["epochs"]
    evals = store.read("evaluations").to_pylist()
    n_test = sum(sum(row) for row in evals[0]["confusion_matrix"])
    assert n_test > 0 and all(sum(map(sum, e["confusion_matrix"])) == n_test for e in evals)
    ckpts = store.read("checkpoints").to_pylist()
    assert ckpts and all(Path(c["uri"]).exists() for c in ckpts)
    assert store.read("datasets").num_rows == 1
    for s in summaries:
        assert (Path(s.reports) / "confusion_matrix.png").stat().st_size > 0
    arts = _read_artifacts(["senet-leaderboard", "eval-se-resnet-tiny", "eval-se-resnet-cifar", "senet-promotion"])
    assert set(arts) == {"senet-leaderboard", "eval-se-resnet-tiny", "eval-se-resnet-cifar", "senet-promotion"}
    # The promote step: the better new model is the champion of this data (named after its folder), exported.
    champ = registry.champion(store, source_copy.name)
    top = max((s.accuracy, s.macro_f1) for s in summaries)
    assert champ is not None and champ.model_id in {s.run_id for s in summaries if (s.accuracy, s.macro_f1) == top}
    assert (Path(champ.export_uris[0]) / "model.json").is_file() and "first champion" in arts["senet-promotion"].data

    # Same data, same variants: nothing retrains.
    again = _run(source_copy, tmp_path)
    assert again.is_completed() and again.name == "Unchanged"
    assert len(sessions) == 2 and id(sessions[1]) not in connected  # nothing to train: no Ray started for it
    assert store.read("runs").num_rows == len(runs) * 2  # running + completed events, no new ones

    # One changed image: a new dataset version, both variants retrained on it, the old version kept.
    victim = sorted((source_copy / "face").iterdir())[0]
    Image.fromarray(np.full((25, 25), 7, dtype=np.uint8)).save(victim)
    # One Ray worker per variant: the cluster holds both worker groups, so by default they train side by side.
    changed = _run(source_copy, tmp_path, train={**TINY_TRAIN, "num_workers": 1})
    assert changed.is_completed() and changed.name != "Unchanged", changed.message
    versions = sorted(p.name for p in (tmp_path / "shards").iterdir() if p.is_dir() and p.name.startswith("v"))
    assert len(versions) == 2
    latest = {r["run_id"]: r for r in store.runs_latest().to_pylist()}
    new_fp = store.read("datasets").to_pylist()[-1]["fingerprint"]
    retrained = [r for r in latest.values() if r["dataset_fingerprint"] == new_fp and r["status"] == "completed"]
    assert sorted(r["variant"] for r in retrained) == sorted(VARIANTS)
    assert max(r["started_at"] for r in retrained) < min(r["ended_at"] for r in retrained), "not concurrent"
    # The old champion was measured on the new version's test split before the new models were compared with it.
    new_version = max(store.read("datasets").to_pylist(), key=lambda r: r["created_at"])["version"]
    evals = store.read("evaluations").to_pylist()
    assert [e["dataset_version"] for e in evals if e["run_id"] == champ.run_id].count(new_version) == 1
    states = registry.states(store, source_copy.name)
    assert [m.stage for m in states.values()].count("champion") == 1 and len(states) == 4


def test_bad_parameters_fail_before_any_work(prefect_harness, source_copy, tmp_path):
    state = train_senet(
        data=str(source_copy),
        variants=["se_resnet_9000"],
        shards=str(tmp_path / "s"),
        artifacts=str(tmp_path / "a"),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(ValueError, match="se_resnet_9000.*valid names"):
        state.result()
    assert not (tmp_path / "s").exists() and not (tmp_path / "a").exists()

    state = train_senet(
        data=str(tmp_path / "missing"),
        variants=["se_resnet_tiny"],
        shards=str(tmp_path / "s"),
        artifacts=str(tmp_path / "a"),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(FileNotFoundError, match="missing"):
        state.result()

    state = train_senet(
        data=str(source_copy),
        variants=["se_resnet_tiny"],
        train={"epochs": -1},
        shards=str(tmp_path / "s"),
        artifacts=str(tmp_path / "a"),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(ValueError, match="epochs"):
        state.result()


def test_a_worker_group_the_machine_cannot_hold_fails_once_without_retry(prefect_harness, source_copy, tmp_path):
    # No ray_address: the flow's Ray is local (its own, or the test Ray already up), a Ray that cannot grow.
    state = train_senet(
        data=str(source_copy),
        variants=["se_resnet_tiny"],
        shards=str(tmp_path / "shards"),
        artifacts=str(tmp_path / "artifacts"),
        train={**TINY_TRAIN, "num_workers": 64, "batch_size": 128},
        shard={"max_count": 8},
        return_state=True,
    )
    assert state.is_failed() and "se_resnet_tiny" in state.message
    runs = ArtifactStore(str(tmp_path / "artifacts")).read("runs").to_pylist()
    assert [r["status"] for r in runs] == ["running", "failed"], runs  # one attempt: a ConfigError is not retried
    assert "64 worker(s) need 64 CPU" in runs[-1]["error"]


@pytest.mark.slow
def test_a_failing_variant_does_not_lose_the_others(prefect_harness, source_copy, tmp_path):
    """se_resnet_cifar fails inside its Ray workers (bad kwargs, after Prefect's retry); se_resnet_tiny still lands."""
    state = train_senet(
        data=str(source_copy),
        variants=VARIANTS,
        shards=str(tmp_path / "shards"),
        artifacts=str(tmp_path / "artifacts"),
        model_kwargs={"se_resnet_cifar": {"filters": 0}},
        train={**TINY_TRAIN, "max_failures": 0},
        shard={"max_count": 8},
        return_state=True,
    )
    assert state.is_failed() and "se_resnet_cifar" in state.message
    store = ArtifactStore(str(tmp_path / "artifacts"))
    latest = {r["variant"]: r for r in store.runs_latest().to_pylist()}
    assert latest["se_resnet_tiny"]["status"] == "completed"
    assert latest["se_resnet_cifar"]["status"] == "failed" and "filters" in latest["se_resnet_cifar"]["error"]
    assert [e["run_id"] for e in store.read("evaluations").to_pylist()] == [latest["se_resnet_tiny"]["run_id"]]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["eval-se-resnet-tiny"]))
        )
    assert any(latest["se_resnet_tiny"]["run_id"] in str(a.data) for a in found)  # published despite the failure
