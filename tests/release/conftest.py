"""Real lfw-subset shards, and real tiny checkpoints trained in this process (seconds, no Ray) with the same layout
and meta.json the Ray Train worker writes, registered in an artifacts store the way the pipeline records a run."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from senet_dist.artifacts import ArtifactStore, utcnow
from senet_dist.data import DatasetInfo, LoaderConfig, make_loader
from senet_dist.evaluation.metrics import evaluate_checkpoint
from senet_dist.models import create_model
from senet_dist.train import TrainConfig
from senet_dist.train.checkpoint import CheckpointMeta, save_checkpoint


@pytest.fixture(scope="session")
def lfw_version(lfw_shards_factory) -> Path:
    """lfw-subset, all 200 real 25x25 images (face / non_face), sharded: 20 test images."""
    return lfw_shards_factory(None)


def train_checkpoint(version_dir: Path, dest: Path, *, epochs: int, seed: int = 0, run_name: str = "run") -> Path:
    """Train se_resnet_tiny for ``epochs`` on the version's train split in this process; save a checkpoint dir.

    ``epochs=0`` keeps the random initialisation (a real model near chance)."""
    info = DatasetInfo.load(version_dir)
    cfg = TrainConfig().with_overrides({"model": "se_resnet_tiny", "image_size": 32, "seed": seed, "epochs": 1})
    torch.manual_seed(seed)
    model = create_model("se_resnet_tiny", num_classes=info.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    lcfg = LoaderConfig(batch_size=16, image_size=32, num_workers=0, crop_scale=(0.5, 1.0), seed=seed)
    for epoch in range(epochs):
        model.train()
        for images, labels in make_loader(version_dir, "train", lcfg, epoch=epoch):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            opt.step()
    model.eval()
    meta = CheckpointMeta(
        run_name=run_name,
        epoch=epochs,
        model="se_resnet_tiny",
        num_classes=info.num_classes,
        classes=list(info.classes),
        dataset_fingerprint=info.fingerprint,
        dataset_version=info.version,
        image_size=32,
        num_params=sum(p.numel() for p in model.parameters()),
        config=cfg.to_dict(),
    )
    return save_checkpoint(dest, {"model": model.state_dict()}, meta)


def record_run(store: ArtifactStore, run_id: str, checkpoint: Path, version_dir: Path) -> float:
    """Record a completed run and its test evaluation as the pipeline does; returns its test accuracy."""
    info = DatasetInfo.load(version_dir)
    now = utcnow()
    store.append(
        "runs",
        [
            {
                "run_id": run_id,
                "variant": "se_resnet_tiny",
                "dataset_version": info.version,
                "dataset_fingerprint": info.fingerprint,
                "status": "completed",
                "started_at": now,
                "ended_at": now,
                "best_checkpoint_uri": str(checkpoint),
                "updated_at": now,
            }
        ],
    )
    report = evaluate_checkpoint(checkpoint, version_dir, run_id=run_id, device="cpu")
    store.append("evaluations", [{**report.to_dict(), "split": "test"}])
    return report.accuracy


@pytest.fixture(scope="session")
def checkpoints(lfw_version: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three real se_resnet_tiny checkpoints on lfw: ``strong`` (6 epochs), ``weak`` (1 epoch, other seed) and
    ``untrained``. Shared read-only: copy one to modify it."""
    root = tmp_path_factory.mktemp("ckpts")
    return {
        "strong": train_checkpoint(lfw_version, root / "strong", epochs=6, seed=0, run_name="strong"),
        "weak": train_checkpoint(lfw_version, root / "weak", epochs=1, seed=1, run_name="weak"),
        "untrained": train_checkpoint(lfw_version, root / "untrained", epochs=0, seed=2, run_name="untrained"),
    }


@pytest.fixture
def checkpoint_copy(checkpoints, tmp_path) -> Callable[[str], Path]:
    def copy(name: str) -> Path:
        dst = tmp_path / f"ckpt-{name}"
        shutil.copytree(checkpoints[name], dst)
        return dst

    return copy
