"""Exported models are files a stranger could have written: a ``model.json`` whose ``file`` leaves its folder, and an
exported file replaced in the bucket (with or without a forged digest in its ``model.json``), are refused with one
line by ``senet-dist predict``; a registered model's file is checked against the digest the registry recorded when
it was exported, which a forged ``model.json`` cannot change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from senet_dist.artifacts import ArtifactStore
from senet_dist.cli import app
from senet_dist.release import registry
from senet_dist.release.export import export_model
from senet_dist.release.runtime import CARD_FILE, sha256_bytes
from tests.helpers import write_image
from tests.release.conftest import record_run

runner = CliRunner()


def one_error_line(result, needle: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output


@pytest.fixture(scope="module")
def exports(lfw_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """Two real TorchScript exports of the lfw checkpoint (verified on its test images)."""
    ckpt, version, _ = lfw_checkpoint
    root = tmp_path_factory.mktemp("exports")
    return {name: Path(export_model(ckpt, "torchscript", root / name, data=version).uri) for name in ("a", "b")}


def predict(model: str, tmp_path: Path):
    image = write_image(tmp_path / "in" / "photo.png")
    out, artifacts = str(tmp_path / "p.parquet"), str(tmp_path / "artifacts")
    return runner.invoke(app, ["predict", str(image), "--model", model, "--out", out, "--artifacts", artifacts])


@pytest.mark.parametrize("name", ["../a/model.pt", "/etc/passwd", "../../../../etc/hostname"])
def test_a_model_json_pointing_outside_its_folder_is_refused(exports, tmp_path, name):
    forged = tmp_path / "forged"
    shutil.copytree(exports["b"], forged)
    card = json.loads((forged / CARD_FILE).read_text())
    (forged / CARD_FILE).write_text(json.dumps(card | {"file": name}))
    one_error_line(predict(str(forged), tmp_path), "is not a file name inside the model folder")
    assert not (tmp_path / "p.parquet").exists()


def test_a_replaced_export_is_refused_by_its_card_and_by_the_registry(exports, lfw_checkpoint, tmp_path):
    ckpt, version, _ = lfw_checkpoint
    store = ArtifactStore(tmp_path / "artifacts")
    record_run(store, "champ", ckpt, version)
    registry.register_run(store, "champ", "lfw")
    registry.promote(store, "champ", "the only one")
    exported = Path(export_model("champ", "torchscript", tmp_path / "export", store=store, data=version).uri)
    rec = registry.champion(store, "lfw")
    assert rec is not None and rec.digest_of(str(exported)) == sha256_bytes((exported / "model.pt").read_bytes())
    ok = predict("champion:lfw", tmp_path)
    assert ok.exit_code == 0, ok.output

    other = (exports["a"] / "model.pt").read_bytes() + b"\0"  # another program in its place (a trailing byte differs)
    (exported / "model.pt").write_bytes(other)
    one_error_line(predict("champion:lfw", tmp_path), "does not match the sha256 in its model.json")
    one_error_line(predict(str(exported), tmp_path), "does not match the sha256 in its model.json")  # unregistered too

    card = json.loads((exported / CARD_FILE).read_text())  # the attacker rewrites the card's digest as well
    (exported / CARD_FILE).write_text(json.dumps(card | {"sha256": sha256_bytes(other)}))
    one_error_line(predict("champion:lfw", tmp_path), "does not match the sha256 the model registry recorded")
