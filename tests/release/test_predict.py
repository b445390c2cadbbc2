"""Batch prediction on real lfw photos plus broken inputs: every input one row, in order, with the reason when it
failed; the champion / a model id / an export / a checkpoint as the model; S3 inputs and output; Ray Data
actors giving the same result as local prediction; the CLI's counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from senet_dist.artifacts import ArtifactStore
from senet_dist.cli import app
from senet_dist.release import registry
from senet_dist.release.export import export_model
from senet_dist.release.predict import PredictError, decode, predict
from senet_dist.storage import upload_dir
from tests.helpers import write_image
from tests.release.conftest import record_run

BROKEN = {"empty.jpg": "empty", "notes.txt": "not_image", "truncated.png": "corrupt", "garbage.jpg": "not_image"}


@pytest.fixture(scope="module")
def inputs(lfw_source_factory, tmp_path_factory) -> Path:
    """12 real lfw photos (6 per class, named after their class), a grayscale and an RGBA image, broken files."""
    root = tmp_path_factory.mktemp("inputs") / "in put ü"
    src = lfw_source_factory(None)
    for cls in ("face", "non_face"):
        for p in sorted((src / cls).iterdir())[-6:]:  # the last ones: mostly not what the strong model trained on
            (root / "photos").mkdir(parents=True, exist_ok=True)
            shutil.copy(p, root / "photos" / f"{cls}-{p.name}")
    write_image(root / "odd" / "gray.png", (40, 30), seed=1, mode="L")
    write_image(root / "odd" / "wide.jpg", (300, 20), seed=2)
    good = (root / "photos" / sorted(p.name for p in (root / "photos").iterdir())[0]).read_bytes()
    (root / "broken").mkdir()
    (root / "broken" / "empty.jpg").write_bytes(b"")
    (root / "broken" / "notes.txt").write_text("not an image")
    (root / "broken" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "broken" / "garbage.jpg").write_bytes(b"\x00\x01garbage" * 50)
    return root


def _by_name(rows: list[dict]) -> dict[str, dict]:
    return {Path(r["path"]).name: r for r in rows}


def test_every_input_is_one_row_with_its_outcome(checkpoints, inputs, tmp_path):
    out = tmp_path / "preds.parquet"
    missing = str(tmp_path / "missing.jpg")
    summary = predict(str(checkpoints["strong"]), [inputs, missing], out, device="cpu", batch_size=5, top_k=5)

    table = pq.read_table(out)
    rows = table.to_pylist()
    assert table.num_rows == 12 + 2 + len(BROKEN) + 1 == summary.total
    assert [r["path"] for r in rows][-1] == missing  # input order: the directory (sorted), then the file
    assert summary.counts == {"ok": 14, "empty": 1, "not_image": 2, "corrupt": 1, "unreadable": 1}
    named = _by_name(rows)
    for name, status in BROKEN.items():
        assert named[name]["status"] == status and named[name]["error"] and named[name]["label"] is None
    assert named["missing.jpg"]["status"] == "unreadable" and "FileNotFoundError" in named["missing.jpg"]["error"]
    photos = [r for r in rows if "/photos/" in r["path"]]
    correct = sum(Path(r["path"]).name.startswith(r["label"] + "-") for r in photos)
    assert correct >= 10, photos  # a real classifier (the strong checkpoint is 100% on its test split)
    for r in rows:
        if r["status"] == "ok":
            assert r["top_labels"][0] == r["label"] and len(r["top_labels"]) == 2  # top-5 of 2 classes: 2
            assert abs(sum(r["top_probs"]) - 1) < 1e-9 and r["top_probs"] == sorted(r["top_probs"], reverse=True)
            assert r["error"] is None
    meta = json.loads(table.schema.metadata[b"senet.model"])
    assert meta["format"] == "pytorch" and meta["classes"] == ["face", "non_face"] and meta["top_k"] == 2


def test_decode_outcomes():
    assert decode(b"")[1] == "empty"
    assert decode(b"GIF89a-not-really")[1] in ("corrupt", "not_image")
    assert decode(b"hello")[1] == "not_image"


def test_exports_and_checkpoint_agree_and_registry_names_resolve(checkpoints, inputs, lfw_version, tmp_path):
    store = ArtifactStore(tmp_path / "artifacts")
    record_run(store, "strong", checkpoints["strong"], lfw_version)
    registry.register_run(store, "strong", "lfw")
    with pytest.raises(PredictError, match="no champion"):
        predict("champion:lfw", [inputs], None, store=store)
    registry.promote(store, "strong", "best on test")
    ts = export_model("strong", "torchscript", tmp_path / "ts", store=store, data=lfw_version)
    onnx = export_model(checkpoints["strong"], "onnx", tmp_path / "onnx", data=lfw_version)

    results = {
        "checkpoint": predict(str(checkpoints["strong"]), [inputs], None, device="cpu"),
        "champion": predict("champion:lfw", [inputs], None, store=store, device="cpu"),  # served from its export
        "model id": predict("strong", [inputs], None, store=store, device="cpu"),
        "onnx": predict(onnx.uri, [inputs], None, device="cpu"),
    }
    assert results["champion"].model["format"] == "torchscript" and results["champion"].model["location"] == ts.uri
    assert results["champion"].model["model_id"] == "strong"
    base = results["checkpoint"].rows
    for name, res in results.items():
        assert [(r["path"], r["status"], r["label"]) for r in res.rows] == [
            (r["path"], r["status"], r["label"]) for r in base
        ], name
        for a, b in zip(res.rows, base, strict=True):
            if a["status"] == "ok":
                assert abs(a["probability"] - b["probability"]) < 1e-4, name
    with pytest.raises(PredictError, match="not champion:DATASET"):
        predict("no-such-model", [inputs], None, store=store)
    (tmp_path / "empty dir").mkdir()
    with pytest.raises(PredictError, match="no inputs"):
        predict("strong", [tmp_path / "empty dir"], None, store=store)


def test_s3_inputs_and_output(checkpoints, inputs, s3_bucket):
    upload_dir(inputs / "photos", f"s3://{s3_bucket}/photos")
    out = f"s3://{s3_bucket}/preds/photos.parquet"
    summary = predict(str(checkpoints["strong"]), [f"s3://{s3_bucket}/photos"], out, device="cpu")
    assert summary.counts == {"ok": 12}
    local = predict(str(checkpoints["strong"]), [inputs / "photos"], None, device="cpu")
    from senet_dist.storage import read_bytes

    remote = pq.read_table(__import__("io").BytesIO(read_bytes(out))).to_pylist()
    assert [Path(r["path"]).name for r in remote] == [Path(r["path"]).name for r in local.rows]
    assert [r["label"] for r in remote] == [r["label"] for r in local.rows]


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_ray_prediction_equals_local_prediction(ray_up, checkpoints, inputs, lfw_version, tmp_path):
    export = export_model(checkpoints["strong"], "torchscript", tmp_path / "ts", data=lfw_version)
    missing = str(tmp_path / "missing.jpg")
    local = predict(export.uri, [inputs, missing], None, device="cpu", batch_size=4)
    on_ray = predict(
        export.uri, [inputs, missing], tmp_path / "ray.parquet", device="cpu", batch_size=4, use_ray=True, actors=2
    )
    assert on_ray.model["ray_actors"] == 2 and on_ray.counts == local.counts
    assert len(on_ray.rows) == len(local.rows) == pq.read_table(tmp_path / "ray.parquet").num_rows
    for a, b in zip(on_ray.rows, local.rows, strict=True):
        assert (a["path"], a["status"], a["error"], a["label"], a["top_labels"]) == (
            b["path"],
            b["status"],
            b["error"],
            b["label"],
            b["top_labels"],
        )
        if a["status"] == "ok":
            assert max(abs(x - y) for x, y in zip(a["top_probs"], b["top_probs"], strict=True)) < 1e-6


def test_cli_predict_prints_counts(checkpoints, inputs, tmp_path):
    out = tmp_path / "cli.parquet"
    res = CliRunner().invoke(
        app,
        [
            "predict",
            str(inputs / "broken"),
            str(inputs / "photos"),
            "--model",
            str(checkpoints["strong"]),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--top-k",
            "1",
            "--no-progress",
        ],
        env={"COLUMNS": "200"},
    )
    assert res.exit_code == 0, res.output
    assert "16 inputs" in res.output and "outcomes: ok 12, empty 1, not_image 2, corrupt 1" in res.output
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 16 and all(len(r["top_labels"]) == 1 for r in rows if r["status"] == "ok")
    bad = CliRunner().invoke(
        app, ["predict", str(inputs), "--model", "champion:nope", "--out", str(out), "--artifacts", str(tmp_path / "a")]
    )
    assert bad.exit_code == 2 and "has no champion" in bad.output


def test_progress_is_reported_per_batch(checkpoints, inputs):
    seen: list[int] = []
    totals: list[int] = []
    predict(
        str(checkpoints["strong"]),
        [inputs / "photos"],
        None,
        device="cpu",
        batch_size=5,
        progress=seen.append,
        on_total=totals.append,
    )
    assert totals == [12] and seen == [5, 5, 2]
