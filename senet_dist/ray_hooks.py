"""Set-up hook for the Ray worker processes of a local Ray that senet-dist starts (``worker_process_setup_hook``).

Import-light on purpose: every worker process of that Ray runs it at start-up.
"""

from __future__ import annotations

import logging

# Ray Train's PlacementGroupCleaner asks the state API about the controller every second; without Ray's dashboard
# (``ray[train]`` ships none, so senet-dist's local Ray runs without it) every ask fails and logs this warning.
STATE_API_NOISE = (
    "ray.train.v2._internal.execution.controller.placement_group_cleaner",
    "Failed to query Ray Train Controller actor state",
)


class DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_ray_workers() -> None:
    """Drop only that one warning; every other record of that logger (a placement group it cannot query) stays."""
    name, prefix = STATE_API_NOISE
    logging.getLogger(name).addFilter(DropMessage(prefix))
