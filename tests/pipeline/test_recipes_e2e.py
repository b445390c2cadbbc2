"""An 80/20 recipe end to end: its shard section (val 0.2, test 0, seed 428) -> train -> evaluate -> tables, on real
lfw-subset images with a tiny model on 2 local Ray CPU workers (the recipe's DenseNet at 224 px is a GPU job)."""

from __future__ import annotations

from pathlib import Path

import pytest

from senet_dist.artifacts import ArtifactStore
from senet_dist.data import DatasetInfo
from senet_dist.pipeline import PipelineConfig, prepare_dataset, train_variant
from senet_dist.pipeline.recipes import recipe_params

pytestmark = pytest.mark.ray
TINY = {
    "epochs": 2,
    "batch_size": 16,
    "num_workers": 2,
    "image_size": 32,
    "use_gpu": False,
    "optimizer.lr": 0.05,
    "optimizer.name": "sgd",
    "loader.num_workers": 1,
    "ema.enabled": True,
}


@pytest.mark.timeout(300)
def test_80_20_recipe_trains_selects_and_reports_on_val(ray_up, lfw_source_factory, tmp_path: Path) -> None:
    params = recipe_params("densenet121_se_head_80_20")
    train = {**params["train"], "model": "se_resnet_tiny"}
    cfg = PipelineConfig.parse(
        {
            **params,
            "variants": ["se_resnet_tiny"],
            "data": str(lfw_source_factory(None)),
            "shards": str(tmp_path / "shards"),
            "artifacts": str(tmp_path / "artifacts"),
            "train": train,
            "shard": {**params["shard"], "resize_shorter": None, "image_format": "png", "progress": False},
        }
    )
    cfg = cfg.with_overrides({f"train.{k}": v for k, v in TINY.items()})
    assert cfg.shard.fractions == (0.8, 0.2, 0.0) and cfg.shard.seed == 428
    assert cfg.train.loader.augment == "resize" and cfg.train.optimizer.name == "sgd"
    store = ArtifactStore(cfg.artifacts_abs)
    version = prepare_dataset(cfg, store).version_dir
    assert DatasetInfo.load(version).counts == {"train": 160, "val": 40, "test": 0}
    summary = train_variant("se_resnet_tiny", version, cfg, store, run_id="eighty-twenty")
    assert summary.epochs == 2 and summary.accuracy > 0.7
    (evaluation,) = store.read("evaluations").to_pylist()
    assert evaluation["weights"] in ("model", "ema")
    assert sum(map(sum, evaluation["confusion_matrix"])) == 40  # the 20 %: the val split, as there is no test
    assert evaluation["split"] == "val"
    epochs = store.read("epochs").to_pylist()
    assert [e["epoch"] for e in sorted(epochs, key=lambda e: e["epoch"])] == [1, 2]
    assert all(e["ema_val_acc"] is not None for e in epochs)
