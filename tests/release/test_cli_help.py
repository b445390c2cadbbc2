"""The release commands are part of the console script, each with --help (cheap: no model, no data)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from senet_dist.cli import app


@pytest.mark.parametrize("cmd", ["export", "registry", "promote", "rollback", "predict"])
def test_release_commands_have_help(cmd):
    result = CliRunner().invoke(app, [cmd, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "Usage" in result.output, result.output


def test_pipeline_config_names_the_registry_dataset():
    from senet_dist.pipeline import PipelineConfig

    assert PipelineConfig(data="lfw-subset:24").registry_dataset == "lfw-subset"
    assert PipelineConfig(data="/data/my photos/").registry_dataset == "my photos"
    assert PipelineConfig(data="lfw-subset", dataset_name="faces").registry_dataset == "faces"
