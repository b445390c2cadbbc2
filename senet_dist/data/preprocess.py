"""How an image becomes a model input at evaluation time (:class:`Preprocess`), in one place for every reader of it.

A checkpoint's metadata, an export's ``model.json``, evaluation and batch prediction all carry this value, so a
prediction prepares its images exactly as the reported test metrics did: decode to RGB; ``random_resized_crop``
trains -> evaluate on a resize of the shorter side to ``image_size / crop_ratio`` and a centre crop of
``image_size``; ``pad_crop`` / ``resize`` -> a plain ``image_size`` x ``image_size`` resize; then scale to [0, 1],
subtract ``mean`` and divide by ``std`` per channel -> float32 NCHW.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .transforms import IMAGENET_MEAN, IMAGENET_STD, Normalizer, build_transform, eval_resize

if TYPE_CHECKING:
    from torchvision.transforms import v2

    from .loader import LoaderConfig, LoaderOptions

EVAL_VIEW = ("augment", "eval_crop_ratio", "mean", "std", "decoder")  # the loader options that shape an eval batch


@dataclass(frozen=True)
class Preprocess:
    """The evaluation view of a run: what its validation and test batches were made with."""

    image_size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    crop_ratio: float = 0.875
    augment: str = "random_resized_crop"
    decoder: str = "torchvision"  # the CPU decoder of the loader (the same pixels; speed differs)

    @property
    def center_crop(self) -> bool:
        return self.augment == "random_resized_crop"

    @property
    def resize(self) -> int:
        return eval_resize(self.image_size, self.crop_ratio) if self.center_crop else self.image_size

    @classmethod
    def from_loader(cls, options: LoaderOptions | dict[str, Any], image_size: int) -> Preprocess:
        """The view of a loader section (a ``LoaderOptions`` or the dict a saved config holds; missing keys take
        the loader's defaults, as older checkpoints need)."""
        from .loader import LoaderOptions

        opts = options if isinstance(options, LoaderOptions) else LoaderOptions.parse(_view_of(options))
        return cls(
            image_size=int(image_size),
            mean=tuple(opts.mean),  # type: ignore[arg-type]
            std=tuple(opts.std),  # type: ignore[arg-type]
            crop_ratio=float(opts.eval_crop_ratio),
            augment=str(opts.augment),
            decoder=str(opts.decoder),
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """Read what :meth:`to_dict` wrote (``model.json``'s ``preprocess``)."""
        return cls(
            image_size=int(d["image_size"]),
            mean=tuple(d["mean"]),
            std=tuple(d["std"]),
            crop_ratio=float(d.get("crop_ratio", 0.875)),
            augment=str(d.get("augment", "random_resized_crop")),
            decoder=str(d.get("decoder", "torchvision")),
        )

    def to_dict(self) -> dict[str, Any]:
        """The recipe as data, with the derived sizes and one line a consumer without this package can follow."""
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
            "decoder": self.decoder,
            "input": f"RGB; {steps}; float32 NCHW, (x / 255 - mean) / std",
        }

    def transform(self) -> v2.Compose:
        """PIL image or uint8 CHW tensor -> uint8 CHW tensor of ``image_size`` (the evaluation transform)."""
        return build_transform(self.image_size, train=False, augment=self.augment, crop_ratio=self.crop_ratio)

    def normalizer(self) -> Normalizer:
        return Normalizer(self.mean, self.std)

    def loader_config(self, batch_size: int, num_workers: int = 0) -> LoaderConfig:
        """An evaluation ``LoaderConfig`` with this view, read on the CPU."""
        from .loader import LoaderConfig

        return LoaderConfig(
            batch_size=batch_size,
            image_size=self.image_size,
            mean=self.mean,
            std=self.std,
            eval_crop_ratio=self.crop_ratio,
            augment=self.augment,
            decoder=self.decoder,
            num_workers=num_workers,
            pin_memory=False,
        )


def _view_of(loader_section: dict[str, Any]) -> dict[str, Any]:
    return {k: loader_section[k] for k in EVAL_VIEW if k in loader_section}


__all__ = ["EVAL_VIEW", "Preprocess"]
