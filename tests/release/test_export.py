"""Export: TorchScript and ONNX round trips verified on real lfw test images, model.json, the failure path that
writes nothing, export by run id from the tables (recorded in the registry), and an S3 target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from senet_dist.artifacts import ArtifactStore
from senet_dist.cli import app
from senet_dist.data import DatasetInfo
from senet_dist.release import export as export_mod
from senet_dist.release import registry
from senet_dist.release.export import ExportError, VerificationError, export_model, real_test_images
from senet_dist.release.runtime import CARD_FILE, ModelCard, open_model
from senet_dist.storage import list_files
from senet_dist.train.checkpoint import load_model
from tests.release.conftest import record_run


def _test_batch(version: Path, ckpt: Path) -> tuple[torch.Tensor, torch.Tensor]:
    loaded = load_model(ckpt)
    images, _, split = real_test_images(version, loaded.meta.eval_view, 20)
    assert split == "test"
    with torch.inference_mode():
        return images, loaded.model.eval()(images)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_round_trip_on_real_test_images(fmt, checkpoints, lfw_version, tmp_path):
    out = tmp_path / "export"
    result = export_model(checkpoints["strong"], fmt, out, data=lfw_version)
    info = DatasetInfo.load(lfw_version)

    assert result.uri == str(out.resolve()) and sorted(p.name for p in out.iterdir()) == sorted(result.files)
    assert result.files == sorted([CARD_FILE, {"torchscript": "model.pt", "onnx": "model.onnx"}[fmt]])
    card = ModelCard.from_json((out / CARD_FILE).read_text())
    assert card.format == fmt and card.variant == "se_resnet_tiny" and card.class_names == ["face", "non_face"]
    assert card.preprocess["image_size"] == 32 and card.preprocess["mean"] == [0.485, 0.456, 0.406]
    assert card.preprocess["std"] == [0.229, 0.224, 0.225] and card.preprocess["resize_shorter"] == 36
    assert card.dataset == {"name": None, "version": info.version, "fingerprint": info.fingerprint}
    assert card.run_id == "strong" and card.checkpoint == str(checkpoints["strong"])
    assert card.test_metrics["accuracy"] >= 0.9 and card.test_metrics["num_samples"] == 20
    ver = card.verification
    assert ver["passed"] and ver["images"] == 20 and ver["batch_sizes"] == [20, 1] and ver["max_abs_diff"] <= 1e-4
    assert ver["dataset_version"] == info.version and card.versions["torch"] == torch.__version__.split("+")[0]

    # Loaded back on its own (no checkpoint, no training code): the same logits as the PyTorch model.
    images, ref = _test_batch(lfw_version, checkpoints["strong"])
    runner = open_model(out, device="cpu")
    got = runner(images)
    assert torch.equal(got.argmax(1), ref.argmax(1))
    assert (got - ref).abs().max().item() <= 1e-4
    assert runner(images[:3]).shape == (3, 2)  # any batch size


def test_a_failed_verification_writes_nothing_and_says_why(checkpoints, lfw_version, tmp_path, monkeypatch):
    """An exporter that writes the wrong weights (here: an untrained model) is caught before anything is published."""
    wrong = load_model(checkpoints["untrained"]).model
    real = export_mod.EXPORTERS["torchscript"]
    monkeypatch.setitem(export_mod.EXPORTERS, "torchscript", lambda model, ex, path: real(wrong.eval(), ex, path))
    out = tmp_path / "nested" / "export"
    with pytest.raises(VerificationError, match=r"top-1 differs on \d+.*max \|logit difference\|.*nothing was written"):
        export_model(checkpoints["strong"], "torchscript", out, data=lfw_version)
    assert not out.exists()
    assert not (tmp_path / "nested").exists() or not any((tmp_path / "nested").iterdir())  # no staging left over


def test_onnx_beyond_the_tolerance_fails(checkpoints, lfw_version, tmp_path):
    out = tmp_path / "onnx"
    with pytest.raises(VerificationError, match="allowed 1e-12"):
        export_model(checkpoints["strong"], "onnx", out, data=lfw_version, atol=1e-12)  # float32: never this close
    assert not out.exists()


def test_bad_requests_fail_before_any_work(checkpoints, lfw_version, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "x").write_text("mine")
    with pytest.raises(ExportError, match="not an empty directory"):
        export_model(checkpoints["strong"], "torchscript", occupied, data=lfw_version)
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_model(checkpoints["strong"], "tflite", tmp_path / "a", data=lfw_version)
    with pytest.raises(ExportError, match="pass --data"):  # no --data and no tables that know the version
        export_model(checkpoints["strong"], "torchscript", tmp_path / "b", store=ArtifactStore(tmp_path / "none"))
    with pytest.raises(ExportError, match="nor a completed run or registered model"):
        export_model("no-such-run", "torchscript", tmp_path / "c", store=ArtifactStore(tmp_path / "none"))
    assert not any((tmp_path / name).exists() for name in "abc")


def test_export_a_run_by_id_records_the_uri_in_the_registry(checkpoint_copy, lfw_version, tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    info = DatasetInfo.load(lfw_version)
    store.append(
        "datasets",
        [{"version": info.version, "fingerprint": info.fingerprint, "uri": str(lfw_version), "classes": info.classes}],
    )
    accuracy = record_run(store, "run-a", checkpoint_copy("weak"), lfw_version)
    registry.register_run(store, "run-a", "lfw")

    result = export_model("run-a", "torchscript", tmp_path / "exp", store=store)  # data found via the datasets table
    assert result.card.model_id == "run-a" and result.card.dataset["name"] == "lfw"
    assert result.card.test_metrics["accuracy"] == accuracy  # the recorded evaluation, not a new one
    assert registry.get(store, "run-a").export_uris == (result.uri,)
    assert registry.get(store, "run-a").stage == "challenger"  # an export changes no stage


def test_export_to_s3_and_load_back(checkpoints, lfw_version, s3_bucket, tmp_path):
    uri = f"s3://{s3_bucket}/exports/strong"
    result = export_model(checkpoints["strong"], "torchscript", uri, data=lfw_version)
    assert result.uri == uri and list_files(uri) == [CARD_FILE, "model.pt"]
    images, ref = _test_batch(lfw_version, checkpoints["strong"])
    assert torch.equal(open_model(uri, device="cpu", scratch=tmp_path / "dl")(images).argmax(1), ref.argmax(1))
    with pytest.raises(ExportError, match="already holds objects"):
        export_model(checkpoints["strong"], "torchscript", uri, data=lfw_version)


def test_cli_export_and_its_failure(checkpoints, lfw_version, tmp_path, monkeypatch):
    runner = CliRunner()
    out = tmp_path / "cli-export"
    ok = runner.invoke(
        app,
        [
            "export",
            str(checkpoints["strong"]),
            "--format",
            "torchscript",
            "--out",
            str(out),
            "--data",
            str(lfw_version),
        ],
        env={"COLUMNS": "200"},
    )
    assert ok.exit_code == 0, ok.output
    assert "exported" in ok.output and "top-1 agrees" in ok.output
    assert json.loads((out / CARD_FILE).read_text())["verification"]["passed"] is True

    wrong = load_model(checkpoints["untrained"]).model
    real = export_mod.EXPORTERS["torchscript"]
    monkeypatch.setitem(export_mod.EXPORTERS, "torchscript", lambda model, ex, path: real(wrong.eval(), ex, path))
    bad = runner.invoke(
        app, ["export", str(checkpoints["strong"]), "--out", str(tmp_path / "bad"), "--data", str(lfw_version)]
    )
    assert bad.exit_code == 1 and "export verification failed" in bad.output
    assert not (tmp_path / "bad").exists()
    missing = runner.invoke(
        app, ["export", str(tmp_path / "nope"), "--out", str(tmp_path / "x"), "--artifacts", str(tmp_path / "a")]
    )
    assert missing.exit_code == 2 and "error:" in missing.output
