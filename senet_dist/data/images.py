"""Validate, decode and re-encode one source image.

Runs inside worker processes, so everything here is a pure function of (file, config) and never raises for bad
input: a bad file becomes a ``Rejected`` with a reason, which the sharder quarantines instead of crashing.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from senet_dist import storage

IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp"})
_ACCEPTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP", "WEBP"})
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must be rejected, not silently padded with grey


@dataclass(frozen=True)
class EncodeConfig:
    """How images are stored in the shards (part of the dataset fingerprint)."""

    resize_shorter: int | None = 256  # None keeps the original size
    image_format: str = "jpg"  # "jpg" or "png"
    jpeg_quality: int = 90
    max_pixels: int = 64_000_000  # decompression-bomb guard, checked from the header before decoding

    def __post_init__(self) -> None:
        if self.image_format not in ("jpg", "png"):
            raise ValueError(f"image_format must be 'jpg' or 'png', got {self.image_format!r}")
        if self.resize_shorter is not None and self.resize_shorter < 1:
            raise ValueError("resize_shorter must be a positive int or None")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")


@dataclass(frozen=True)
class Encoded:
    """A successfully processed image: the bytes to store plus manifest facts."""

    data: bytes
    ext: str  # "jpg" | "png"
    sha256: str  # of the *source* file content
    src_bytes: int
    width: int  # source size after EXIF transpose
    height: int
    stored_width: int
    stored_height: int


@dataclass(frozen=True)
class Rejected:
    reason: str
    sha256: str = ""
    src_bytes: int = 0


def open_source(location: str | os.PathLike) -> BinaryIO:
    """Open a source file for reading: plain ``open`` for a local path, a ``pyarrow.fs`` input stream for a URI."""
    loc = str(location)
    if storage.is_local(loc):
        return open(loc.removeprefix("file://"), "rb")
    fs, path = storage.cached_filesystem(loc)
    return fs.open_input_stream(path, compression=None)  # a NativeFile: read(n) and close like a binary file


def read_source(location: str | os.PathLike) -> bytes:
    """The whole content of a source file (local path or URI)."""
    with open_source(location) as f:
        return f.read()


def sha256_file(location: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 of a source file's content (local path or URI), read in chunks."""
    h = hashlib.sha256()
    with open_source(location) as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _to_storable_mode(img: Image.Image) -> Image.Image:
    """Normalise any PIL mode to L (grayscale) or RGB; transparency is composited onto white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        return Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode in ("1", "L"):
        return img.convert("L")
    if img.mode == "P" and "transparency" not in img.info and img.palette is not None:
        return img.convert("RGB")
    if img.mode in ("RGBA", "LA", "PA", "P", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, RGB


def _resized(img: Image.Image, shorter: int | None) -> Image.Image:
    if shorter is None or min(img.size) <= shorter:
        return img  # never upscale
    w, h = img.size
    scale = shorter / min(w, h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)


def _encode(img: Image.Image, cfg: EncodeConfig) -> bytes:
    buf = io.BytesIO()
    if cfg.image_format == "jpg":
        img.save(buf, "JPEG", quality=cfg.jpeg_quality, optimize=False)
    else:
        img.save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def _can_pass_through(img: Image.Image, fmt: str, cfg: EncodeConfig) -> bool:
    """Keep the original bytes when re-encoding would change nothing but add loss."""
    target = "JPEG" if cfg.image_format == "jpg" else "PNG"
    orientation = img.getexif().get(0x0112, 1)
    return fmt == target and img.mode in ("L", "RGB") and orientation == 1 and cfg.resize_shorter is None


def process_image(location: str | os.PathLike, cfg: EncodeConfig) -> Encoded | Rejected:
    """Validate and re-encode the file at ``location`` (a local path or a URI); any problem with the file becomes a
    ``Rejected`` with a human-readable reason.

    A remote read error other than "not found" propagates: an S3 hiccup is not a property of the image, and turning
    it into a rejection would silently drop a good sample from the version."""
    try:
        raw = read_source(location)
    except OSError as exc:
        if not storage.is_local(location) and not isinstance(exc, FileNotFoundError):
            raise
        return Rejected(f"unreadable: {exc.strerror or exc}")
    digest = hashlib.sha256(raw).hexdigest()
    if not raw:
        return Rejected("empty file (0 bytes)", digest, 0)
    try:
        return _decode_and_encode(raw, digest, cfg)
    except UnidentifiedImageError:
        kind = _sniff(raw)
        reason = f"corrupt {kind} header" if kind else "not an image (unidentified format)"
        return Rejected(reason, digest, len(raw))
    except Image.DecompressionBombError as exc:
        return Rejected(f"decompression bomb: {exc}", digest, len(raw))
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError, IndexError, TypeError) as exc:
        return Rejected(f"corrupt or truncated: {type(exc).__name__}: {exc}", digest, len(raw))


def _sniff(raw: bytes) -> str | None:
    """Name the format from magic bytes, to tell a damaged image from a non-image."""
    if raw.startswith(b"\xff\xd8"):
        return "JPEG"
    if raw.startswith(b"\x89PNG"):
        return "PNG"
    if raw.startswith(b"BM"):
        return "BMP"
    if raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        return "WEBP"
    return None


def _decode_and_encode(raw: bytes, digest: str, cfg: EncodeConfig) -> Encoded | Rejected:
    saved = Image.MAX_IMAGE_PIXELS
    try:  # PIL's own guard would pre-empt ours with a vaguer message; ours runs right after reading the header
        Image.MAX_IMAGE_PIXELS = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(raw))
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    fmt = img.format or "?"
    if fmt not in _ACCEPTED_FORMATS:
        return Rejected(f"unsupported image format {fmt}", digest, len(raw))
    w, h = img.size
    if w < 1 or h < 1:
        return Rejected(f"invalid size {w}x{h}", digest, len(raw))
    if w * h > cfg.max_pixels:  # header only: nothing decoded yet
        return Rejected(f"decompression bomb: {w}x{h} exceeds max_pixels={cfg.max_pixels}", digest, len(raw))
    if fmt == "JPEG" and cfg.resize_shorter is not None and min(w, h) > cfg.resize_shorter:
        img.draft(img.mode, (cfg.resize_shorter * w // min(w, h), cfg.resize_shorter * h // min(w, h)))
    img.load()  # full decode: raises for truncated/corrupt data
    if _can_pass_through(img, fmt, cfg):
        return Encoded(raw, cfg.image_format, digest, len(raw), w, h, w, h)
    upright = ImageOps.exif_transpose(img)
    full_w, full_h = (
        (h, w) if upright.size[0] != upright.size[1] and (upright.size[0] < upright.size[1]) != (w < h) else (w, h)
    )
    out = _resized(_to_storable_mode(upright), cfg.resize_shorter)
    return Encoded(_encode(out, cfg), cfg.image_format, digest, len(raw), full_w, full_h, *out.size)
