"""``ShardConfig``: what shapes a dataset version. Light on purpose (no torch, no webdataset): the CLI reads its
defaults to build ``senet-dist shard``'s options, so they live here only."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from senet_dist.schema import Section

from .images import EncodeConfig
from .split import SplitConfig


class ShardConfig(Section):
    """Everything that shapes a dataset version; all but num_procs/progress/hash_cache enter the fingerprint.

    ``val_frac``/``test_frac`` are accepted as input shorthands and folded into ``fractions`` (train = the rest).
    """

    TITLE: ClassVar[str] = "shard config"
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)  # train/val/test, stratified per class
    seed: int = 0
    split_mode: Literal["auto", "random", "predefined"] = "auto"  # auto: honour train/ + test/ (+ val/) folders
    resize_shorter: int | None = Field(256, ge=1)  # store images with this shorter side (None: original size)
    image_format: Literal["jpg", "png"] = "jpg"  # jpg is GPU-decodable
    jpeg_quality: int = Field(90, ge=1, le=100)
    max_pixels: int = Field(64_000_000, ge=1)  # larger images are quarantined as decompression bombs
    max_count: int = Field(10_000, ge=1)  # samples per shard
    max_bytes: int = Field(256 * 1024**2, ge=1)  # bytes per shard
    num_procs: int | None = None  # encoding processes; None -> min(cpu_count, 8); <=1 encodes in-process
    progress: bool = True
    hash_cache: bool = True  # reuse content hashes keyed by (size, mtime) in OUT/.hash-cache.json

    @model_validator(mode="before")
    @classmethod
    def _fold_fractions(cls, data: Any) -> Any:
        if not isinstance(data, dict) or not {"val_frac", "test_frac"} & set(data):
            return data
        data = dict(data)
        val, test = data.pop("val_frac", None), data.pop("test_frac", None)
        _, default_val, default_test = data.get("fractions", cls.model_fields["fractions"].default)
        val = default_val if val is None else float(val)
        test = default_test if test is None else float(test)
        return {**data, "fractions": (1.0 - val - test, val, test)}

    @field_validator("fractions")
    @classmethod
    def _valid_split(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        fractions = (round(v[0], 10), round(v[1], 10), round(v[2], 10))
        SplitConfig(fractions, 0)  # raises DatasetError (a ValueError) naming the problem
        return fractions

    def split_config(self) -> SplitConfig:
        return SplitConfig(self.fractions, self.seed)

    def encode_config(self) -> EncodeConfig:
        return EncodeConfig(self.resize_shorter, self.image_format, self.jpeg_quality, self.max_pixels)

    def fingerprint_config(self) -> dict[str, Any]:
        return {
            "split": {"fractions": list(self.fractions), "seed": self.seed, "split_mode": self.split_mode},
            "encode": asdict(self.encode_config()),
            "layout": {"max_count": self.max_count, "max_bytes": self.max_bytes},
        }

    def procs(self) -> int:
        return self.num_procs if self.num_procs is not None else min(os.cpu_count() or 1, 8)
