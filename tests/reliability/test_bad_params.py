"""Bad parameters fail fast and clearly: exit code 2 + one message, no traceback, no Ray, no run directory.

``ConfigError`` unit checks live in tests/train/test_config.py and three flow cases in tests/flows; this module
drives the real ``senet-dist`` Typer app (in-process via CliRunner, plus a real console-script process for ``run``)
and the flow for the cases those do not cover.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from senet_dist.cli import app
from tests.helpers import make_tree

from .conftest import cli

runner = CliRunner()


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _invoke(*args: str):
    result = runner.invoke(app, list(args))
    return result, result.output  # click >= 8.2: stdout and stderr interleaved


@pytest.fixture()
def empty_class_tree(tmp_path: Path) -> Path:
    root = make_tree(tmp_path / "src", {"a": 5})
    (root / "b").mkdir()
    return root


def _cases(tmp: Path, version: Path, empty_class: Path) -> dict[str, tuple[list[str], str]]:
    storage = str(tmp / "runs")
    (tmp / "empty").mkdir(exist_ok=True)
    train = ["train", "--data", str(version), "--storage", storage]
    return {
        "unknown-model": (train + ["--model", "se_resnet_404"], "unknown model 'se_resnet_404'; valid names"),
        "negative-epochs": (train + ["--model", "se_resnet_tiny", "--set", "epochs=-1"], "epochs must be >= 1"),
        "batch-lt-workers": (
            train + ["--model", "se_resnet_tiny", "--set", "batch_size=1"],
            "batch_size 1 is smaller than num_workers 2",
        ),
        "unknown-key": (
            train + ["--model", "se_resnet_tiny", "--set", "learning_rate=0.1"],
            "unknown key 'learning_rate'",
        ),
        # valid config, but more workers than the local Ray (started by the command) has CPUs: Ray Train would wait
        "more-workers-than-cpus": (
            train + ["--model", "se_resnet_tiny", "--set", "num_workers=64", "--set", "batch_size=128"],
            "64 worker(s) need 64 CPU",
        ),
        "missing-data": (
            ["train", "--model", "se_resnet_tiny", "--data", str(tmp / "nope"), "--storage", storage],
            "dataset directory does not exist",
        ),
        "shard-missing-src": (["shard", str(tmp / "nope"), str(tmp / "out")], "source directory does not exist"),
        "shard-empty-imagefolder": (["shard", str(tmp / "empty"), str(tmp / "out")], "no class folders found"),
        "shard-empty-class": (["shard", str(empty_class), str(tmp / "out")], "no images"),
        "shard-bad-fractions": (
            ["shard", str(empty_class), str(tmp / "out"), "--val", "0.7", "--test", "0.7"],
            "fractions",
        ),
    }


AFTER_START = {"more-workers-than-cpus"}  # found once Ray is up (its resources): after the "training ..." line
CASES = [
    "unknown-model",
    "negative-epochs",
    "batch-lt-workers",
    "unknown-key",
    "more-workers-than-cpus",
    "missing-data",
    "shard-missing-src",
    "shard-empty-imagefolder",
    "shard-empty-class",
    "shard-bad-fractions",
]


@pytest.mark.parametrize("case", CASES)
def test_cli_bad_input_exits_2_with_a_clear_message(
    case: str, ray_down, lfw_version: Path, tmp_path: Path, empty_class_tree: Path, figures
) -> None:
    args, needle = _cases(tmp_path, lfw_version, empty_class_tree)[case]
    result, output = _invoke(*args)
    figures.bad_input(f"cli-{args[0]}")
    assert result.exit_code == 2, output
    lines = output.strip().splitlines()
    assert "Traceback" not in output and lines[-1].startswith("error:"), output
    if case not in AFTER_START:
        assert len(lines) == 1, output  # refused before the command printed or started anything
    assert needle in _flat(output), output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()  # nothing created on the way


def test_cli_error_is_one_line(ray_down, tmp_path: Path) -> None:
    missing = tmp_path / ("a-long-directory-name-" * 8)  # paths this long are ordinary in real projects
    result, output = _invoke("shard", str(missing), str(tmp_path / "out"))
    assert result.exit_code == 2
    assert len(output.strip().splitlines()) == 1, output


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("args", [["--variant", "se_resnet_404"], ["--set", "epochs=-1"]], ids=["variant", "epochs"])
def test_cli_run_bad_input_exits_2_before_prefect(args: list[str], lfw_source: Path, tmp_path: Path, figures) -> None:
    proc = cli(
        "run",
        "--data",
        str(lfw_source),
        "--shards",
        str(tmp_path / "shards"),
        "--artifacts",
        str(tmp_path / "artifacts"),
        *args,
        cwd=tmp_path,
        env={"PREFECT_HOME": str(tmp_path / "prefect")},
    )
    figures.bad_input("cli-run")
    output = proc.stdout + proc.stderr
    assert not (tmp_path / "shards").exists() and not (tmp_path / "artifacts").exists()
    assert "Ray" not in output  # no cluster was started
    assert proc.returncode == 2, output[-2000:]
    assert "Traceback" not in output and len(output.strip().splitlines()) == 1, output[-2000:]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_flow_bad_params_fail_before_any_worker(ray_down, lfw_source: Path, tmp_path: Path, figures) -> None:
    from prefect.testing.utilities import prefect_test_harness

    from flows.train_senet import train_senet

    (tmp_path / "empty").mkdir()
    cases = [
        ({"data": str(lfw_source), "train": {"batch_size": 1}}, ValueError, "smaller than num_workers"),
        ({"data": str(lfw_source), "variants": ["se_resnet_tiny", "se_resnet_tiny"]}, ValueError, "duplicates"),
        ({"data": str(lfw_source), "shard": {"max_cnt": 3}}, ValueError, "unknown key 'shard.max_cnt'"),
        ({"data": str(tmp_path / "empty")}, ValueError, "no class folders"),
    ]
    with prefect_test_harness(server_startup_timeout=120):
        for kwargs, exc, needle in cases:
            kwargs = {
                "variants": ["se_resnet_tiny"],
                "shards": str(tmp_path / "shards"),
                "artifacts": str(tmp_path / "artifacts"),
                **kwargs,
            }
            state = train_senet(**kwargs, return_state=True)
            figures.bad_input("flow-param")
            assert state.is_failed(), kwargs
            with pytest.raises(exc, match=needle):
                state.result()
            assert not (tmp_path / "artifacts").exists(), kwargs  # no tables, no Ray storage


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_unicode_run_name_is_trained_or_rejected_before_ray(
    ray_down, lfw_version: Path, tmp_path: Path, figures
) -> None:
    from senet_dist.train import ConfigError, fit

    from .conftest import train_config

    figures.bad_input("odd-name")
    try:
        result = fit("se_resnet_tiny", lfw_version, train_config(), storage_path=tmp_path / "runs", run_name="run ü")
    except ConfigError:
        assert not (tmp_path / "runs").exists()
        return
    assert result.epochs_completed == 1
