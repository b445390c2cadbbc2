"""Prefect flow ``check-data``: a cheap data-change trigger for ``train-senet``.

It fingerprints the source exactly as sharding would and starts the ``train-senet`` deployment only when the
fingerprint differs from the newest dataset version, so a frequent schedule costs a hash pass, not a training run.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.states import Completed, State

from senet_dist.pipeline import PipelineConfig, check_deployment_name, data_changed


@flow(name="check-data", log_prints=True)
def check_data(
    data: str | None = None,
    shards: str | None = None,
    shard: dict[str, Any] | None = None,
    deployment: str = "train-senet/quickstart",
    parameters: dict[str, Any] | None = None,
) -> dict[str, str] | State:
    """Start ``deployment`` (FLOW/DEPLOYMENT) with ``parameters`` when ``data`` changed since the last shard.

    Unset ``data``/``shards``/``shard`` take the PipelineConfig defaults, as train-senet's do."""
    logger = get_run_logger()
    check_deployment_name(deployment)  # only train-senet's deployments; their own checks then hold for the run
    given = {k: v for k, v in {"data": data, "shards": shards, "shard": shard}.items() if v is not None}
    changed, fingerprint = data_changed(PipelineConfig.parse(given))
    if not changed:
        logger.info("data unchanged (fingerprint %s)", fingerprint[:12])
        return Completed(name="Unchanged", message=f"fingerprint {fingerprint[:12]} unchanged")
    run: FlowRun = run_deployment(deployment, parameters={**given, **(parameters or {})}, timeout=0)  # type: ignore[assignment]  # sync in a sync flow
    logger.info("data changed (fingerprint %s): started %s as flow run %s", fingerprint[:12], deployment, run.id)
    return {"fingerprint": fingerprint, "flow_run_id": str(run.id)}


if __name__ == "__main__":
    check_data()
