"""``senet-dist models NAME --summary``: per-layer rows whose parameters add up to the registry's counts."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from senet_dist.cli import app
from senet_dist.models import create_model, list_models
from senet_dist.models.summary import layer_rows, summarize
from senet_dist.models.table import count_params


def _count(name: str, **kw: object) -> int:
    with torch.device("meta"):
        return count_params(create_model(name, **kw))


@pytest.mark.parametrize(
    ("name", "kwargs", "total"),
    [
        ("se_resnet_cifar", {"num_classes": 10}, 2_708_106),
        ("se_resnet50", {"num_classes": 1000, "stem": "cifar"}, 28_080_344),
        ("se_densenet121", {"num_classes": 1000}, 8_284_952),
        ("densenet121_se_head", {"num_classes": 1000}, 8_241_000),
        ("res_densenet", {"num_classes": 2}, 149_871_874),
    ],
)
def test_summary_total_is_the_reference_count(name: str, kwargs: dict, total: int) -> None:
    s = summarize(name, **kwargs)
    assert s.total_params == total
    assert all(r.output_shape is not None for r in s.rows)  # every listed layer ran in the forward pass


@pytest.mark.parametrize("name", list_models())
def test_summary_adds_up_for_every_model(name: str) -> None:
    assert summarize(name, num_classes=7).total_params == _count(name, num_classes=7)


def test_rows_follow_the_forward_pass_with_shapes() -> None:
    s = summarize("se_resnet18", num_classes=10, image_size=64, stem="cifar")
    names = [r.name for r in s.rows]
    assert names[0] == "stem.0" and s.rows[0].output_shape == (1, 64, 64, 64)  # 3x3 stride-1 stem keeps 64 px
    assert s.rows[0].params == 64 * 3 * 3 * 3
    assert names[-1] == "head.fc" and s.rows[-1].output_shape == (1, 10) and s.rows[-1].params == 512 * 10 + 10
    se = next(r for r in s.rows if r.name.endswith("se.fc1"))
    assert se.kind == "Conv2d" and se.output_shape == (1, 4, 1, 1)  # squeezed: 64 / 16 channels on a 1x1 map
    imagenet = summarize("se_resnet18", num_classes=10, image_size=64)
    assert imagenet.rows[0].output_shape == (1, 64, 32, 32)  # 7x7 stride-2 stem


def test_shared_and_unused_parameters_are_counted_once() -> None:
    class Tied(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = torch.nn.Conv2d(3, 3, 1)
            self.b = self.a  # the same module twice
            self.unused = torch.nn.Linear(2, 2)
            self.scale = torch.nn.Parameter(torch.ones(1))  # owned directly by the root: not a layer row

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.b(self.a(x)) * self.scale

    model = Tied()
    rows = layer_rows(model, 8)
    assert sum(r.params for r in rows) == count_params(model) - 1  # the root's own parameter has no row
    assert [r.name for r in rows if r.output_shape is None] == ["unused"]


def test_cli_summary_prints_rows_and_the_total() -> None:
    runner = CliRunner()
    cmd = ["models", "se_resnet50", "--summary", "--set", "stem=cifar", "--image-size", "224"]
    result = runner.invoke(app, cmd, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "stages.3.2.se.fc2" in result.output and "1x2048x28x28" in result.output  # stride-1 stem: 224/8
    assert "total params: 28,080,344" in result.output
    cifar = runner.invoke(app, ["models", "se_resnet_cifar", "--summary", "--num-classes", "10"])
    assert cifar.exit_code == 0 and "total params: 2,708,106" in cifar.output
    table = runner.invoke(app, ["models", "se_resnet50", "--set", "stem=cifar"], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "28,080,344" in table.output
    for bad, needle in (
        (["models", "se_resnet50", "se_resnet18", "--summary"], "exactly one model"),
        (["models", "se_resnet50", "--summary", "--set", "stem=wide"], "stem"),
        (["models", "se_resnet50", "--summary", "--set", "colour=red"], "colour"),
    ):
        out = runner.invoke(app, bad)
        assert out.exit_code == 2 and needle in out.output and "Traceback" not in out.output
