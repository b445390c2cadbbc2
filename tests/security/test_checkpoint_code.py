"""A checkpoint is a file a stranger may have written: one whose pickle would run code is refused with one line by
every entry point that loads one (predict, evaluate, export, the promotion gate, resume), and the code never runs.

The hostile files are real: ``torch.save`` of a state whose pickle calls ``os.system`` to create a marker file (what
an attacker's checkpoint does), a TorchScript archive saved as ``checkpoint.pt``, and a torn file; each sits next to
a plausible ``meta.json`` copied from a real checkpoint."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from senet_dist.artifacts import ArtifactStore, utcnow
from senet_dist.cli import app
from senet_dist.train.checkpoint import (
    CHECKPOINT_FILE,
    META_FILE,
    CheckpointError,
    load_checkpoint,
    model_from_checkpoint,
    read_meta,
    sha256_file,
)
from tests.helpers import write_image

runner = CliRunner()


class RunsCode:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hostile_checkpoint(real: Path, dest: Path, kind: str, *, forge_digest: bool = True) -> Path:
    """A copy of the real checkpoint ``real`` (its meta.json) whose checkpoint.pt is hostile (``kind``). The attacker
    writes both files, so by default meta.json's digest is forged to match (the unpickling is what must refuse)."""
    shutil.copytree(real, dest)
    pt = dest / CHECKPOINT_FILE
    if kind == "pickle":
        state = torch.load(real / CHECKPOINT_FILE, weights_only=True)
        torch.save({**state, "model": RunsCode(dest.parent / "PWNED")}, pt)
    elif kind == "torchscript":
        with pytest.warns(FutureWarning):
            torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(pt))
    elif kind == "torn":
        pt.write_bytes(pt.read_bytes()[: pt.stat().st_size // 2])
    if forge_digest:
        meta = read_meta(dest).model_copy(update={"weights_sha256": sha256_file(pt)})
        (dest / META_FILE).write_text(meta.to_json())
    return dest


EXPECTED = {"pickle": "needs code to load", "torchscript": "TorchScript archive", "torn": "torn or corrupt"}


@pytest.fixture(params=sorted(EXPECTED))
def hostile(request, lfw_checkpoint, tmp_path) -> tuple[Path, str]:
    """``(checkpoint dir, the one-line refusal expected)`` for each kind of hostile checkpoint.pt."""
    ckpt, _, _ = lfw_checkpoint
    return hostile_checkpoint(ckpt, tmp_path / "ckpt", request.param), EXPECTED[request.param]


def no_code_ran(ckpt: Path) -> None:
    assert not (ckpt.parent / "PWNED").exists(), "the checkpoint's pickle ran code"


def test_the_library_refuses(hostile):
    ckpt, refusal = hostile
    with pytest.raises(CheckpointError, match=refusal):
        load_checkpoint(ckpt)
    with pytest.raises(CheckpointError, match=refusal):
        model_from_checkpoint(ckpt)
    no_code_ran(ckpt)


def test_a_replaced_weights_file_is_refused_by_its_digest(lfw_checkpoint, tmp_path):
    """Without a forged meta.json, a replaced checkpoint.pt does not even reach the unpickler."""
    ckpt, _, _ = lfw_checkpoint
    replaced = hostile_checkpoint(ckpt, tmp_path / "ckpt", "pickle", forge_digest=False)
    with pytest.raises(CheckpointError, match="does not match the sha256"):
        load_checkpoint(replaced)
    no_code_ran(replaced)


def test_our_own_checkpoints_load_as_data(lfw_checkpoint):
    ckpt, _, info = lfw_checkpoint
    state = load_checkpoint(ckpt)
    assert set(state) >= {"model", "optimizer", "scheduler"}
    loaded = model_from_checkpoint(ckpt)
    assert loaded.weights == "model" and loaded.model(torch.zeros(1, 3, 32, 32)).shape == (1, info.num_classes)


def one_error_line(result, needle: str) -> None:
    """Exit 2 and exactly one line, ``error: ...`` naming the refusal; no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], result.output


def test_predict_refuses(hostile, tmp_path):
    ckpt, refusal = hostile
    image = write_image(tmp_path / "photo.png")
    result = runner.invoke(app, ["predict", str(image), "--model", str(ckpt), "--out", str(tmp_path / "p.parquet")])
    one_error_line(result, refusal)
    no_code_ran(ckpt)
    assert not (tmp_path / "p.parquet").exists()


def test_evaluate_refuses(hostile, lfw_checkpoint):
    ckpt, refusal = hostile
    result = runner.invoke(app, ["evaluate", str(ckpt), "--data", str(lfw_checkpoint[1])])
    one_error_line(result, refusal)
    no_code_ran(ckpt)


def test_export_refuses(hostile, lfw_checkpoint, tmp_path):
    ckpt, refusal = hostile
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", str(ckpt), "--out", str(out), "--data", str(lfw_checkpoint[1])])
    one_error_line(result, refusal)
    no_code_ran(ckpt)
    assert not out.exists()


def test_the_gate_refuses_a_hostile_champion(lfw_checkpoint, tmp_path):
    """The champion's checkpoint in the bucket was replaced: re-evaluating it is refused, nothing is decided."""
    from senet_dist.release import registry as reg
    from senet_dist.release.gate import promote_best
    from tests.release.conftest import record_run

    ckpt, version, info = lfw_checkpoint
    store = ArtifactStore(tmp_path / "artifacts")
    evil = hostile_checkpoint(ckpt, tmp_path / "champion-ckpt", "pickle")
    reg.append_events(
        store,
        [
            reg.ModelRecord(
                model_id="old-champion",
                dataset="lfw",
                stage=reg.CHAMPION,
                variant="se_resnet_tiny",
                run_id="old-champion",
                dataset_version="v0000-older",
                checkpoint_uri=str(evil),
                promoted_at=utcnow(),
            ).event(action="gate", reason="seeded")
        ],
    )
    record_run(store, "new-run", ckpt, version)
    with pytest.raises(CheckpointError, match="needs code to load"):
        promote_best(store, "lfw", version, ["new-run"])
    no_code_ran(evil)
    assert reg.champion(store, "lfw").model_id == "old-champion"  # nothing was decided on a refused model
    assert "new-run" not in reg.states(store, "lfw")


@pytest.mark.ray
def test_resume_refuses_a_hostile_checkpoint(lfw_checkpoint, tmp_path, ray_up, tiny_config):
    """A run's checkpoint replaced in storage: the resumed run fails at once, permanently, with one line."""
    from senet_dist.errors import TrainingError
    from senet_dist.train import fit

    version = lfw_checkpoint[1]
    cfg = tiny_config(epochs=1, num_workers=1, max_failures=0, max_steps_per_epoch=2)
    first = fit("se_resnet_tiny", version, cfg, storage_path=tmp_path / "runs", run_name="resume-hostile")
    assert first.last_checkpoint is not None
    for pt in (tmp_path / "runs" / "resume-hostile").glob(f"checkpoint_*/{CHECKPOINT_FILE}"):
        hostile_checkpoint(pt.parent, tmp_path / "scratch", "pickle")
        for name in (CHECKPOINT_FILE, META_FILE):
            shutil.copy(tmp_path / "scratch" / name, pt.parent / name)
        shutil.rmtree(tmp_path / "scratch")
    again = cfg.with_overrides({"epochs": 2})
    with pytest.raises(TrainingError, match="needs code to load") as err:
        fit("se_resnet_tiny", version, again, storage_path=tmp_path / "runs", run_name="resume-hostile")
    assert not err.value.retryable
    assert "\n" not in str(err.value)
    assert not (tmp_path / "PWNED").exists()
