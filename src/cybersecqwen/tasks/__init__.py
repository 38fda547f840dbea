"""The CTI-Bench tasks, by name. Each module is the single owner of its prompt, extraction and scoring."""

from __future__ import annotations

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.tasks.ate import ATE
from cybersecqwen.tasks.base import PROTOCOLS, RULE_SETS, Answer, Item, Task
from cybersecqwen.tasks.mcq import MCQ
from cybersecqwen.tasks.rcm import RCM
from cybersecqwen.tasks.taa import TAA
from cybersecqwen.tasks.vsp import VSP

TASK_NAMES = ("cti-mcq", "cti-rcm", "cti-rcm-2021", "cti-vsp", "cti-ate", "cti-taa")


def get_task(name: str) -> Task:
    """A fresh task object (TAA keeps the scoring graphs it loads, so instances are not shared)."""
    factories = {
        "cti-mcq": MCQ,
        "cti-rcm": lambda: RCM("cti-rcm", "cti-rcm.tsv"),
        "cti-rcm-2021": lambda: RCM("cti-rcm-2021", "cti-rcm-2021.tsv"),
        "cti-vsp": VSP,
        "cti-ate": ATE,
        "cti-taa": TAA,
    }
    if name not in factories:
        raise CybersecqwenError(f"unknown task '{name}' (known: {', '.join(TASK_NAMES)}, or 'all')")
    return factories[name]()


def parse_task_list(spec: str) -> list[str]:
    names = [part.strip() for part in spec.split(",") if part.strip()]
    if not names:
        raise CybersecqwenError("no task given: pass --tasks with names like cti-mcq,cti-rcm or 'all'")
    if names == ["all"]:
        return list(TASK_NAMES)
    for name in names:
        get_task(name)
    return list(dict.fromkeys(names))


__all__ = ["Answer", "Item", "PROTOCOLS", "RULE_SETS", "TASK_NAMES", "Task", "get_task", "parse_task_list"]
