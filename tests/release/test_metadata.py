"""The input recipe follows the run's evaluation view (``senet_dist.evaluate.eval_loader_config``)."""

from __future__ import annotations

from PIL import Image

from senet_dist.release.metadata import ModelCard, Preprocess


def test_recipe_per_evaluation_view():
    crop = Preprocess.from_checkpoint_meta({"image_size": 32, "config": {"loader": {"mean": [0.5, 0.5, 0.5]}}})
    assert crop.center_crop and crop.resize == 36 and crop.mean == (0.5, 0.5, 0.5)
    assert crop.to_dict()["resize_shorter"] == 36 and crop.to_dict()["center_crop"] == 32
    square = Preprocess.from_checkpoint_meta({"image_size": 32, "config": {"loader": {"augment": "resize"}}})
    assert not square.center_crop and square.to_dict()["resize_shorter"] is None
    wide = Image.new("RGB", (90, 30), (10, 200, 30))
    assert tuple(square.transform()(wide).shape) == (3, 32, 32) == tuple(crop.transform()(wide).shape)
    assert Preprocess.from_dict(square.to_dict()) == square  # what model.json stores reads back the same


def test_card_round_trips_and_ignores_unknown_keys():
    card = ModelCard(format="onnx", file="model.onnx", variant="v", class_names=["a", "b"], preprocess={})
    again = ModelCard.from_json(card.to_json().replace('"card_version"', '"from_the_future": 1, "card_version"'))
    assert again == card and again.num_classes == 2
