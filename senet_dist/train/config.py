"""Training configuration: one typed tree (pydantic), loaded from YAML/JSON, overridable, validated before Ray.

Validation happens in the driver so that a typo costs milliseconds, not a Ray cluster start-up: unknown keys
are errors (a misspelt ``learning_rate`` silently training at the default lr is worse than a crash). Every default
lives here; the CLI, the flow and the deployments only pass what differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from senet_dist.data.loader import LoaderConfig, LoaderOptions
from senet_dist.errors import ConfigError
from senet_dist.schema import Section, parse_overrides

_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class OptimizerConfig(Section):
    TITLE: ClassVar[str] = "optimizer config"
    name: Literal["sgd", "adam", "adamw"] = "sgd"  # adam: L2 in the gradient (torch Adam); adamw: decoupled
    lr: float = Field(0.1, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    nesterov: bool = True  # sgd only
    weight_decay: float = Field(5e-4, ge=0)
    # weights: conv/linear weights only, norm scales and biases are not decayed (optim.param_groups);
    # all: every parameter, as plain torch optimizers (and Keras/most reference write-ups) do
    weight_decay_scope: Literal["weights", "all"] = "weights"
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw


class ScheduleConfig(Section):
    """Per-step LR multiplier: linear warmup, then cosine / step decay / constant."""

    TITLE: ClassVar[str] = "schedule config"
    name: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: float = Field(0.0, ge=0)
    warmup_steps: int = Field(0, ge=0)  # > 0 overrides warmup_epochs
    min_lr_ratio: float = Field(0.0, ge=0, le=1)  # cosine floor as a fraction of the peak lr
    step_epochs: int = Field(30, ge=1)  # step schedule: multiply by gamma every step_epochs
    gamma: float = Field(0.1, gt=0, le=1)


class MixupConfig(Section):
    """Mixup / CutMix on the training batch with mixed (soft) targets, as timm's ``Mixup`` in ``batch`` mode.

    Off while both alphas are 0. Per batch: with probability ``prob`` it is mixed with its reverse; when both
    are on, CutMix is picked with probability ``switch_prob``; lambda ~ Beta(alpha, alpha), and for CutMix it is
    corrected to the pasted box's clipped area.
    """

    TITLE: ClassVar[str] = "mixup config"
    mixup_alpha: float = Field(0.0, ge=0)  # > 0 turns mixup on
    cutmix_alpha: float = Field(0.0, ge=0)  # > 0 turns cutmix on
    prob: float = Field(1.0, ge=0, le=1)  # probability that a batch is mixed at all
    switch_prob: float = Field(0.5, ge=0, le=1)  # both on: probability of cutmix instead of mixup
    off_after_epoch: int | None = Field(None, ge=0)  # epochs after this one (1-based) train unmixed; None: never off

    @property
    def enabled(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0

    def active(self, epoch: int) -> bool:
        """Whether 1-based ``epoch`` trains on mixed batches."""
        return self.enabled and (self.off_after_epoch is None or epoch <= self.off_after_epoch)


class EmaConfig(Section):
    """Exponential moving average of the weights (and BN statistics), updated after every optimizer step and
    evaluated on val every epoch, as timm's ``ModelEmaV3``."""

    TITLE: ClassVar[str] = "ema config"
    enabled: bool = False
    decay: float = Field(0.9998, gt=0, lt=1)  # the decay once warmed up
    # warm-up: decay_t = min(decay, 1 - (1 + t)^-warmup_power), so early averages are not dominated by the
    # random init. power 2/3 reaches 0.999 after ~31.6k steps, 3/4 after ~10k (short runs)
    warmup: bool = True
    warmup_power: float = Field(2 / 3, gt=0, le=1)


