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


def _train_view(img: torch.Tensor, size: int, scale: tuple[float, float], hflip: bool) -> torch.Tensor:
    top, left, h, w = RandomResizedCrop.get_params(img, list(scale), list(_RATIO))
    out = _resize(img[:, top : top + h, left : left + w], (size, size))
    if hflip and torch.rand(()) < 0.5:
        out = out.flip(-1)
    return out


def _eval_view(img: torch.Tensor, size: int, crop_ratio: float) -> torch.Tensor:
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
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: bool = True,
    crop_ratio: float = 0.875,
) -> torch.Tensor:
    """Encoded images -> float32 NCHW normalised batch on ``device``."""
    images = decode_images(datas, device)
    views = [
        _train_view(i, image_size, scale, hflip) if train else _eval_view(i, image_size, crop_ratio) for i in images
    ]
    batch = torch.stack(views).clamp_(0, 255)
    return normalizer(batch)
