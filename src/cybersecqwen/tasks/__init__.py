"""The CTI-Bench tasks, by name. Each module is the single owner of its prompt, extraction and scoring."""

from __future__ import annotations

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.tasks.ate import ATE
from cybersecqwen.tasks.base import PROTOCOLS, RULE_SETS, Answer, Item, Task
from cybersecqwen.tasks.mcq import MCQ
from cybersecqwen.tasks.rcm import RCM
from cybersecqwen.tasks.serving import CtiQA, CweClassify
from cybersecqwen.tasks.taa import TAA
from cybersecqwen.tasks.vsp import VSP

TASK_NAMES = ("cti-mcq", "cti-rcm", "cti-rcm-2021", "cti-vsp", "cti-ate", "cti-taa")
# Structured forms of the server, without a benchmark file (see tasks/serving.py).
SERVING_TASK_NAMES = ("cwe-classify", "cti-qa")


def get_task(name: str) -> Task:
    """A fresh task object (TAA keeps the scoring graphs it loads, so instances are not shared)."""
    factories = {
        "cti-mcq": MCQ,
        "cti-rcm": lambda: RCM("cti-rcm", "cti-rcm.tsv"),
        "cti-rcm-2021": lambda: RCM("cti-rcm-2021", "cti-rcm-2021.tsv"),
        "cti-vsp": VSP,
        "cti-ate": ATE,
        "cti-taa": TAA,
        "cwe-classify": CweClassify,
        "cti-qa": CtiQA,
    }
    if name not in factories:
        raise CybersecqwenError(f"unknown task '{name}' (known: {', '.join(TASK_NAMES + SERVING_TASK_NAMES)}, or 'all')")
    return factories[name]()


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


__all__ = ["Answer", "Item", "PROTOCOLS", "RULE_SETS", "SERVING_TASK_NAMES", "TASK_NAMES", "Task", "get_task", "parse_task_list"]
