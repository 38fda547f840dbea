"""The deadline of the request a job works for: set by the HTTP gate (serve/gate.py) on its worker thread, checked by
every job before each model call and in its long loops, so work for a request that already got its 504 stops. Outside
the server (the CLI's `analyze`, `enrich`) no deadline is set and the checks cost nothing."""

from __future__ import annotations

import threading
import time

from cybersecqwen.errors import CybersecqwenError

_work = threading.local()  # the deadline of the job running on this worker thread


class DeadlinePassed(CybersecqwenError):
    """The request's time is up (the client already got its 504): the job stops at its next check."""


def check_deadline() -> None:
    deadline = getattr(_work, "deadline", None)
    if deadline is not None and time.monotonic() > deadline:
        raise DeadlinePassed("the request's deadline passed; its work was stopped")


def current_deadline() -> float | None:
    return getattr(_work, "deadline", None)


def set_deadline(deadline: float | None) -> None:
    _work.deadline = deadline
