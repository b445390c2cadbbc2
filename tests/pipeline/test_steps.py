"""Pipeline decisions that need no training: what to retrain, config validation, source resolution."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from senet_dist.artifacts import ArtifactStore
from senet_dist.pipeline import (
    PipelineConfig,
    config_json,
    new_run_id,
    resolve_source,
    run_id_for,
    variants_to_train,
)


def _record(
    store: ArtifactStore, cfg: PipelineConfig, variant: str, fingerprint: str, status: str, flow_run_id: str = "f0"
) -> None:
    now = datetime.now(timezone.utc)
    store.append(
        "runs",
        [
            {
                "run_id": f"{variant}-{status}-{fingerprint}",
                "variant": variant,
                "status": status,
                "flow_run_id": flow_run_id,
                "config_json": config_json(cfg.train_config(variant)),
                "dataset_version": "v0001-x",
                "dataset_fingerprint": fingerprint,
                "started_at": now,
                "updated_at": now,
            }
        ],
    )


def test_variants_to_train_skips_only_identical_completed_runs(tmp_path):
    store = ArtifactStore(str(tmp_path / "a"))
    cfg = PipelineConfig(variants=["se_resnet_tiny", "se_resnet18"], train={"epochs": 2})
    assert variants_to_train(store, "fp1", cfg) == ["se_resnet_tiny", "se_resnet18"]
    _record(store, cfg, "se_resnet_tiny", "fp1", "completed")
    _record(store, cfg, "se_resnet18", "fp1", "failed")
    assert variants_to_train(store, "fp1", cfg) == ["se_resnet18"]  # failed runs are retried
    assert variants_to_train(store, "fp2", cfg) == ["se_resnet_tiny", "se_resnet18"]  # new data
    changed = PipelineConfig(variants=cfg.variants, train={"epochs": 3})
    assert variants_to_train(store, "fp1", changed) == ["se_resnet_tiny", "se_resnet18"]  # new config
    kwargs = PipelineConfig(variants=cfg.variants, train={"epochs": 2}, model_kwargs={"se_resnet_tiny": {"width": 8}})
    assert "se_resnet_tiny" in variants_to_train(store, "fp1", kwargs)
    forced = PipelineConfig(variants=cfg.variants, train={"epochs": 2}, force=True)
    assert variants_to_train(store, "fp1", forced) == cfg.variants


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"variants": ["se_resnet_9000"]}, "valid names"),
        ({"variants": []}, "at least one"),
        ({"variants": ["se_resnet_tiny", "se_resnet_tiny"]}, "duplicates"),
        ({"model_kwargs": {"se_resnet_500": {}}}, "se_resnet_500.*valid names"),
        ({"shard": {"max_cnt": 3}}, "unknown key 'shard.max_cnt'"),
        ({"train": {"epochs": 0}}, "epochs"),
        ({"train": {"batch_size": 1, "num_workers": 2}}, "batch_size"),
        ({"data": "/nonexistent/images"}, "neither an ImageFolder"),
        ({"data": "lfw-subset:many"}, "NAME:IMAGES_PER_CLASS"),
    ],
)
def test_bad_pipeline_config_fails_fast(kwargs, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        PipelineConfig.parse({"variants": ["se_resnet_tiny"], **kwargs}).validate()


def test_builtin_dataset_spec_with_limit(tmp_path):
    src = resolve_source("lfw-subset:5", tmp_path)
    assert sorted(p.name for p in src.iterdir() if p.is_dir()) == ["face", "non_face"]
    assert all(len(list((src / c).iterdir())) == 5 for c in ("face", "non_face"))
    assert resolve_source(str(src), tmp_path) == src.resolve()


def test_run_id_is_stable_per_flow_run_so_retries_resume():
    flow_run = "0f4c2b9e-1111-2222-3333-444455556666"
    assert new_run_id("se_resnet18", flow_run) == new_run_id("se_resnet18", flow_run) == "se_resnet18-0f4c2b9e"
    assert new_run_id("se_resnet18") != new_run_id("se_resnet18")


def test_interrupted_run_is_resumed_only_when_its_flow_run_is_over(tmp_path):
    store = ArtifactStore(str(tmp_path / "a"))
    cfg = PipelineConfig(variants=["se_resnet_tiny"], train={"epochs": 2})
    fresh = run_id_for(store, "se_resnet_tiny", "fp1", cfg, "abcdef12-0000")
    assert fresh == "se_resnet_tiny-abcdef12"
    _record(store, cfg, "se_resnet_tiny", "fp1", "running", flow_run_id="dead-flow")  # its driver was killed
    over = {"dead-flow"}.__contains__
    assert (
        run_id_for(store, "se_resnet_tiny", "fp1", cfg, "99999999-0000", finished=over) == "se_resnet_tiny-running-fp1"
    )
    # Another flow run that may still be live (or is unknown to this Prefect): never share its run.
    assert run_id_for(store, "se_resnet_tiny", "fp1", cfg, "99999999-0000") == "se_resnet_tiny-99999999"
    # A retry inside the same flow run keeps its own id.
    assert run_id_for(store, "se_resnet_tiny", "fp1", cfg, "dead-flow") == "se_resnet_tiny-running-fp1"
    assert run_id_for(store, "se_resnet_tiny", "fp2", cfg, "99999999-0000", finished=over) == "se_resnet_tiny-99999999"
    other = PipelineConfig(variants=["se_resnet_tiny"], train={"epochs": 3})
    assert (
        run_id_for(store, "se_resnet_tiny", "fp1", other, "99999999-0000", finished=over) == "se_resnet_tiny-99999999"
    )


def test_uri_shards_root_and_uri_data(s3_bucket, lfw_source_factory, tmp_path, monkeypatch):
    """A URI shards root works for the data-change check and sharding (no local hash cache there); a built-in
    dataset is then materialised in the local cache; ``data`` may be an ImageFolder URI (checked through pyarrow)."""
    from senet_dist.pipeline.config import locate
    from senet_dist.pipeline.steps import data_changed, prepare_dataset
    from senet_dist.storage import list_files, upload_dir

    monkeypatch.setenv("SENET_CACHE", str(tmp_path / "cache"))
    shards = f"s3://{s3_bucket}/shards"
    tiny = {"max_count": 8, "progress": False, "num_procs": 1, "resize_shorter": None, "image_format": "png"}
    cfg = PipelineConfig(
        data=str(lfw_source_factory(6)), shards=shards, artifacts=str(tmp_path / "artifacts"), shard=tiny
    )
    changed, fingerprint = data_changed(cfg)
    assert changed
    store = ArtifactStore(cfg.artifacts_abs)
    result = prepare_dataset(cfg, store)
    assert result.version_dir.startswith(f"{shards}/v0001-") and result.fingerprint == fingerprint
    assert data_changed(cfg) == (False, fingerprint)
    assert store.read("datasets").to_pylist()[0]["uri"] == result.version_dir
    assert ".hash-cache.json" not in list_files(shards)
    _, builtin = locate("lfw-subset:3", shards)
    assert str(builtin).startswith(str(tmp_path / "cache" / "sources"))

    upload_dir(lfw_source_factory(6), f"s3://{s3_bucket}/photos")
    assert PipelineConfig(data=f"s3://{s3_bucket}/photos").validate().registry_dataset == "photos"
    with pytest.raises(FileNotFoundError, match="neither an ImageFolder"):
        PipelineConfig(data=f"s3://{s3_bucket}/nope").validate()
