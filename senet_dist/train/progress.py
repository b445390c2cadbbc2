"""Progress during an epoch: rank 0 counts steps; a person sees steps done/total, img/s and ETA about every 10 s.

A reference CIFAR run on 2 CPU cores trains ~4 img/s, so an epoch is many minutes without a word from Ray (it
only hears from the workers at ``ray.train.report``, once per epoch). :class:`StepMeter` runs on rank 0 after
each step and emits a :class:`ProgressEvent` at most every ``interval_s`` (and at each epoch's first and last
step). Where the events go is the driver's choice (``fit(on_progress=...)``): through a small Ray actor
(:class:`ProgressBoard`) to a callback in the driver, e.g. :class:`ProgressDisplay` (a ``rich`` bar in a
terminal, plain lines otherwise); without a callback rank 0 prints plain lines, which Ray forwards to the driver's
output (flows, logs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn

PROGRESS_INTERVAL_S = 10.0


@dataclass(frozen=True)
class ProgressEvent:
    """Where rank 0 is: step ``step`` of ``steps`` in epoch ``epoch`` of ``epochs``; img/s over all ranks."""

    epoch: int
    epochs: int
    step: int
    steps: int
    img_per_s: float
    elapsed_s: float  # since this epoch's first step started

    @property
    def eta_s(self) -> float:
        """Seconds left in this epoch's training at the epoch's rate so far."""
        return (self.steps - self.step) * self.elapsed_s / max(self.step, 1)

    @property
    def run_eta_s(self) -> float:
        """Seconds left in the run's training (evaluation not included) at this epoch's rate."""
        return self.eta_s + (self.epochs - self.epoch) * self.steps * self.elapsed_s / max(self.step, 1)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def format_line(e: ProgressEvent) -> str:
    """``epoch 3/40 step 120/390 (31%) 412 img/s ETA epoch 0:41, run 1:02:10``."""
    pct = 100 * e.step // max(e.steps, 1)
    return (
        f"epoch {e.epoch}/{e.epochs} step {e.step}/{e.steps} ({pct}%) {e.img_per_s:.1f} img/s "
        f"ETA epoch {_clock(e.eta_s)}, run {_clock(e.run_eta_s)}"
    )


class StepMeter:
    """Rank 0's step counter: call ``start_epoch`` before an epoch, then the meter with each finished step."""

    def __init__(
        self,
        emit: Callable[[ProgressEvent], None],
        *,
        epochs: int,
        images_per_step: int,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.emit, self.epochs, self.images_per_step = emit, epochs, images_per_step
        self.interval_s, self.clock = interval_s, clock
        self.epoch, self.steps, self.start, self.last = 0, 0, 0.0, 0.0

    def start_epoch(self, epoch: int, steps: int) -> None:
        self.epoch, self.steps = epoch, steps
        self.start = self.last = self.clock()

    def __call__(self, step: int) -> None:
        """After step ``step`` (1-based): emit at the first and last step of the epoch, else every ``interval_s``."""
        now = self.clock()
        if now - self.last < self.interval_s and 1 < step < self.steps:
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = step * self.images_per_step / elapsed
        self.emit(ProgressEvent(self.epoch, self.epochs, step, self.steps, rate, elapsed))


def print_event(event: ProgressEvent) -> None:
    """The sink without a driver callback: a plain line on the worker's stdout (Ray forwards it to the driver)."""
    print(format_line(event), flush=True)


class ProgressBoard:
    """A Ray actor (``num_cpus=0``) between rank 0 and the driver: ``put`` from the worker, ``take`` drains."""

    def __init__(self) -> None:
        self.events: list[ProgressEvent] = []

    def put(self, event: ProgressEvent) -> None:
        self.events.append(event)

    def take(self) -> list[ProgressEvent]:
        events, self.events = self.events, []
        return events


class BoardRelay:
    """Driver side: a daemon thread that drains a :class:`ProgressBoard` actor into ``callback`` every ``poll_s``."""

    def __init__(self, board: Any, callback: Callable[[ProgressEvent], None], poll_s: float = 1.0) -> None:
        self.board, self.callback, self.poll_s = board, callback, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="senet-progress", daemon=True)

    def __enter__(self) -> BoardRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._drain()  # the events of the last poll interval

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            self._drain()

    def _drain(self) -> None:
        import ray

        try:
            events = ray.get(self.board.take.remote(), timeout=10)
        except Exception:  # noqa: BLE001 - progress must never fail a training run
            return
        for event in events:
            self.callback(event)


class ProgressDisplay:
    """A ``fit(on_progress=...)`` callback: a ``rich`` progress bar when ``console`` is a terminal, else one plain
    line per event. Use it as a context manager around ``fit``."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._bar: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> ProgressDisplay:
        if self.console.is_terminal:
            self._bar = Progress(
                TextColumn("[bold]epoch {task.fields[epoch]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]} img/s  ETA epoch {task.fields[eta]}, run {task.fields[run_eta]}"),
                console=self.console,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, e: ProgressEvent) -> None:
        if self._bar is None:
            self.console.print(format_line(e), highlight=False)
            return
        fields: dict[str, Any] = {
            "epoch": f"{e.epoch}/{e.epochs}",
            "rate": f"{e.img_per_s:.1f}",
            "eta": _clock(e.eta_s),
            "run_eta": _clock(e.run_eta_s),
        }
        if self._task is None:
            self._task = self._bar.add_task("train", total=e.steps, **fields)
        self._bar.update(self._task, completed=e.step, total=e.steps, **fields)


__all__ = [
    "PROGRESS_INTERVAL_S",
    "BoardRelay",
    "ProgressBoard",
    "ProgressDisplay",
    "ProgressEvent",
    "StepMeter",
    "format_line",
    "print_event",
]
