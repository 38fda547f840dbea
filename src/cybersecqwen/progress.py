"""Progress of long work that a terminal and a log file can both show.

In a terminal: rich's live bars. When stdout is not a terminal (`make demo > demo.log`, CI, nohup), a live bar
prints nothing until it ends, so a stage looks hung for a quarter of an hour; there each bar prints one plain line
at its start, at least every `every` seconds while it advances, and at its end: what, done of total, elapsed and
the estimated time remaining.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any, Iterable, Iterator, TypeVar

T = TypeVar("T")
EVERY = 30.0  # seconds between log lines
_state = {"last_line": 0.0}
_active: list["LogLines"] = []  # bars a heartbeat may report on


def interactive() -> bool:
    return sys.stdout.isatty()


def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class LogLines:
    """The plain-line stand-in for a set of rich bars: `add_task`, `update`, `advance`, `stop`, like rich's Progress."""

    def __init__(self, every: float = EVERY, stream: Any = None) -> None:
        self.every, self.stream = every, stream
        self.bars: dict[int, dict[str, Any]] = {}

    def add_task(self, description: str, total: float | None = None, completed: float = 0, **fields: Any) -> int:
        bar_id = len(self.bars)
        now = time.perf_counter()
        self.bars[bar_id] = {"description": description, "total": total, "completed": completed, "fields": fields,
                             "start": now, "start_done": completed, "last": now}
        self._line(self.bars[bar_id], "started")
        return bar_id

    def update(self, bar_id: int, completed: float | None = None, advance: float = 0, **fields: Any) -> None:
        bar = self.bars[bar_id]
        bar["completed"] = (completed if completed is not None else bar["completed"]) + advance
        bar["fields"].update(fields)
        if bar["last"] == float("inf"):  # finished or stopped: said already
            return
        if bar["total"] is not None and bar["completed"] >= bar["total"]:
            self._line(bar, "done")
            bar["last"] = float("inf")  # said once
        elif time.perf_counter() - bar["last"] >= self.every:
            self._line(bar)

    def advance(self, bar_id: int, advance: float = 1) -> None:
        self.update(bar_id, advance=advance)

    def start(self) -> None:
        if self not in _active:
            _active.append(self)

    def stop(self) -> None:
        for bar in self.bars.values():
            if bar["last"] != float("inf"):
                self._line(bar, "stopped")
                bar["last"] = float("inf")
        if self in _active:
            _active.remove(self)

    def _line(self, bar: dict[str, Any], state: str = "") -> None:
        elapsed = time.perf_counter() - bar["start"]
        done, total = bar["completed"], bar["total"]
        rate = (done - bar["start_done"]) / elapsed if elapsed > 0 else 0.0
        remaining = f", about {clock((total - done) / rate)} left" if total and rate > 0 and done < total else ""
        of = f"{done:,.0f}/{total:,.0f}" if total is not None else f"{done:,.0f}"
        status = " ".join(str(v) for v in bar["fields"].values() if v)
        text = f"[{bar['description']}] {of}{' ' + status if status else ''}, {clock(elapsed)} elapsed{remaining}"
        print(text + (f" ({state})" if state else ""), file=self.stream or sys.stdout, flush=True)
        bar["last"] = _state["last_line"] = time.perf_counter()  # "done" and "stopped" then mark the bar said

    def report(self) -> None:
        """A line for each unfinished bar (the heartbeat's way of saying where the work is)."""
        for bar in self.bars.values():
            if bar["last"] != float("inf"):
                self._line(bar)

    def __enter__(self) -> "LogLines":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


@contextlib.contextmanager
def heartbeat(label: str, every: float = EVERY, stream: Any = None) -> Iterator[None]:
    """Outside a terminal, a line at least every `every` seconds while the block runs: the open bars' counts when
    there are any, else the label and the time elapsed (steps without a count: loading, merging, writing)."""
    if interactive():
        yield
        return
    began, stop = time.perf_counter(), threading.Event()
    _state["last_line"] = max(_state["last_line"], began)  # the stage's own "[stage] running" line was just printed

    def beat() -> None:
        while not stop.wait(min(5.0, every)):
            if time.perf_counter() - _state["last_line"] < every:
                continue
            if _active:
                for lines in list(_active):
                    lines.report()
            else:
                print(f"[{label}] running, {clock(time.perf_counter() - began)} elapsed", file=stream or sys.stdout, flush=True)
                _state["last_line"] = time.perf_counter()

    thread = threading.Thread(target=beat, name=f"heartbeat-{label}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def bars(*columns: Any, transient: bool = False) -> Any:
    """rich's Progress with these columns in a terminal, plain log lines otherwise."""
    if not interactive():
        return LogLines()
    from rich.progress import Progress

    return Progress(*columns, transient=transient)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """rich's `track` in a terminal; plain log lines otherwise."""
    if interactive():
        from rich.progress import track as rich_track

        yield from rich_track(items, description=description, total=total, transient=True)
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with LogLines() as lines:
        bar = lines.add_task(description, total=total)
        for item in items:
            yield item
            lines.advance(bar)
