"""The task registry: each task module registers its class with `@register`; everything else looks tasks up here."""

from __future__ import annotations

from typing import Callable, TypeVar

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.tasks.base import Task

TASKS: dict[str, Callable[[], Task]] = {}
T = TypeVar("T", bound=type[Task])


def register(cls: T) -> T:
    TASKS[cls.name] = cls
    return cls


def get_task(name: str) -> Task:
    """A fresh task object (TAA keeps the scoring graphs it loads, so instances are not shared)."""
    if name not in TASKS:
        raise CybersecqwenError(f"unknown task '{name}' (known: {', '.join(TASKS)}, or 'all')")
    return TASKS[name]()


def benchmark_task_names() -> tuple[str, ...]:
    """The CTI-Bench tasks: those with a benchmark file ('all' means these)."""
    return tuple(name for name, cls in TASKS.items() if cls.file_name)
