"""What a released model carries: the evaluation view (``senet_dist.data.preprocess.Preprocess``, from the run's
loader section) and ``model.json`` (``ModelCard``), which refuses a model file outside its folder."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from senet_dist.data.preprocess import Preprocess
from senet_dist.release.runtime import ModelCard, ModelFileError


def test_recipe_per_evaluation_view():
    crop = Preprocess.from_loader({"mean": [0.5, 0.5, 0.5]}, 32)
    assert crop.center_crop and crop.resize == 36 and crop.mean == (0.5, 0.5, 0.5)
    assert crop.to_dict()["resize_shorter"] == 36 and crop.to_dict()["center_crop"] == 32
    square = Preprocess.from_loader({"augment": "resize"}, 32)
    assert not square.center_crop and square.to_dict()["resize_shorter"] is None
    wide = Image.new("RGB", (90, 30), (10, 200, 30))
    assert tuple(square.transform()(wide).shape) == (3, 32, 32) == tuple(crop.transform()(wide).shape)
    assert Preprocess.from_dict(square.to_dict()) == square  # what model.json stores reads back the same


def test_card_round_trips_and_ignores_unknown_keys():
    card = ModelCard(format="onnx", file="model.onnx", variant="v", class_names=["a", "b"], preprocess={})
    again = ModelCard.from_json(card.to_json().replace('"card_version"', '"from_the_future": 1, "card_version"'))
    assert again == card and again.num_classes == 2


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "sub/model.pt", "..", "", "a\\b"])
def test_a_card_naming_a_file_outside_its_folder_is_refused(name):
    card = json.loads(ModelCard("onnx", "model.onnx", "v", ["a"], {}).to_json())
    with pytest.raises(ModelFileError, match="not a file name inside the model folder"):
        ModelCard.from_json(json.dumps(card | {"file": name}))


def test_a_card_that_is_not_a_card_is_one_line():
    for text in ("not json", "[]", '{"format": "onnx"}'):
        with pytest.raises(ModelFileError, match="not a senet-dist model card"):
            ModelCard.from_json(text)
