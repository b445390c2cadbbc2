"""Augmentation modes (random_resized_crop, pad_crop, resize) on the CPU transforms, the GPU-decode path and the
loader: output sizes, what pad_crop may produce, that resize never crops, and the two paths agreeing."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from senet_dist.data import LoaderConfig, ShardConfig, make_loader, shard_dataset
from senet_dist.data.gpu_decode import decode_batch
from senet_dist.data.transforms import Normalizer, build_transform
from tests.helpers import make_tree

IDENTITY = Normalizer((0.0,) * 3, (1 / 255,) * 3)  # float pixels 0..255 back out of the GPU path


def _ramp(h: int = 32, w: int = 32) -> torch.Tensor:
    """A uint8 image whose every pixel is distinct within each channel, and never 0 (so padding is visible)."""
    v = 1 + torch.arange(h * w).reshape(h, w) % 250
    return torch.stack([v, v.flip(0), v.flip(1)]).to(torch.uint8)


def test_pad_crop_is_a_shifted_window_of_the_zero_padded_image() -> None:
    torch.manual_seed(0)
    img = _ramp()
    padded = F.pad(img, (4, 4, 4, 4))
    t = build_transform(32, True, augment="pad_crop", pad=4, hflip=False)
    offsets = set()
    for _ in range(40):
        out = t(img)
        assert out.shape == (3, 32, 32) and out.dtype == torch.uint8
        hits = [(y, x) for y in range(9) for x in range(9) if torch.equal(out, padded[:, y : y + 32, x : x + 32])]
        assert len(hits) == 1  # exactly one crop position explains it
        offsets.add(hits[0])
    assert len(offsets) > 10  # the position is random, not always the centre
    assert (4, 4) in offsets or len(offsets) > 20


def test_pad_crop_resizes_other_sizes_first_and_evaluates_on_the_plain_resize() -> None:
    img = _ramp(40, 30)
    assert build_transform(32, True, augment="pad_crop")(img).shape == (3, 32, 32)
    ev = build_transform(32, False, augment="pad_crop")(img)
    assert torch.equal(ev, build_transform(32, False, augment="resize")(img))  # deterministic, no crop


def test_resize_keeps_the_whole_image_in_train_and_eval() -> None:
    img = torch.zeros(3, 60, 30, dtype=torch.uint8)
    img[:, :2, :] = 255  # a bright band at the very top: a crop would lose it
    for train in (True, False):
        out = build_transform(32, train, augment="resize", hflip=True)(img)
        assert out.shape == (3, 32, 32)
        assert out[:, 0, :].float().mean() > 100  # the top row survived: squashed, not cropped


def test_random_resized_crop_eval_is_a_centre_crop() -> None:
    img = torch.zeros(3, 32, 64, dtype=torch.uint8)
    img[:, :, :8] = 255  # the left edge: a centre crop of a wide image drops it
    out = build_transform(32, False, augment="random_resized_crop")(img)
    assert out.shape == (3, 32, 32) and out[:, :, :2].float().max() == 0


def test_unknown_augment_is_rejected() -> None:
    with pytest.raises(ValueError, match="augment must be one of"):
        build_transform(32, True, augment="crop")


def _png(img: torch.Tensor) -> torch.Tensor:
    buf = io.BytesIO()
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


@pytest.mark.parametrize("augment", ["random_resized_crop", "pad_crop", "resize"])
def test_gpu_decode_path_gives_the_same_views_on_cpu(augment: str) -> None:
    img = _ramp()
    datas = [_png(img)] * 4
    train = decode_batch(datas, train=True, image_size=32, device="cpu", normalizer=IDENTITY, augment=augment, pad=4)
    assert train.shape == (4, 3, 32, 32)
    ev = decode_batch(datas, train=False, image_size=32, device="cpu", normalizer=IDENTITY, augment=augment)
    cpu = build_transform(32, False, augment=augment)(img).float()
    assert torch.allclose(ev[0], cpu, atol=1.5)  # same view; resampling may round differently
    if augment == "pad_crop":  # each train view is a window of the zero-padded image (maybe flipped)
        padded = F.pad(img, (4, 4, 4, 4)).float()
        for view in train:
            assert any(
                torch.equal(v, padded[:, y : y + 32, x : x + 32])
                for v in (view, view.flip(-1))
                for y in range(9)
                for x in range(9)
            )


@pytest.mark.parametrize("augment", ["pad_crop", "resize"])
def test_loader_batches_have_the_training_size(tmp_path: Path, augment: str) -> None:
    src = make_tree(tmp_path / "src", {"a": 6, "b": 6}, size=(40, 30), ext=".png")
    cfg = ShardConfig(val_frac=0.2, test_frac=0.0, progress=False, num_procs=1, resize_shorter=None)
    version = shard_dataset(src, tmp_path / "out", cfg).version_dir
    for gpu_decode in (False, True):
        lcfg = LoaderConfig(
            batch_size=4, image_size=32, num_workers=0, augment=augment, gpu_decode=gpu_decode, decode_device="cpu"
        )
        for split, train in (("train", True), ("val", False)):
            x, y = next(iter(make_loader(version, split, lcfg, train=train)))
            assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
