"""docker/entrypoint.sh refuses to start a role whose secrets are unset, empty or still a ``change-me`` placeholder,
and a Ray role without token auth; run for real with bash, with fake ``ray`` / ``prefect`` / ``bash`` commands first
on PATH that print what they were asked to run (so a role that passes its checks shows the command it execs).

The compose stack as docker/.env.example leaves it (every secret a placeholder) starts none of our services; with
real values it starts every one."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.docker._compose import DOCKER, ENV_EXAMPLE, parse_env_file, resolved_compose

ENTRYPOINT = DOCKER / "entrypoint.sh"
BASH = shutil.which("bash") or "/bin/bash"
# What a fake command prints: its name, its arguments and the auth mode it sees (never a secret).
FAKE = '#!/bin/sh\necho "$(basename "$0") $* [RAY_AUTH_MODE=${RAY_AUTH_MODE:-}]"\n'
RAY_TOKEN = secrets.token_hex(32)
AUTH = f"senet:{secrets.token_hex(12)}"
GOOD = {
    "RAY_ADDRESS": "ray-head:6379",
    "RAY_AUTH_MODE": "token",
    "RAY_AUTH_TOKEN": RAY_TOKEN,
    "PREFECT_API_URL": "http://prefect-server:4200/api",
    "PREFECT_API_AUTH_STRING": AUTH,
    "PREFECT_SERVER_API_AUTH_STRING": AUTH,
}
# role (with its arguments) -> the secrets it needs
ROLES: dict[tuple[str, ...], tuple[str, ...]] = {
    ("ray-head",): ("RAY_AUTH_TOKEN",),
    ("ray-worker",): ("RAY_AUTH_TOKEN",),
    ("prefect-server",): ("PREFECT_SERVER_API_AUTH_STRING",),
    ("prefect-worker",): ("RAY_AUTH_TOKEN", "PREFECT_API_AUTH_STRING"),
    ("prefect-deploy",): ("PREFECT_API_AUTH_STRING",),
    ("ray-driver", "prefect", "flow-run", "execute"): ("RAY_AUTH_TOKEN", "PREFECT_API_AUTH_STRING"),
}
# Not passed on from this machine: the settings under test, and pytest's own (its test ids name placeholders).
_OURS = re.compile(r"^(RAY_|PREFECT_|AWS_|SENET_|POSTGRES_|MINIO_|PYTEST_)")


@pytest.fixture(scope="module")
def fake_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    bin_dir = tmp_path_factory.mktemp("fake-bin")
    for name in ("ray", "prefect", "bash"):  # bash: the work-pools script that prefect-deploy runs first
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def run(fake_bin: Path, args: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The entrypoint with ``args`` in ``env`` (plus this machine's PATH, HOME, ...; none of its RAY_/PREFECT_/AWS_)."""
    base = {k: v for k, v in os.environ.items() if not _OURS.match(k)}
    base["PATH"] = f"{fake_bin}:{base.get('PATH', '/usr/bin:/bin')}"
    command = [BASH, str(ENTRYPOINT), *args]
    return subprocess.run(command, env={**base, **env}, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args", list(ROLES), ids=lambda a: a[0])
def test_every_role_starts_with_real_secrets_and_token_auth(fake_bin: Path, args: tuple[str, ...]) -> None:
    proc = run(fake_bin, args, GOOD)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]  # the command the role execs
    expected = {
        "ray-head": "ray start --head",
        "ray-worker": "ray start --address=ray-head:6379",
        "prefect-server": "prefect server start --host 0.0.0.0 --port 4200",
        "prefect-worker": "prefect worker start --pool local-pool",
        "prefect-deploy": "prefect deploy --no-prompt --all",
        "ray-driver": "prefect flow-run execute",
    }[args[0]]
    assert last.startswith(expected), proc.stdout
    if args[0].startswith("ray") or args[0] == "prefect-worker":
        assert "[RAY_AUTH_MODE=token]" in proc.stdout
    assert RAY_TOKEN not in proc.stdout + proc.stderr and AUTH not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("args", "var", "value"),
    [
        (args, var, value)
        for args, needed in ROLES.items()
        for var in needed
        for value in (None, "", "change-me-ray-token" if "TOKEN" in var else "change-me-user:change-me-password")
    ],
    ids=lambda x: x[0] if isinstance(x, tuple) else repr(x),
)
def test_a_secret_unset_empty_or_a_placeholder_is_refused_with_one_line_naming_it(
    fake_bin: Path, args: tuple[str, ...], var: str, value: str | None
) -> None:
    env = dict(GOOD)
    if value is None:
        del env[var]
    else:
        env[var] = value
    proc = run(fake_bin, args, env)
    assert proc.returncode == 64, proc.stdout
    assert proc.stdout == ""  # nothing was started
    (line,) = proc.stderr.strip().splitlines()
    assert var in line and line.startswith("senet-entrypoint: ")
    assert not value or value not in line  # the value itself is never printed


