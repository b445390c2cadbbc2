"""Progress during an epoch: the meter's throttling (a fake clock, no sleeping), the line, and both displays."""

from __future__ import annotations

import io

from rich.console import Console

from senet_dist.train.progress import ProgressDisplay, ProgressEvent, StepMeter, format_line


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_meter_emits_about_every_interval_and_at_the_ends_of_each_epoch() -> None:
    clock, events = FakeClock(), []
    meter = StepMeter(events.append, epochs=2, images_per_step=64, interval_s=10.0, clock=clock)
    for epoch in (1, 2):
        meter.start_epoch(epoch, steps=100)
        for step in range(1, 101):
            clock.now += 0.5  # 2 steps/s: 128 img/s, an event every 20 steps after the first
            meter(step)
    expected = [1, 21, 41, 61, 81, 100]
    assert [(e.epoch, e.step) for e in events] == [(1, s) for s in expected] + [(2, s) for s in expected]
    second = events[1]
    assert second.img_per_s == 128.0 and second.eta_s == 39.5  # 79 steps left at 2 steps/s
    assert second.run_eta_s == 39.5 + 50.0  # plus the whole second epoch
    assert events[-1].eta_s == 0.0 and events[-1].run_eta_s == 0.0


def test_a_slow_epoch_still_reports_every_step_past_the_interval() -> None:
    """4 img/s on 2 CPU cores: every step takes longer than the interval, so each one is reported."""
    clock, events = FakeClock(), []
    meter = StepMeter(events.append, epochs=40, images_per_step=128, interval_s=10.0, clock=clock)
    meter.start_epoch(1, steps=391)
    for step in range(1, 4):
        clock.now += 32.0
        meter(step)
    assert [e.step for e in events] == [1, 2, 3]
    assert events[0].img_per_s == 4.0


def test_line_format() -> None:
    e = ProgressEvent(epoch=3, epochs=40, step=120, steps=390, img_per_s=412.26, elapsed_s=60.0)
    # 2 steps/s: 270 steps left in this epoch, 37 epochs of 390 after it
    assert format_line(e) == "epoch 3/40 step 120/390 (30%) 412.3 img/s ETA epoch 2:15, run 2:02:30"


def test_display_prints_plain_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=200)
    e = ProgressEvent(epoch=1, epochs=2, step=5, steps=10, img_per_s=3.0, elapsed_s=20.0)
    with ProgressDisplay(console) as show:
        show(e)
    assert out.getvalue().strip() == format_line(e)


def test_display_draws_a_bar_in_a_terminal() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=160)
    with ProgressDisplay(console) as show:
        show(ProgressEvent(epoch=1, epochs=2, step=5, steps=10, img_per_s=3.0, elapsed_s=20.0))
        show(ProgressEvent(epoch=1, epochs=2, step=10, steps=10, img_per_s=3.0, elapsed_s=40.0))
    text = out.getvalue()
    assert "10/10" in text and "epoch 1/2" in text and "img/s" in text
    assert "\x1b[" in text  # drawn with terminal control codes, not plain lines
