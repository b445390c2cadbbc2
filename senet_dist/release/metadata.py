"""What a released model carries besides its weights: ``model.json`` (:class:`ModelCard`) and its input recipe
(:class:`Preprocess`), so a consumer needs neither this package's training code nor the run's config to use it.

An export directory holds exactly two files: the model (``model.pt`` TorchScript or ``model.onnx``) and
``model.json``. ``model.json`` is written last, so a directory (or object prefix) with a ``model.json`` is complete.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from senet_dist.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_resize

CARD_FILE = "model.json"
FORMATS = {"torchscript": "model.pt", "onnx": "model.onnx"}
CARD_VERSION = 1
INPUT_NAME, OUTPUT_NAME = "images", "logits"


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    return fmt


@dataclass(frozen=True)
class Preprocess:
    """Evaluation-time input recipe, the run's own evaluation view (``senet_dist.evaluate.eval_loader_config``):
    decode to RGB; ``augment="random_resized_crop"``: resize the shorter side to ``resize`` and centre-crop
    ``image_size``; ``pad_crop`` / ``resize``: resize to ``image_size`` x ``image_size``; then scale to [0, 1],
    subtract ``mean`` and divide by ``std`` per channel -> float32 NCHW. The steps the evaluation loader applies, so
    predictions match the reported test metrics."""

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_ratio: float = 0.875
    augment: str = "random_resized_crop"

    @property
    def center_crop(self) -> bool:
        return self.augment == "random_resized_crop"

    @property
    def resize(self) -> int:
        return eval_resize(self.image_size, self.crop_ratio) if self.center_crop else self.image_size

    @classmethod
    def from_checkpoint_meta(cls, meta: dict[str, Any]) -> Preprocess:
        """The recipe of a checkpoint: the loader its run evaluated with."""
        from senet_dist.evaluate import eval_loader_config

        cfg = eval_loader_config(meta, 1, 0)
        return cls(
            image_size=int(cfg.image_size),
            mean=cfg.mean,
            std=cfg.std,
            crop_ratio=float(cfg.eval_crop_ratio),
            augment=str(cfg.augment),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        return cls(
            image_size=int(d["image_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            crop_ratio=float(d.get("crop_ratio", 0.875)),
            augment=str(d.get("augment", "random_resized_crop")),
        )

    def to_dict(self) -> dict[str, Any]:
        size = self.image_size
        steps = (
            f"resize shorter side to {self.resize}, centre crop {size}"
            if self.center_crop
            else f"resize to {size}x{size}"
        )
        return {
            "image_size": size,
            "augment": self.augment,
            "resize_shorter": self.resize if self.center_crop else None,
            "center_crop": size if self.center_crop else None,
            "crop_ratio": self.crop_ratio,
            "mean": list(self.mean),
            "std": list(self.std),
            "input": f"RGB; {steps}; float32 NCHW, (x / 255 - mean) / std",
        }

    def transform(self) -> Any:
        """PIL image or uint8 CHW tensor -> uint8 CHW tensor of ``image_size`` (the evaluation transform)."""
        from senet_dist.data.transforms import build_transform

        return build_transform(self.image_size, train=False, augment=self.augment, crop_ratio=self.crop_ratio)

    def normalizer(self) -> Any:
        from senet_dist.data.transforms import Normalizer

        return Normalizer(self.mean, self.std)

    def loader_config(self, batch_size: int) -> Any:
        """A one-process evaluation ``LoaderConfig`` with this recipe (for real test images from shards)."""
        from senet_dist.data import LoaderConfig

        return LoaderConfig(
            batch_size=batch_size,
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            eval_crop_ratio=self.crop_ratio,
            augment=self.augment,
            num_workers=0,
            pin_memory=False,
        )


@dataclass
class ModelCard:
    """``model.json`` of an export: everything needed to feed the model and to know where it came from."""

    format: str
    file: str
    variant: str
    class_names: list[str]
    preprocess: dict[str, Any]
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    model_id: str | None = None
    run_id: str | None = None
    dataset: dict[str, Any] = field(default_factory=dict)  # name, version, fingerprint
    test_metrics: dict[str, Any] | None = None  # accuracy, macro_f1, ... on dataset_version's test split
    checkpoint: str | None = None
    epoch: int | None = None
    weights: str | None = None  # which of the checkpoint's weights: "model" (trained) or "ema" (moving average)
    exported_at: str | None = None
    verification: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    input_name: str = INPUT_NAME
    output_name: str = OUTPUT_NAME
    card_version: int = CARD_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def preprocessing(self) -> Preprocess:
        return Preprocess.from_dict(self.preprocess)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        d = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})
