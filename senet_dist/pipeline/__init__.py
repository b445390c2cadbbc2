"""The pipeline as plain functions over typed values: config -> shard -> train each variant -> evaluate -> record.

``config``: what a run is given; ``runs``: which variants need training and under which run id; ``steps``: the
steps themselves. ``flows/`` wraps them as Prefect tasks.
"""

from senet_dist.pipeline.config import (
    DEFAULT_VARIANTS,
    PipelineConfig,
    check_deployment_name,
    check_destinations,
    default_artifacts,
    resolve_source,
)
from senet_dist.pipeline.runs import config_json, new_run_id, run_id_for, variants_to_train
from senet_dist.pipeline.steps import VariantSummary, data_changed, prepare_dataset, promote, train_variant

__all__ = [
    "DEFAULT_VARIANTS",
    "PipelineConfig",
    "check_deployment_name",
    "check_destinations",
    "VariantSummary",
    "config_json",
    "data_changed",
    "default_artifacts",
    "new_run_id",
    "prepare_dataset",
    "promote",
    "resolve_source",
    "run_id_for",
    "train_variant",
    "variants_to_train",
]
