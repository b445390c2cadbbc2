"""Fault injection for the resume and reliability tests; never part of a training config or a run's identity.

A test sets ``SENET_TEST_FAULT`` to JSON such as ``{"rank": 1, "epoch": 2, "after_steps": 2, "marker": "/tmp/m"}``
in the driver; ``fit`` reads it there and ships it to the workers, where that rank SIGKILLs itself once
(``marker`` records that it fired) to exercise Ray Train's restart and resume.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from senet_dist.errors import ConfigError

FAULT_ENV = "SENET_TEST_FAULT"


@dataclass(frozen=True)
class FaultPlan:
    rank: int
    marker: str  # written just before the kill, so the fault fires once across restarts
    epoch: int | None = None  # None: the first epoch this rank runs
    after_steps: int = 1

    @classmethod
    def from_env(cls) -> FaultPlan | None:
        raw = os.environ.get(FAULT_ENV)
        if not raw:
            return None
        try:
            return cls(**json.loads(raw))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f'{FAULT_ENV}: expected JSON like {{"rank": 1, "marker": PATH}}: {exc}') from None

    def to_env(self) -> str:
        return json.dumps(self.__dict__)

    def hook(
        self, rank: int, epoch: int, before_kill: Callable[[], object] | None = None
    ) -> Callable[[int], None] | None:
        """The per-step callback for ``rank`` in ``epoch``, or None when this plan does not fire there.

        ``before_kill`` lets the worker wait until Ray has registered every reported checkpoint: a crash that lands
        before the controller processed the last report loses that checkpoint, which would make the test racy."""
        if rank != self.rank or (self.epoch is not None and epoch != self.epoch) or Path(self.marker).exists():
            return None
        marker = Path(self.marker)

        def kill_after(step: int) -> None:
            if step >= self.after_steps and not marker.exists():
                marker.parent.mkdir(parents=True, exist_ok=True)
                if before_kill is not None:
                    before_kill()
                marker.write_text(f"rank={rank} epoch={epoch} step={step} pid={os.getpid()}\n")
                os.kill(os.getpid(), signal.SIGKILL)

        return kill_after


__all__ = ["FAULT_ENV", "FaultPlan"]
