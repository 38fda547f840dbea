"""The heads as a model for `cybersecqwen eval --model heads:DIR`: answers in each task's own answer form, so the
same task scorers, confidence intervals and baselines apply to them as to any language model."""

from __future__ import annotations

from pathlib import Path
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.heads.mcq import mcq_fields
from cybersecqwen.heads.model import load_heads
from cybersecqwen.models.base import BackendInfo
from cybersecqwen.tasks import Item, Task

# task -> the head that answers it ("mcq": the answerer that reads the catalogs, heads/mcq.py)
TASK_HEADS = {"cti-rcm": "cwe", "cti-rcm-2021": "cwe", "cti-vsp": "cvss-AV", "cti-ate": "attack", "cti-taa": "actor", "cti-mcq": "mcq"}
OPEN_BOOK = "open-book over the open catalogs (ATT&CK, CAPEC, CWE, MISP passages)"


def answerable(folder: Path | str) -> tuple[str, ...]:
    """The tasks these heads can answer (a head the corpus could not train answers nothing)."""
    heads = load_heads(folder)
    return tuple(task for task, head in TASK_HEADS.items()
                 if (heads.mcq_payload is not None if head == "mcq" else heads.has(head)))


class HeadsResponder:
    is_instruct = True

    def __init__(self, folder: Path | str, data_dir: Path | None = None, download: bool = False) -> None:
        self.heads = load_heads(folder)
        self.data_dir, self.download = data_dir, download
        names = sorted(self.heads.models) + (["mcq"] if self.heads.mcq_payload is not None else [])
        details = {"heads": names, "corpus_manifest_sha256": self.heads.manifest["corpus_manifest_sha256"],
                   "cve_protocol": self.heads.manifest.get("cve_protocol", "not recorded")}
        if self.heads.mcq_payload is not None:
            details["book"] = {"cti-mcq": OPEN_BOOK}  # every other task: closed-book, from the text alone
        self.info = BackendInfo("heads", f"heads:{folder}", details)

    def check(self, task: Task) -> None:
        head = TASK_HEADS.get(task.name)
        if head is None:
            raise CybersecqwenError(f"heads answer {', '.join(TASK_HEADS)}; not {task.name} (evaluate that task with a language model)")
        if head == "mcq":
            if self.heads.mcq_payload is None:
                raise CybersecqwenError(f"the heads in {self.heads.folder} have no MCQ answerer for cti-mcq: "
                                        f"{self.heads.manifest.get('skipped', {}).get('mcq', 'retrain them with this version')}")
            return
        if not self.heads.has(head):
            raise CybersecqwenError(f"the heads in {self.heads.folder} have no {head} head for {task.name}: "
                                    f"{self.heads.manifest.get('skipped', {}).get(head.split('-')[0], 'not trained')}")

    def answers(self, task: Task, items: list[Item]) -> list[str]:
        self.check(task)
        # Benchmark rows carry their text as a field; new inputs only in the prompt.
        texts = [item.fields.get(task.item_text_fields[0]) or task.item_text(item.prompt) for item in items]
        if task.name == "cti-mcq":  # open-book: the options scored against the catalogs' passages
            answerer = self.heads.mcq(self.data_dir, self.download)
            out = []
            for item in items:
                question, options = ((item.fields["Question"], [item.fields[f"Option {x}"] for x in "ABCD"]) if "Question" in item.fields
                                     else mcq_fields(item.prompt))
                choice = answerer.answer(question, options)
                out.append(task.render_answer(options[choice["best"]], "ABCD"[choice["best"]]))
            return out
        if task.name == "cti-vsp":
            return [task.render_answer(row["vector"]) for row in self.heads.cvss(texts)]
        if task.name == "cti-ate":
            names = self.heads.models["attack"].names
            return [task.render_answer({t: f"attack head probability {p:.2f}" for t, p in row}, names)
                    for row in self.heads.techniques(texts)]
        name = TASK_HEADS[task.name]
        out = []
        for row in self.heads.ranked(name, texts, 1):
            label, probability = row[0]
            evidence = f"{name} head probability {probability:.2f}"
            if task.name == "cti-taa":
                out.append(task.render_answer(label, (), evidence))
            else:
                out.append(task.render_answer(label, self.heads.models[name].names.get(label, label), evidence))
        return out

    def close(self) -> None:
        pass

