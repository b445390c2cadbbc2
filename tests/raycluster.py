"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``), owned by a subprocess.

The cluster lives in its own process so a test's driver joins it by address, as a driver joins a remote cluster,
and so its shutdown never touches another Ray on the machine (no ``ray stop``). The test talks to that process over
stdin/stdout, one JSON line each way:

    with RayCluster(head_cpus=2) as cluster:         # {"address": "127.0.0.1:PORT"} once the head is up
        cluster.add_node(num_cpus=2, resources={"node_b": 2})   # a node joins, as an autoscaler would add one

Run as ``python -m tests.raycluster HEAD_CPUS``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from tests.helpers import REPO


class RayCluster:
    """Start the cluster process on enter; end it (and every node of it) on exit."""

    def __init__(self, head_cpus: int = 2, timeout: float = 120) -> None:
        self.head_cpus, self.timeout = head_cpus, timeout
        self.proc: subprocess.Popen | None = None
        self.address = ""

    def __enter__(self) -> RayCluster:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.raycluster", str(self.head_cpus)],
            cwd=REPO,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.address = self._reply()["address"]
        return self

    def add_node(self, **node_args: Any) -> str:
        """Add a worker node (``ray.cluster_utils.Cluster.add_node`` arguments); returns its node id."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"add_node": node_args}) + "\n")
        self.proc.stdin.flush()
        return self._reply()["node_id"]

    def _reply(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the Ray cluster process exited with code {self.proc.wait(self.timeout)}")
        return json.loads(line)

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            self.proc.stdin.close()  # EOF: the process shuts the cluster down and exits
        try:
            self.proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main(head_cpus: int) -> None:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True, connect=False, head_node_args={"num_cpus": head_cpus, "include_dashboard": False}
    )
    try:
        print(json.dumps({"address": cluster.address}), flush=True)
        for line in sys.stdin:
            command = json.loads(line)
            node = cluster.add_node(**command["add_node"])
            cluster.wait_for_nodes()
            print(json.dumps({"node_id": node.node_id}), flush=True)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(int(sys.argv[1]))
