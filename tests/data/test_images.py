"""Bad inputs are quarantined with a reason; valid-but-unusual images are normalised and kept."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from senet_dist.data import DatasetInfo, EncodeConfig, ShardConfig, process_image, shard_dataset
from senet_dist.data.images import Encoded, Rejected
from tests.helpers import make_tree, write_image


def _png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _jpeg_bytes(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    arr = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(buf, "JPEG")
    return buf.getvalue()


def _write_bad_files(cls_dir: Path) -> dict[str, str]:
    """file name -> expected reason fragment."""
    cls_dir.mkdir(parents=True, exist_ok=True)
    jpeg = _jpeg_bytes()
    files = {
        "truncated.jpg": (jpeg[: len(jpeg) * 2 // 3], "truncated"),
        "corrupt.jpg": (jpeg.replace(b"\xff\xc0", b"\xff\xc0\x00\x01", 1), "corrupt JPEG header"),
        "empty.jpg": (b"", "empty"),
        "text.jpg": (b"this is not an image\n", "not an image"),
        "bomb.png": (_png_bomb(), "decompression bomb"),
    }
    for name, (data, _) in files.items():
        (cls_dir / name).write_bytes(data)
    return {name: reason for name, (_, reason) in files.items()}


def test_bad_files_are_quarantined_with_reasons(tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", {"a": 10, "b": 10})
    expected = _write_bad_files(src / "b")
    res = shard_dataset(src, tmp_path / "out", ShardConfig(progress=False, num_procs=1))
    assert res.num_rejected == 5 and sum(res.counts.values()) == 20
    rejected = {Path(r["path"]).name: r for r in pq.read_table(Path(res.version_dir) / "rejected.parquet").to_pylist()}
    assert set(rejected) == set(expected)
    for name, fragment in expected.items():
        assert fragment in rejected[name]["reason"], (name, rejected[name]["reason"])
        assert rejected[name]["class_name"] == "b"
    manifest_paths = {r["path"] for r in DatasetInfo.load(res.version_dir).manifest().to_pylist()}
    assert not {f"b/{n}" for n in expected} & manifest_paths


def test_bomb_is_rejected_from_the_header(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(_png_bomb())
    res = process_image(path, EncodeConfig(max_pixels=1_000_000))
    assert isinstance(res, Rejected) and "20000x20000" in res.reason


def _unusual(tmp: Path) -> dict[str, Path]:
    tmp.mkdir(parents=True, exist_ok=True)
    out = {}
    Image.new("CMYK", (40, 30), (10, 200, 30, 5)).save(out.setdefault("cmyk", tmp / "cmyk.jpg"))
    arr16 = np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50
    Image.fromarray(arr16).save(out.setdefault("png16", tmp / "png16.png"))
    write_image(out.setdefault("gray", tmp / "gray.jpg"), mode="L")
    pal = Image.new("P", (40, 30), 1)
    pal.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal.save(out.setdefault("palette", tmp / "palette.png"), transparency=0)
    Image.new("RGBA", (40, 30), (0, 0, 255, 128)).save(out.setdefault("rgba", tmp / "rgba.png"))
    write_image(out.setdefault("webp", tmp / "x.webp"))
    write_image(out.setdefault("bmp", tmp / "x.bmp"))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    Image.new("RGB", (40, 30), (0, 255, 0)).save(out.setdefault("exif", tmp / "exif.jpg"), exif=exif)
    return out


def test_unusual_images_are_normalised(tmp_path: Path) -> None:
    files = _unusual(tmp_path / "u")
    for name, path in files.items():
        res = process_image(path, EncodeConfig(resize_shorter=None))
        assert isinstance(res, Encoded), (name, res)
        img = Image.open(io.BytesIO(res.data))
        assert img.format == "JPEG" and img.mode in ("RGB", "L"), name
    exif = process_image(files["exif"], EncodeConfig(resize_shorter=None))
    assert (exif.stored_width, exif.stored_height) == (30, 40) and (exif.width, exif.height) == (30, 40)
    png16 = Image.open(io.BytesIO(process_image(files["png16"], EncodeConfig(image_format="png")).data))
    assert png16.mode == "L" and np.asarray(png16).max() > 200  # scaled from 16 bit, not clipped to white
    pal = Image.open(io.BytesIO(process_image(files["palette"], EncodeConfig(image_format="png")).data))
    assert pal.mode == "RGB" and pal.getpixel((0, 0)) == (255, 0, 0)


def test_resize_never_upscales_and_keeps_aspect(tmp_path: Path) -> None:
    big = write_image(tmp_path / "big.jpg", (500, 375))
    small = write_image(tmp_path / "small.jpg", (50, 40))
    res = process_image(big, EncodeConfig(resize_shorter=256))
    assert (res.stored_width, res.stored_height) == (341, 256) and (res.width, res.height) == (500, 375)
    res = process_image(small, EncodeConfig(resize_shorter=256))
    assert (res.stored_width, res.stored_height) == (50, 40)
    assert process_image(small, EncodeConfig(resize_shorter=None)).data == small.read_bytes()  # passthrough
