"""Two ``train-senet`` flow runs at once on the same shards and artifacts roots, from two processes.

Each process runs the real flow under its own ``prefect_test_harness`` server (own PREFECT_HOME) and
its own local Ray, as two users or two deployments would. The second starts once the first has recorded its run as
``running`` (so the overlap is certain, not a race). The append-only store must come out readable with both runs'
rows and no torn or temporary parts.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from senet_dist.artifacts import TABLES, ArtifactStore
from tests.helpers import PYTHON, REPO, wait_until

from .conftest import tiny_train

pytestmark = [pytest.mark.ray, pytest.mark.prefect, pytest.mark.slow]

_FLOW = textwrap.dedent("""
    import json, sys
    from prefect.testing.utilities import prefect_test_harness
    from flows.train_senet import train_senet
    with prefect_test_harness(server_startup_timeout=180):  # a fresh SQLite server per process
        state = train_senet(data=sys.argv[1], variants=["se_resnet_tiny"], shards=sys.argv[2], artifacts=sys.argv[3],
                            train=json.loads(sys.argv[4]), shard=json.loads(sys.argv[5]), force=True,
                            return_state=True)
    print("RESULT " + json.dumps({"completed": state.is_completed(), "name": state.name, "message": state.message}))
""")
SHARD_OPTS = {"resize_shorter": None, "image_format": "png", "max_count": 20, "num_procs": 1, "progress": False}


def _start(i: int, src: Path, tmp: Path) -> subprocess.Popen:
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp / f"prefect-home-{i}"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("PREFECT_API_URL", None)
    train = {k.replace("optimizer.", ""): v for k, v in tiny_train(epochs=1).items() if k != "model"}
    args = [str(src), str(tmp / "shards"), str(tmp / "artifacts"), json.dumps(train), json.dumps(SHARD_OPTS)]
    return subprocess.Popen(
        [PYTHON, "-c", _FLOW, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _wait_for_running_row(root: Path, first: subprocess.Popen, timeout: float = 300) -> None:
    def running() -> bool:
        return (root / "runs").is_dir() and "running" in ArtifactStore(root).read("runs").column("status").to_pylist()

    wait_until(running, timeout, "the first flow recording a running run", interval=0.5, proc=first)


@pytest.mark.timeout(600)
def test_two_flow_runs_on_one_artifacts_root(lfw_source: Path, tmp_path: Path, figures) -> None:
    procs = [_start(0, lfw_source, tmp_path)]
    _wait_for_running_row(tmp_path / "artifacts", procs[0])
    procs.append(_start(1, lfw_source, tmp_path))
    outputs = [p.communicate(timeout=560)[0] for p in procs]
    results = []
    for proc, out in zip(procs, outputs, strict=True):
        line = next((ln for ln in out.splitlines() if ln.startswith("RESULT ")), None)
        assert proc.returncode == 0 and line, out[-4000:]
        results.append(json.loads(line[len("RESULT ") :]))
    assert all(r["completed"] for r in results), results
    figures.run_completed(2)
    figures.fault("concurrent-flow-runs")

    root = tmp_path / "artifacts"
    store = ArtifactStore(root)
    for table in TABLES:  # every part is a whole Parquet file; nothing half-written is visible
        for part in (root / table).glob("*"):
            assert not part.name.startswith("."), part
            pq.read_table(part)
        store.read(table)
    runs = store.runs_latest().to_pylist()
    # today the second flow resumes the first one's live run id: both drive one Ray run, one row survives
    assert len(runs) == 2 and {r["status"] for r in runs} == {"completed"}
    assert len({r["flow_run_id"] for r in runs}) == 2
    ids = {r["run_id"] for r in runs}
    epochs = store.read("epochs").to_pylist()
    evals = store.read("evaluations").to_pylist()
    ckpts = store.read("checkpoints").to_pylist()
    figures.rows(2, len({e["run_id"] for e in epochs} & ids))
    figures.rows(2, len({e["run_id"] for e in evals} & ids))
    assert {e["run_id"] for e in epochs} == ids and {e["run_id"] for e in evals} == ids
    assert {c["run_id"] for c in ckpts} == ids and all((Path(c["uri"]) / "checkpoint.pt").is_file() for c in ckpts)
    fingerprints = set(store.read("datasets").column("fingerprint").to_pylist())
    assert len(fingerprints) == 1  # same data -> one fingerprint, whichever process sharded it
    # Both flows ran the promotion gate on the same dataset at about the same time: one champion, one of their runs.
    from senet_dist.release.registry import events, states

    champions = [m for m, r in states(store, lfw_source.name).items() if r.stage == "champion"]
    assert len(champions) == 1 and champions[0] in ids
    latest = {e.model_id: e.stage for e in events(store, lfw_source.name)}  # what the writers left, unresolved
    assert list(latest.values()).count("champion") == 1
