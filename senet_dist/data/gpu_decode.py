"""Decode + augment a batch of encoded images on a device (nvjpeg on CUDA), for hosts with few CPU cores per GPU.

The DataLoader ships only encoded bytes; ``decode_batch`` does decode_jpeg(list, device) then crop/resize/flip and
normalisation as tensor ops. Runs with ``device="cpu"`` too, which is how it is tested without a GPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image, decode_jpeg
from torchvision.transforms import RandomResizedCrop

from .transforms import Normalizer, eval_resize

_RATIO = (3.0 / 4.0, 4.0 / 3.0)


def _is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() > 2 and int(data[0]) == 0xFF and int(data[1]) == 0xD8


def decode_images(datas: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor]:
    """Encoded uint8 tensors -> list of 3xHxW uint8 tensors on ``device`` (non-JPEGs decode on the CPU)."""
    jpeg_idx = [i for i, d in enumerate(datas) if _is_jpeg(d)]
    out: list[torch.Tensor | None] = [None] * len(datas)
    if jpeg_idx:
        decoded = decode_jpeg([datas[i] for i in jpeg_idx], mode=ImageReadMode.RGB, device=device)
        for i, img in zip(jpeg_idx, decoded, strict=True):
            out[i] = img
    for i, d in enumerate(datas):
        if out[i] is None:
            out[i] = decode_image(d, mode=ImageReadMode.RGB).to(device)
    return out  # type: ignore[return-value]


def _resize(img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    x = img.unsqueeze(0).float()
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0]


def _square(img: torch.Tensor, size: int) -> torch.Tensor:
    return img.float() if tuple(img.shape[-2:]) == (size, size) else _resize(img, (size, size))


def _pad_crop(img: torch.Tensor, size: int, pad: int) -> torch.Tensor:
    """Zero-pad ``pad`` pixels per side, then a random ``size`` x ``size`` crop (torchvision's RandomCrop)."""
    padded = F.pad(_square(img, size), (pad, pad, pad, pad))
    top, left = (int(v) for v in torch.randint(0, 2 * pad + 1, (2,)))
    return padded[:, top : top + size, left : left + size]


def _train_view(
    img: torch.Tensor, size: int, augment: str, scale: tuple[float, float], hflip: bool, pad: int
) -> torch.Tensor:
    if augment == "random_resized_crop":
        top, left, h, w = RandomResizedCrop.get_params(img, list(scale), list(_RATIO))
        out = _resize(img[:, top : top + h, left : left + w], (size, size))
    elif augment == "pad_crop":
        out = _pad_crop(img, size, pad)
    elif augment == "resize":
        out = _square(img, size)
    else:
        raise ValueError(f"gpu_decode: unsupported augment {augment!r}")
    if hflip and torch.rand(()) < 0.5:
        out = out.flip(-1)
    return out


def _eval_view(img: torch.Tensor, size: int, augment: str, crop_ratio: float) -> torch.Tensor:
    if augment != "random_resized_crop":  # pad_crop and resize evaluate on the plain square resize
        return _square(img, size)
    h, w = img.shape[-2:]
    short = eval_resize(size, crop_ratio)
    new_h, new_w = (short, max(short, round(w * short / h))) if h <= w else (max(short, round(h * short / w)), short)
    out = _resize(img, (new_h, new_w))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return out[:, top : top + size, left : left + size]


def decode_batch(
    datas: list[torch.Tensor],
    *,
    train: bool,
    image_size: int,
    device: torch.device | str,
    normalizer: Normalizer,
    augment: str = "random_resized_crop",
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
    crop_ratio: float = 0.875,
    pad: int = 4,
) -> torch.Tensor:
    """Encoded images -> float32 NCHW normalised batch on ``device`` (the same views as the CPU transforms)."""
    images = decode_images(datas, device)
    views = [
        _train_view(i, image_size, augment, scale, hflip, pad)
        if train
        else _eval_view(i, image_size, augment, crop_ratio)
        for i in images
    ]
    batch = torch.stack(views).clamp_(0, 255)
    return normalizer(batch)
