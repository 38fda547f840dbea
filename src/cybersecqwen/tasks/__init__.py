"""The CTI tasks, by name. Each module is the single owner of its task's contract (see base.Task): the prompt,
the answer the corpus trains and the choices the server scores, the answer rules, the scoring.

To add a task: write `tasks/NAME.py` with a `Task` subclass decorated `@register` (name, benchmark file and
columns, `build_prompt`, `render_answer`, `extract`, `stats`, `metrics`), import it below, and register its
corpus builder in `corpus/builders.py`. A test fails while a registered task has no builder or no scorer.
Registration order is the order of `--tasks all` and of the corpus build.
"""

from __future__ import annotations

from cybersecqwen.errors import CybersecqwenError
# Imported in registration order (the order of `--tasks all`), not alphabetically.
from cybersecqwen.tasks import mcq, rcm, vsp, ate, taa, cwe_classify, cti_qa  # noqa: F401, I001 - registers the tasks
from cybersecqwen.tasks.base import PROTOCOLS, RULE_SETS, Answer, Item, Task
from cybersecqwen.tasks.registry import TASKS, benchmark_task_names, get_task

TASK_NAMES = benchmark_task_names()
# Structured forms of the server, without a benchmark file.
SERVING_TASK_NAMES = tuple(name for name in TASKS if name not in TASK_NAMES)


def parse_task_list(spec: str) -> dict[str, int | None]:
    """`cti-mcq,cti-taa:3` -> {"cti-mcq": None, "cti-taa": 3}; 'all' is every task.

    A `:N` suffix caps that task's sample (CTI-TAA prompts run to 7k tokens, costly on a CPU).
    """
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts:
        raise CybersecqwenError("no task given: pass --tasks with names like cti-mcq,cti-rcm or 'all'")
    out: dict[str, int | None] = {}
    for part in parts:
        name, _, limit = part.partition(":")
        if limit and (not limit.isdigit() or int(limit) < 1):
            raise CybersecqwenError(f"bad task limit in '{part}': use NAME:N with N a positive integer")
        names = list(TASK_NAMES) if name == "all" else [name]
        for task_name in names:
            get_task(task_name)
            out[task_name] = int(limit) if limit else None
    return out


__all__ = ["Answer", "Item", "PROTOCOLS", "RULE_SETS", "SERVING_TASK_NAMES", "TASKS", "TASK_NAMES", "Task", "get_task",
           "parse_task_list"]
