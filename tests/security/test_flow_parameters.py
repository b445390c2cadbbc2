"""Flow parameters are an attack surface: whoever may start a deployment may set its parameters. Where results and
Ray go comes from the deployment (its parameters, or the allow-lists in its environment); data sources stay free;
check-data starts only train-senet's deployments. (A real deployment run refused this way: tests/flows/
test_deployment.py.)"""

from __future__ import annotations

import pytest

from senet_dist.errors import ConfigError
from senet_dist.pipeline import PipelineConfig, check_deployment_name, check_destinations
from senet_dist.pipeline.config import ALLOWED_RAY_ENV, ALLOWED_ROOTS_ENV


@pytest.fixture
def operator_env(monkeypatch, tmp_path):
    """The worker's environment as an operator set it: artifacts in the team bucket, one extra root, one Ray."""
    monkeypatch.setenv("SENET_ARTIFACTS", "s3://team/senet")
    monkeypatch.setenv(ALLOWED_ROOTS_ENV, f"s3://team/scratch, {tmp_path / 'allowed'}")
    monkeypatch.setenv(ALLOWED_RAY_ENV, "ray-head.senet:6379")
    return tmp_path


def run_config(**given) -> PipelineConfig:
    return PipelineConfig.parse(given)


def test_the_deployments_own_destinations_and_the_defaults_pass(operator_env):
    deployment = {"shards": "s3://team/shards", "ray_address": "ray://team-head:10001"}
    check_destinations(run_config(shards="s3://team/shards", ray_address="ray://team-head:10001"), deployment)
    check_destinations(run_config(), {})  # nothing given: the worker's SENET_ARTIFACTS and the default shards root
    check_destinations(run_config(data="s3://anyone/photos"), {})  # sources are read with our credentials: free


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        ({"artifacts": "s3://attacker/loot"}, "artifacts 's3://attacker/loot' is outside this deployment's roots"),
        ({"shards": "s3://team/scratch/../../attacker"}, "shards"),  # .. cannot climb out of an allowed root
        ({"artifacts": "s3://team/scratchpad"}, "outside"),  # a prefix of a name is not inside it
        ({"artifacts": "/etc/senet"}, "outside"),
        ({"ray_address": "attacker.example:6379"}, "ray_address 'attacker.example:6379' is not this deployment's"),
    ],
)
def test_a_destination_only_the_caller_chose_is_refused(operator_env, given, needle):
    with pytest.raises(ConfigError, match=needle.replace("(", r"\(")):
        check_destinations(run_config(**given), {"artifacts": "s3://team/senet"})


def test_the_allow_lists_admit_what_the_operator_listed(operator_env):
    allowed = operator_env / "allowed"
    check_destinations(run_config(artifacts="s3://team/scratch/run-7", shards=str(allowed / "shards")), {})
    check_destinations(run_config(ray_address="ray-head.senet:6379"), {})
    with pytest.raises(ConfigError, match="outside"):  # keys in a URI do not make a bucket the team's
        check_destinations(run_config(artifacts="s3://KEY:SECRET@attacker/x"), {})


def test_a_refusal_never_shows_a_key(operator_env):
    with pytest.raises(ConfigError) as err:
        check_destinations(run_config(artifacts="s3://AKIAKEY:s3cr3t@attacker/x?token=t0k"), {})
    assert "s3cr3t" not in str(err.value) and "AKIAKEY" not in str(err.value) and "t0k" not in str(err.value)


@pytest.mark.parametrize("name", ["check-data/on-data-change", "train-senet", "evil/quickstart", "train-senet/a/b", ""])
def test_check_data_starts_only_train_senets_deployments(name):
    with pytest.raises(ConfigError, match="is not one of this project's"):
        check_deployment_name(name)
    assert check_deployment_name("train-senet/quickstart") == "train-senet/quickstart"
