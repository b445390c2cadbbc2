"""CPU decode + augmentation (torchvision transforms v2) and batch collation for the loader."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


AUGMENTS = ("random_resized_crop", "pad_crop", "resize")
"""Training views: ``random_resized_crop`` (Inception-style crop of ``scale`` of the area, resized; evaluation
resizes the shorter side to ``size / crop_ratio`` and centre-crops), ``pad_crop`` (resize to ``size`` x ``size``,
zero-pad ``pad`` pixels, random ``size`` crop: CIFAR style) and ``resize`` (resize to ``size`` x ``size``, no crop).
``pad_crop`` and ``resize`` evaluate on the plain ``size`` x ``size`` resize (aspect ratio not kept, like the
reference write-ups' ``Resize((224, 224))``); every mode adds a horizontal flip in training when ``hflip``."""


def eval_resize(image_size: int, crop_ratio: float = 0.875) -> int:
    return int(image_size / crop_ratio)


def build_transform(
    image_size: int,
    train: bool,
    *,
    augment: str = "random_resized_crop",
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
    crop_ratio: float = 0.875,
    pad: int = 4,
) -> v2.Compose:
    """uint8 CHW image (tensor or PIL) -> uint8 CHW tensor of image_size x image_size (normalised per batch)."""
    if augment not in AUGMENTS:
        raise ValueError(f"augment must be one of {AUGMENTS}, got {augment!r}")
    square = v2.Resize((image_size, image_size), antialias=True)  # a no-op for images already that size
    ops: list[Any]
    if augment == "random_resized_crop":
        ops = (
            [v2.RandomResizedCrop(image_size, scale=scale, antialias=True)]
            if train
            else [v2.Resize(eval_resize(image_size, crop_ratio), antialias=True), v2.CenterCrop(image_size)]
        )
    elif augment == "pad_crop" and train:
        ops = [square, v2.RandomCrop(image_size, padding=pad, fill=0, padding_mode="constant")]
    else:
        ops = [square]
    if train and hflip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose([v2.ToImage(), *ops])


class ImageDecoder:
    """Encoded bytes -> 3-channel uint8 tensor -> transform.

    Default: torchvision.io (libjpeg-turbo/libpng straight into a tensor; then tensor resizes) measured ~1.7x faster
    per core than PIL decode + PIL resize on 341x256 JPEGs. ``pil_draft`` instead lets libjpeg decode big stored
    originals at a reduced scale (useful with ``resize_shorter=None`` shards).
    """

    def __init__(self, transform: Callable[[Any], torch.Tensor], pil_draft: int | None = None) -> None:
        self.transform, self.pil_draft = transform, pil_draft

    def __call__(self, data: bytes, sample: dict[str, Any] | None = None) -> torch.Tensor:
        if self.pil_draft is None:
            img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
            return self.transform(img)
        pil = Image.open(io.BytesIO(data))
        if pil.format == "JPEG":
            pil.draft("RGB", (self.pil_draft, self.pil_draft))
        return self.transform(pil.convert("RGB") if pil.mode != "RGB" else pil)  # grayscale -> 3 channels


def raw_bytes(data: bytes, sample: dict[str, Any] | None = None) -> torch.Tensor:
    """GPU path: keep the encoded bytes; decoding happens on the device."""
    return torch.frombuffer(bytearray(data), dtype=torch.uint8)


class Normalizer:
    """uint8 NCHW -> float32 normalised, vectorised over the batch."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        mean, std = self.mean.to(batch.device), self.std.to(batch.device)
        return batch.float().sub_(mean).div_(std)  # in place: one float buffer per batch


def uint8_collate(items: list[torch.Tensor], labels: list[int], keys: list[str]) -> tuple:
    """CPU path batch: uint8 NCHW crosses the worker->trainer pipe (4x less than float32); the Loader normalises."""
    return torch.stack(items), torch.tensor(labels, dtype=torch.int64), keys


def bytes_collate(items: list[torch.Tensor], labels: list[int], keys: list[str]) -> tuple:
    """GPU path batch: (list of encoded uint8 tensors, labels, keys); the Loader decodes it on the device."""
    return items, torch.tensor(labels, dtype=torch.int64), keys
