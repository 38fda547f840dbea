"""The model gate: every request that uses the model passes here, chat and structured endpoints alike.

It owns the one lock on the model (llama.cpp contexts and HF models are not thread-safe), the bounded queue
(429 + Retry-After when full, checked before any work starts) and the per-request timeout (504). User errors
raised by the job become 400s.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Callable

from fastapi.concurrency import run_in_threadpool

from cybersecqwen.answering.deadline import DeadlinePassed, check_deadline, set_deadline  # noqa: F401 - DeadlinePassed for callers
from cybersecqwen.errors import CybersecqwenError


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        self.status, self.message, self.kind, self.headers = status, message, kind, headers or {}


def error_body(message: str, kind: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "code": code}}


class ModelGate:
    def __init__(self, max_queue: int, timeout_s: float, on_depth: Callable[[int], None] = lambda depth: None) -> None:
        self.lock = threading.Lock()  # whoever closes the backend takes it first: never free a model mid-request
        self.max_queue, self.timeout_s = max_queue, timeout_s
        self.in_flight = 0
        self.on_depth = on_depth  # the queue-depth gauge

    def admit(self) -> None:
        """429 when the queue is full; checked when a request arrives, before any of its work starts."""
        if self.in_flight >= self.max_queue:
            raise ApiError(429, f"server busy: {self.max_queue} requests queued; retry shortly", "rate_limit_error",
                           {"Retry-After": "1"})

    def take_slot(self) -> Callable[[], None]:
        """Admit (429 when full) and hold a queue slot now; returns the release (safe to call more than once). Streams
        take theirs before the response starts, so they count against the queue like every other request."""
        self.admit()
        self.in_flight += 1
        self.on_depth(self.in_flight)
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                self.in_flight -= 1
                self.on_depth(self.in_flight)
        return release

    def locked(self, job: Callable[[], Any], deadline: float | None = None) -> Callable[[], Any]:
        def run() -> Any:
            with self.lock:
                set_deadline(deadline)
                try:
                    check_deadline()  # it may have waited out its time in the queue: then it does nothing
                    return job()
                finally:
                    set_deadline(None)
        return run

    async def run(self, job: Callable[[], Any]) -> Any:
        """Run one model job in a worker thread: bounded queue (429), timeout (504, and the job stops at its next
        model call), user errors (400)."""
        release = self.take_slot()  # held while the request waits for or runs on the model
        try:
            deadline = time.monotonic() + self.timeout_s
            return await asyncio.wait_for(run_in_threadpool(self.locked(job, deadline)), timeout=self.timeout_s)
        except asyncio.TimeoutError:
            raise ApiError(504, f"the model did not answer within {self.timeout_s:.0f} s", "timeout") from None
        except CybersecqwenError as exc:
            raise ApiError(getattr(exc, "status", 400), str(exc)) from None
        finally:
            release()
