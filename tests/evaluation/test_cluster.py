"""Evaluation as a Ray task (senet_dist.evaluation.cluster) and the pipeline step that uses it: same report as the
driver's, placed like the run's training workers. Real local Ray, a real trained checkpoint, real shards."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from senet_dist.evaluation.cluster import EvalPlacement, eval_placement, evaluate_on_cluster, evaluate_run
from senet_dist.evaluation.metrics import EvalReport, evaluate_checkpoint, sample_predictions
from senet_dist.train.checkpoint import load_model
from senet_dist.train.config import TrainConfig
from tests.raycluster import RayCluster

TIMING = {"latency_ms_per_image", "img_per_s"}  # the only fields that depend on where and when a report is made


def _comparable(report: EvalReport) -> dict:
    d = {k: v for k, v in report.to_dict().items() if k not in TIMING | {"report_json"}}
    full = {k: v for k, v in json.loads(report.to_dict()["report_json"]).items() if k not in TIMING}
    return d | {"report_json": full}


def test_eval_placement_follows_the_training_workers() -> None:
    gpu = eval_placement(TrainConfig(use_gpu=True, resources_per_worker={"CPU": 1, "node_b": 1}))
    assert gpu == EvalPlacement(num_cpus=0, num_gpus=1, resources={"node_b": 1.0})
    assert gpu.ray_options() == {"num_cpus": 0, "num_gpus": 1, "resources": {"node_b": 1.0}}
    pinned_cpu = eval_placement(TrainConfig(resources_per_worker={"CPU": 2, "node_b": 0.5, "unused": 0}))
    assert pinned_cpu == EvalPlacement(num_cpus=1, num_gpus=0, resources={"node_b": 0.5})
    assert eval_placement(TrainConfig()) == EvalPlacement(num_cpus=1, num_gpus=0, resources={})


@pytest.mark.ray
def test_cluster_evaluation_reports_what_the_driver_reports(ray_up, lfw_checkpoint) -> None:
    ckpt, version, info = lfw_checkpoint
    driver = evaluate_checkpoint(ckpt, version, split="test", run_id="run-1")
    driver_samples = sample_predictions(load_model(ckpt), version, split="test")
    remote = evaluate_on_cluster(str(ckpt), version, "test", EvalPlacement(), run_id="run-1")
    assert remote.node_id == ray_up.get_runtime_context().get_node_id()  # it ran as a task of this one-node Ray
    assert remote.report.accuracy == driver.accuracy > 0.7
    assert remote.report.num_samples == driver.num_samples == info.counts["test"]
    assert remote.report.confusion_matrix.tolist() == driver.confusion_matrix.tolist()
    assert remote.report.per_class == driver.per_class and remote.report.weights == driver.weights == "model"
    assert _comparable(remote.report) == _comparable(driver)  # every other field too, report_json included
    assert remote.samples.titles == driver_samples.titles
    np.testing.assert_array_equal(remote.samples.images, driver_samples.images)


@pytest.mark.ray
def test_an_error_in_the_task_comes_back_as_itself(ray_up, lfw_checkpoint, tmp_path) -> None:
    """The flow's retry rule reads the error's type, and the runs table its message: no Ray wrapper in either."""
    from senet_dist.train.checkpoint import CheckpointError

    ckpt, version, _ = lfw_checkpoint
    with pytest.raises(ValueError, match="split must be one of") as bad_split:
        evaluate_on_cluster(ckpt, version, "holdout", EvalPlacement())
    assert "\n" not in str(bad_split.value)
    with pytest.raises(CheckpointError, match="neither a senet-dist checkpoint"):
        evaluate_on_cluster(tmp_path, version, "test", EvalPlacement())


@pytest.mark.ray
def test_the_pipeline_evaluates_on_ray_when_it_is_up_and_here_otherwise(ray_up, lfw_checkpoint, caplog) -> None:
    ckpt, version, _ = lfw_checkpoint
    with caplog.at_level(logging.INFO, logger="senet_dist.evaluation.cluster"):
        on_ray = evaluate_run(ckpt, version, "val", EvalPlacement(), run_id="run-2")
    assert on_ray.node_id is not None and f"on Ray node {on_ray.node_id}" in caplog.text
    ray_up.shutdown()  # the next test's ray_up starts it again
    here = evaluate_run(ckpt, version, "val", EvalPlacement(), run_id="run-2")
    assert here.node_id is None
    assert _comparable(here.report) == _comparable(on_ray.report)
    assert here.report.checkpoint == str(ckpt)  # the checkpoint's own location, as the driver reported it before


@pytest.mark.ray
def test_record_success_writes_the_drivers_report_from_the_cluster(ray_up, lfw_checkpoint, tmp_path) -> None:
    """The flow's record step in a Ray session: the evaluations row and report.json are the driver's report."""
    from senet_dist.artifacts import ArtifactStore, RunRow, utcnow
    from senet_dist.pipeline import PipelineConfig
    from senet_dist.pipeline.runs import config_json
    from senet_dist.pipeline.steps import _record_success
    from senet_dist.storage import join, read_bytes
    from senet_dist.train.results import FitResult
    from tests.helpers import epoch_metrics

    ckpt, version, info = lfw_checkpoint
    cfg = PipelineConfig(artifacts=str(tmp_path / "artifacts"), variants=["se_resnet_tiny"])
    store = ArtifactStore(cfg.artifacts_abs)
    train_cfg = cfg.train_config("se_resnet_tiny")
    run = RunRow(
        run_id="run-3",
        status="running",
        variant="se_resnet_tiny",
        config_json=config_json(train_cfg),
        config_yaml=train_cfg.to_yaml(),
        dataset_version=info.version,
        dataset_fingerprint=info.fingerprint,
        started_at=utcnow(),
    )
    epoch = epoch_metrics(
        epoch=2,
        train_loss=0.5,
        train_acc=0.8,
        val_loss=0.5,
        val_acc=0.8,
        best_val_acc=0.8,
        lr=0.05,
        steps=6,
        world_size=1,
    )
    result = FitResult("run-3", str(tmp_path), [epoch], str(ckpt), str(ckpt), [str(ckpt)], 3.0, 1000)
    summary = _record_success(store, run, result, version, cfg, 3.0)
    driver = evaluate_checkpoint(ckpt, version, split="test", run_id="run-3")
    driver.variant, driver.dataset_version = "se_resnet_tiny", info.version
    row = store.read("evaluations").to_pylist()[0]
    assert row["split"] == "test" and row["accuracy"] == summary.accuracy == driver.accuracy
    assert row["confusion_matrix"] == driver.confusion_matrix.tolist() == summary.confusion_matrix
    saved = json.loads(read_bytes(join(summary.reports, "report.json")))
    assert {k: v for k, v in saved.items() if k not in TIMING | {"report_json"}} == {
        k: v for k, v in _comparable(driver).items() if k != "report_json"
    }
    assert json.loads(saved["report_json"])["checkpoint"] == str(ckpt)
    [completed] = [r for r in store.read("runs").to_pylist() if r["status"] == "completed"]
    assert completed["best_checkpoint_uri"] == str(ckpt) and completed["config_json"] == run.config_json


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_the_task_runs_on_the_node_that_holds_the_workers_resource(lfw_checkpoint) -> None:
    """A head and a node with ``node_b``: a run pinned there (resources_per_worker) is evaluated there too."""
    import ray

    from senet_dist.train import RaySession

    ckpt, version, _ = lfw_checkpoint
    placement = eval_placement(TrainConfig(resources_per_worker={"CPU": 1, "node_b": 1}))
    driver = evaluate_checkpoint(ckpt, version, split="test", run_id="run-4")
    if ray.is_initialized():
        ray.shutdown()  # the test session's local Ray; ray_up starts it again for later tests
    with RayCluster(head_cpus=1) as cluster:
        node_b = cluster.add_node(num_cpus=1, resources={"node_b": 1})
        try:
            with RaySession(cluster.address):
                evaluation = evaluate_on_cluster(ckpt, version, "test", placement, run_id="run-4")
        finally:
            ray.shutdown()  # a joined session leaves the connection open
    assert evaluation.node_id == node_b
    assert _comparable(evaluation.report) == _comparable(driver)
