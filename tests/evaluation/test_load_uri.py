"""Checkpoints on object storage (a real S3 endpoint: moto on loopback): ``locate_checkpoint`` picks a run's best
checkpoint from its meta files alone, and ``senet-dist evaluate`` scores the URIs the tables record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from senet_dist.cli import app
from senet_dist.evaluation.metrics import evaluate_checkpoint
from senet_dist.storage import upload_dir
from senet_dist.train.checkpoint import (
    CHECKPOINT_FILE,
    CheckpointError,
    load_checkpoint,
    locate_checkpoint,
    read_meta,
    save_checkpoint,
)
from tests.helpers import epoch_metrics

runner = CliRunner()


@pytest.fixture
def run_dir(lfw_checkpoint, tmp_path) -> Path:
    """A run directory as Ray Train leaves it: the trained checkpoint (val_acc 0.9, epoch 1), a later but worse one
    (constant logits, val_acc 0.2, epoch 2) and an unfinished one (weights, no meta.json)."""
    ckpt = lfw_checkpoint[0]
    run = tmp_path / "run-1"
    state, meta = load_checkpoint(ckpt), read_meta(ckpt)
    good = meta.model_copy(update={"epoch": 1, "metrics": epoch_metrics(epoch=1, val_acc=0.9)})
    save_checkpoint(run / "checkpoint_000000", state, good)
    zeroed = {k: torch.zeros_like(v) if v.is_floating_point() else v for k, v in state["model"].items()}
    worse = meta.model_copy(update={"epoch": 2, "metrics": epoch_metrics(epoch=2, val_acc=0.2)})
    save_checkpoint(run / "checkpoint_000001", {**state, "model": zeroed}, worse)
    (run / "checkpoint_000002").mkdir()
    shutil.copy(ckpt / CHECKPOINT_FILE, run / "checkpoint_000002" / CHECKPOINT_FILE)
    return run


def test_a_run_dir_on_s3_resolves_to_the_checkpoint_chosen_locally(run_dir, s3_bucket) -> None:
    uri = f"s3://{s3_bucket}/prefix/ray/run-1"
    upload_dir(run_dir, uri)
    assert Path(locate_checkpoint(run_dir)).name == "checkpoint_000000"
    assert locate_checkpoint(uri) == f"{uri}/checkpoint_000000"  # best val_acc, not the latest epoch
    assert locate_checkpoint(f"{uri}/checkpoint_000001") == f"{uri}/checkpoint_000001"  # a checkpoint as named
    assert locate_checkpoint(f"{uri}/") == f"{uri}/checkpoint_000000"
    for empty in (f"s3://{s3_bucket}/prefix/nothing", f"{uri}/checkpoint_000002"):
        with pytest.raises(CheckpointError, match="neither a senet-dist checkpoint nor a run directory"):
            locate_checkpoint(empty)


def test_cli_evaluates_checkpoint_and_run_dir_uris_as_the_local_copy(run_dir, lfw_checkpoint, s3_bucket, tmp_path):
    _, version, _ = lfw_checkpoint
    uri = f"s3://{s3_bucket}/prefix/ray/run-1"
    upload_dir(run_dir, uri)
    local = evaluate_checkpoint(run_dir / "checkpoint_000000", version, split="test", device="cpu")
    assert local.accuracy > 0.7
    for n, target in enumerate((f"{uri}/checkpoint_000000", uri)):
        out = tmp_path / f"out{n}"
        result = runner.invoke(app, ["evaluate", target, "--data", str(version), "--out", str(out)])
        assert result.exit_code == 0, result.output
        saved = json.loads((out / "report.json").read_text())
        assert saved["accuracy"] == local.accuracy and saved["confusion_matrix"] == local.confusion_matrix.tolist()
        assert json.loads(saved["report_json"])["checkpoint"] == f"{uri}/checkpoint_000000"
        assert (out / "samples.png").stat().st_size > 1000


def test_cli_uri_without_a_checkpoint_is_one_line_without_its_query_string(
    lfw_checkpoint, s3_bucket, s3_server
) -> None:
    _, version, _ = lfw_checkpoint
    host = s3_server.endpoint.split("://", 1)[1]
    query_uri = f"s3://{s3_bucket}/runs/none?endpoint_override={host}&scheme=http&region=us-east-1"
    outputs = []
    for target in (f"s3://{s3_bucket}/runs/none", query_uri, f"s3://{s3_bucket}-missing/runs/none"):
        result = runner.invoke(app, ["evaluate", target, "--data", str(version)])
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
        assert "endpoint_override" not in result.output and "Traceback" not in result.output
        outputs.append(result.output)
    assert f"s3://{s3_bucket}/runs/none is neither a senet-dist checkpoint nor a run directory" in outputs[0]
    assert "neither a senet-dist checkpoint" in outputs[1]  # the same answer, its query string left out