class TrainConfig(Section):
    """Everything one variant's training run needs; saved as ``config.yaml`` with the run, so it reproduces."""

    TITLE: ClassVar[str] = "training config"
    SHORTHANDS: ClassVar[dict[str, str]] = {
        "lr": "optimizer.lr",
        "weight_decay": "optimizer.weight_decay",
        "momentum": "optimizer.momentum",
        "warmup_epochs": "schedule.warmup_epochs",
        "loader_workers": "loader.num_workers",
    }
    model: str = "se_resnet18"
    model_kwargs: dict[str, Any] = Field(default_factory=dict)
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=1)  # global; each of num_workers ranks gets batch_size // num_workers
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loader: LoaderOptions = Field(default_factory=LoaderOptions)
    mixup: MixupConfig = Field(default_factory=MixupConfig)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    label_smoothing: float = Field(0.0, ge=0, lt=1)  # also applies to mixed targets
    grad_clip: float | None = Field(None, gt=0)
    image_size: int = Field(32, ge=32)  # every registered model needs >= 32 px
    num_workers: int = Field(2, ge=1)  # Ray Train workers (DDP ranks)
    use_gpu: bool = False
    resources_per_worker: dict[str, float] | None = None
    precision: Literal["auto", "bf16", "fp16", "fp32"] = "auto"  # auto: bf16 autocast on GPU, fp32 on CPU
    channels_last: Literal["auto"] | bool = "auto"  # auto: on for GPU
    compile: bool = False
    seed: int = 0
    keep_best_n: int = Field(2, ge=1)  # checkpoints kept, ranked by keep_best_by (the latest is always kept too)
    keep_best_by: Literal["val_acc", "ema_val_acc"] = "val_acc"  # the ranking (and patience) metric
    max_failures: int = Field(1, ge=-1)  # Ray Train restarts after a lost worker; -1 = forever
    patience: int | None = Field(None, ge=1)  # early stopping: epochs without a new best keep_best_by
    max_steps_per_epoch: int | None = Field(None, ge=1)  # cap for smoke runs and benchmarks

    @field_validator("channels_last", mode="before")
    @classmethod
    def _auto_or_bool(cls, v: Any) -> Any:
        if isinstance(v, bool) or v == "auto":
            return v
        if str(v).lower() in _TRUE + _FALSE:
            return str(v).lower() in _TRUE
        raise ValueError(f"channels_last must be auto, true or false, got {v!r}")

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if self.batch_size < self.num_workers:
            raise ValueError(f"batch_size {self.batch_size} is smaller than num_workers {self.num_workers}")
        if self.batch_size % self.num_workers:
            raise ValueError(f"batch_size {self.batch_size} is not divisible by num_workers {self.num_workers}")
        if self.precision == "fp16" and not self.use_gpu:
            raise ValueError("precision fp16 needs use_gpu (use bf16 or fp32 on CPU)")
        if self.keep_best_by == "ema_val_acc" and not self.ema.enabled:
            raise ValueError("keep_best_by ema_val_acc needs ema.enabled: true")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls.parse(data)

    # ---- derived values -----------------------------------------------------------------------
    @property
    def per_worker_batch_size(self) -> int:
        return self.batch_size // self.num_workers

    def resolved_precision(self, on_gpu: bool) -> str:
        return ("bf16" if on_gpu else "fp32") if self.precision == "auto" else self.precision

    def resolved_channels_last(self, on_gpu: bool) -> bool:
        return on_gpu if self.channels_last == "auto" else bool(self.channels_last)

    def loader_config(self) -> LoaderConfig:
        """One rank's data loader settings: the ``loader`` section plus this run's batch, size and seed."""
        return LoaderConfig(
            **self.loader.model_dump(),
            batch_size=self.per_worker_batch_size,
            image_size=self.image_size,
            seed=self.seed,
        )

    # ---- checks that need more than the values ------------------------------------------------
    def validate(self, version_dir: str | Path | None = None) -> TrainConfig:  # type: ignore[override]
        """Check the model name against the registry (and, when given, that ``version_dir`` resolves to a dataset
        version: a local path or a URI; a missing LATEST/bucket, refused credentials or an unreachable endpoint are
        one-line ConfigErrors here, before any worker starts)."""
        from senet_dist.models import UnknownModelError, check_model_name

        try:
            check_model_name(self.model)
        except UnknownModelError as exc:
            raise ConfigError(f"model: {exc}") from None
        if version_dir is not None:
            from senet_dist.data.manifest import resolve_version
            from senet_dist.data.source import DatasetError
            from senet_dist.storage import StorageError

            try:
                resolve_version(version_dir)
            except (DatasetError, StorageError) as exc:
                raise ConfigError(str(exc)) from None
        return self


__all__ = [
    "ConfigError",
    "EmaConfig",
    "MixupConfig",
    "OptimizerConfig",
    "ScheduleConfig",
    "TrainConfig",
    "parse_overrides",
]
