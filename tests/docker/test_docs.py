"""docs/scaling.md, docs/kuberay.md, README.md and docs/orchestration.md: one story that the checked files back.

- every command of docs/scaling.md is taken from a file the tests check (its header comment);
- docs/kuberay.md points at the manifests in docker/k8s/ (validated in test_kuberay.py) instead of carrying copies;
- the flow runs on a driver inside the cluster (a Prefect worker on a node, or `ray job submit`), never Ray Client;
- the Compose stack is single-host, and the docs say so.
"""

from __future__ import annotations

import re

import pytest

from tests.docker._compose import REPO

DOCS = REPO / "docs"
# Files whose header comments hold the commands the docs show; each is checked by tests: scripts by shellcheck and
# test_shell_scripts.py, prefect.yaml by tests/flows/test_deployment.py, compose.yaml by test_compose.py, the
# Dockerfile by test_dockerfile.py, docker/k8s/*.yaml by test_kuberay.py.
COMMAND_SOURCES = [
    *sorted((REPO / "scripts").glob("*.sh")),
    REPO / "prefect.yaml",
    REPO / "docker" / "compose.yaml",
    REPO / "docker" / "Dockerfile",
    *sorted((REPO / "docker" / "k8s").glob("*.yaml")),
]
WALKTHROUGH = "## From one machine to 4 nodes x 8 GPUs"


def package_version() -> str:
    return re.search(r'^version = "([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


def blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def commands(block: str) -> list[str]:
    """The command lines of a bash block (comments and blank lines dropped)."""
    return [line.strip() for line in block.splitlines() if line.strip() and not line.strip().startswith("#")]


def section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n## ", start + len(heading))
    return text[start : end if end > 0 else None]


def test_every_command_in_scaling_md_is_taken_from_a_checked_file() -> None:
    sources = {path: path.read_text() for path in COMMAND_SOURCES}
    found = [line for block in blocks((DOCS / "scaling.md").read_text(), "bash") for line in commands(block)]
    assert len(found) >= 25
    missing = [line for line in found if not any(line in text for text in sources.values())]
    assert missing == [], "commands in docs/scaling.md that no checked file holds"
    for path, text in sources.items():  # the files the commands name exist
        for ref in re.findall(r"(?:docker/k8s|scripts|docker)/[\w.-]+\.(?:yaml|json|sh)", text):
            assert (REPO / ref).exists(), f"{path.name} names {ref}"


def test_the_walkthrough_goes_from_one_machine_to_4_nodes_of_8_gpus_in_numbered_steps() -> None:
    walk = section((DOCS / "scaling.md").read_text(), WALKTHROUGH)
    steps = re.findall(r"^(\d+)\. \*\*", walk, flags=re.M)
    assert steps == [str(i) for i in range(1, len(steps) + 1)] and len(steps) >= 6
    assert "bash scripts/quickstart.sh" in walk.split("\n2. ")[0]  # step 1: one machine
    last = walk[walk.rindex(f"\n{steps[-1]}. ") :]
    assert "4 nodes x 8 GPUs" in last and "prefect deployment run train-senet/gpu-cluster" in last
    for manifest in ("cluster-env.yaml", "raycluster.yaml", "rayjob.yaml"):
        assert f"kubectl apply -f docker/k8s/{manifest}" in walk
    assert "bash scripts/work-pools.sh" in walk


def test_scaling_md_documents_the_pool_creation_commands_of_the_script() -> None:
    script = (REPO / "scripts" / "work-pools.sh").read_text()
    created = re.findall(r"\|\| (prefect work-pool create .+)$", script, flags=re.M)
    pools = section((DOCS / "scaling.md").read_text(), "## Work pools")
    assert len(created) == 3 and all(command in pools for command in created)


def test_kuberay_md_points_at_the_manifest_files_instead_of_copies() -> None:
    text = (DOCS / "kuberay.md").read_text()
    files = sorted(p.name for p in (REPO / "docker" / "k8s").iterdir())
    assert files == [
        "cluster-env.yaml",
        "network-policy.yaml",
        "raycluster.yaml",
        "rayjob.yaml",
        "work-pool-docker.json",
        "work-pool-kubernetes.json",
    ]
    for name in files:
        assert f"`docker/k8s/{name}`" in text, name
    assert blocks(text, "yaml") == [] and blocks(text, "json") == []  # no inline manifests to drift
    assert f"registry.example.com/senet-dist:{package_version()}" in text


@pytest.mark.parametrize("doc", ["README.md", "docs/orchestration.md", "docs/scaling.md", "docs/kuberay.md"])
def test_the_flow_runs_inside_the_cluster_not_through_ray_client(doc: str) -> None:
    paragraphs = re.split(r"\n\s*\n", (REPO / doc).read_text())
    for paragraph in paragraphs:
        if "ray://" in paragraph:
            assert "not used" in " ".join(paragraph.split()), f"{doc} suggests Ray Client: {paragraph[:200]}"
    story = (REPO / doc).read_text()
    if doc != "README.md":
        assert "ray job submit" in story or "docs/scaling.md" in story or "scaling.md" in story


def test_compose_is_documented_as_single_host() -> None:
    text = (DOCS / "scaling.md").read_text()
    compose = section(text, "## The Docker Compose stack (one GPU host)")
    assert "single-host" in compose
    assert "--network host" not in text and "docker run" not in text  # no multi-host recipe
    assert "Single host only" in (REPO / "docker" / "compose.yaml").read_text()


def test_scaling_doc_keeps_the_measured_placeholder() -> None:
    text = (DOCS / "scaling.md").read_text()
    assert "## Measured: 2 CPU workers vs 1 on the 2-core dev machine" in text


@pytest.mark.parametrize("gpus,batch,lr", [(1, 256, 0.1), (8, 2048, 0.8), (32, 4096, 1.6), (64, 8192, 3.2)])
def test_scaling_table_follows_linear_lr_rule(gpus: int, batch: int, lr: float) -> None:
    text = (DOCS / "scaling.md").read_text()
    assert re.search(rf"\| `batch_size` \(global\) \|.*\b{batch}\b", text)
    assert lr == pytest.approx(0.1 * batch / 256)
    assert re.search(rf"\| `lr` \(`optimizer.lr`, SGD\) \|.*\b{lr:g}\b", text)