@pytest.mark.parametrize("args", [a for a in ROLES if "RAY_AUTH_TOKEN" in ROLES[a]], ids=lambda a: a[0])
@pytest.mark.parametrize("mode", [None, "disabled"])
def test_a_ray_role_without_token_auth_is_refused(fake_bin: Path, args: tuple[str, ...], mode: str | None) -> None:
    env = {k: v for k, v in GOOD.items() if k != "RAY_AUTH_MODE"} | ({} if mode is None else {"RAY_AUTH_MODE": mode})
    proc = run(fake_bin, args, env)
    assert proc.returncode == 64 and "RAY_AUTH_MODE must be 'token'" in proc.stderr and proc.stdout == ""


def test_a_placeholder_anywhere_in_the_environment_is_refused(fake_bin: Path) -> None:
    """A database URL built from a placeholder password, an S3 key: not the role's own secrets, still refused."""
    url = "postgresql+asyncpg://prefect:change-me-postgres-password@postgres:5432/prefect"
    proc = run(fake_bin, ("prefect-server",), GOOD | {"PREFECT_API_DATABASE_CONNECTION_URL": url})
    assert proc.returncode == 64 and "PREFECT_API_DATABASE_CONNECTION_URL" in proc.stderr
    assert "change-me-postgres-password" not in proc.stderr
    proc = run(fake_bin, ("ray-worker",), GOOD | {"AWS_SECRET_ACCESS_KEY": "CHANGE-ME-app-secret-key"})
    assert proc.returncode == 64 and "AWS_SECRET_ACCESS_KEY" in proc.stderr


def test_a_prefect_auth_string_must_be_user_colon_password(fake_bin: Path) -> None:
    proc = run(fake_bin, ("prefect-deploy",), GOOD | {"PREFECT_API_AUTH_STRING": "justapassword"})
    assert proc.returncode == 64 and "user:password" in proc.stderr


def test_a_ray_token_file_is_checked_like_the_variable(fake_bin: Path, tmp_path: Path) -> None:
    """RAY_AUTH_TOKEN_PATH (the Docker work pool mounts the token as a file) instead of RAY_AUTH_TOKEN."""
    token = tmp_path / "ray-token"
    env = {k: v for k, v in GOOD.items() if k != "RAY_AUTH_TOKEN"} | {"RAY_AUTH_TOKEN_PATH": str(token)}
    args = ("ray-driver", "prefect", "flow-run", "execute")
    assert "cannot be read" in run(fake_bin, args, env).stderr
    token.write_text("")
    assert "empty file" in run(fake_bin, args, env).stderr
    token.write_text("change-me-ray-token\n")
    proc = run(fake_bin, args, env)
    assert proc.returncode == 64 and "change-me placeholder" in proc.stderr
    token.write_text(RAY_TOKEN)
    assert run(fake_bin, args, env).returncode == 0


def _our_services(env: dict[str, str]) -> dict[str, tuple[tuple[str, ...], dict[str, str]]]:
    """Compose services of our image that start an entrypoint role: name -> (command, environment)."""
    out = {}
    for name, svc in resolved_compose(env)["services"].items():
        if "build" in svc and "entrypoint" not in svc:
            out[name] = (tuple(svc["command"]), {k: str(v) for k, v in svc.get("environment", {}).items()})
    return out


def test_the_stack_as_env_example_leaves_it_starts_none_of_our_services(fake_bin: Path) -> None:
    services = _our_services(parse_env_file(ENV_EXAMPLE))
    assert {"prefect-server", "prefect-deploy", "prefect-worker", "ray-head", "ray-gpu-worker"} <= set(services)
    for name, (command, env) in services.items():
        proc = run(fake_bin, command, env)
        assert proc.returncode == 64 and "change-me placeholder" in proc.stderr, f"{name}: {proc.stdout}"


def test_the_stack_with_real_secrets_starts_every_one_of_our_services(fake_bin: Path) -> None:
    real = {
        k: (f"senet:{secrets.token_hex(8)}" if ":" in v else secrets.token_hex(16)) if "change-me" in v else v
        for k, v in parse_env_file(ENV_EXAMPLE).items()
    }
    for name, (command, env) in _our_services(real).items():
        proc = run(fake_bin, command, env)
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
