"""Progress outside a terminal: a log file hears from long work at least every 30 s (here: every 0.2 s)."""

from __future__ import annotations

import io
import time

from cybersecqwen import progress


def test_log_lines_say_what_how_far_how_long_and_how_much_is_left(monkeypatch):
    monkeypatch.setattr(progress, "interactive", lambda: False)
    out = io.StringIO()
    lines = progress.LogLines(every=0.05, stream=out)
    with lines:
        bar = lines.add_task("eval cti-mcq", total=4)
        lines.advance(bar)
        time.sleep(0.06)
        lines.advance(bar)  # over `every` since the last line: a line
        lines.advance(bar, 2)
        lines.update(bar, completed=4)  # a finished bar updated again (training's last step) says nothing more
    text = out.getvalue().splitlines()
    assert sum(line.endswith("(done)") for line in text) == 1
    assert text[0].startswith("[eval cti-mcq] 0/4") and text[0].endswith("(started)")
    assert any(line.startswith("[eval cti-mcq] 2/4") and "elapsed" in line and "left" in line for line in text)
    assert text[-1].startswith("[eval cti-mcq] 4/4") and text[-1].endswith("(done)")


def test_a_heartbeat_speaks_for_a_stage_without_a_count_and_for_open_bars(monkeypatch):
    monkeypatch.setattr(progress, "interactive", lambda: False)
    out = io.StringIO()
    with progress.heartbeat("merge", every=0.2, stream=out):
        time.sleep(0.6)  # the heartbeat checks every min(5 s, every)
    assert "[merge] running" in out.getvalue() and "elapsed" in out.getvalue()

    out = io.StringIO()
    with progress.heartbeat("train", every=0.2, stream=out), progress.LogLines(stream=out) as lines:
        bar = lines.add_task("train", total=90)
        lines.update(bar, completed=12)  # under the bars' own 30 s: only the heartbeat can say it
        time.sleep(0.6)
    assert any(line.startswith("[train] 12/90") and "left" in line for line in out.getvalue().splitlines()), out.getvalue()


def test_in_a_terminal_the_rich_bars_stay(monkeypatch):
    monkeypatch.setattr(progress, "interactive", lambda: True)
    from rich.progress import Progress

    assert isinstance(progress.bars(), Progress)
