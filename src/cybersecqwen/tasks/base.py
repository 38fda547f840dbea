"""What every CTI task provides, and the shared machinery for loading and metrics.

A task owns its whole contract: the loader of its benchmark file, the prompt (per protocol, and rebuilt from
fields for new inputs), the answer the corpus trains and the part of it the server scores, the answer
extraction (per rule set), and the scoring. Scoring is expressed as per-response *sufficient statistics* (numbers that add up,
like `valid`, `correct`, `tp`) and a `metrics` function of their sums. That one shape gives the official
number, the strict number, per-trial means, bootstrap confidence intervals and paired comparisons without
any task-specific code in the evaluator.
"""

from __future__ import annotations

import csv
import json
import random
import string
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from collections import Counter
from typing import Any, Mapping

from cybersecqwen import datafiles
from cybersecqwen.errors import CybersecqwenError

# Protocols decide prompts and sampling; rule sets decide answer extraction. `robust` is the project's own
# extractor (also used by the server), shown beside the protocols' rules in the sensitivity table.
PROTOCOLS = ("ctibench", "cisco")
RULE_SETS = ("ctibench", "cisco", "robust")

CTIBENCH_SYSTEM_PROMPT = "You are a cybersecurity expert specializing in cyberthreat intelligence."

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Item:
    index: int  # 0-based row of the task's TSV file: the key responses and scores are joined on
    prompt: str  # the benchmark's Prompt column
    gold: Any
    fields: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Answer:
    value: Any  # None when nothing could be extracted
    kind: str  # "proper", "improper" or "invalid"

    @property
    def valid(self) -> bool:
        return self.value is not None


INVALID = Answer(None, "invalid")


@dataclass(frozen=True)
class AnswerForm:
    """A task's answer, declared once: the text the corpus trains, and what choice scoring scores after which prefix.

    `template` is the trained answer as a `str.format` template: `{choice}` stands where the answer names its choice
    (written by `choice`, a template of `value`, the answer, and `label`, its catalog name), `{value}` is the answer
    itself, and every other field is a fact the corpus builder supplies. The prefix choice scoring scores after is the
    fixed text before `{choice}`; when a fact comes first there is none, and choice scoring is not valid for a model
    trained on the form (its reply does not start with the choice). Training (`render`), serving and evaluation
    (`prefix`, `choice_text`) all read this one declaration; `tests/corpus/test_contract.py` proves they agree.
    """

    name: str
    template: str
    choice: str = "{value}"
    json_facts: bool = False  # facts are written as JSON strings (an answer that is a JSON object)

    def choice_text(self, value: str, label: str = "") -> str:
        return self.choice.format(value=value, label=label)

    def render(self, value: str, label: str = "", **facts: str) -> str:
        if self.json_facts:
            facts = {k: json.dumps(v, ensure_ascii=False) for k, v in facts.items()}
        return self.template.format(choice=self.choice_text(value, label), value=value, **facts)

    @property
    def prefix(self) -> str | None:
        """The fixed text before the choice, or None when a fact (or nothing: no `{choice}`) decides where it stands."""
        head = []
        for literal, field_name, _, _ in string.Formatter().parse(self.template):
            head.append(literal)
            if field_name == "choice":
                return "".join(head)
            if field_name is not None:
                return None
        return None

    def why_not_choice_scoring(self) -> str:
        return (f"answers trained in the form '{self.name}' do not start with their choice "
                f"({self.template!r}), so the first tokens of the reply say little about the choice; generate instead")


@dataclass(frozen=True)
class ProtocolSettings:
    name: str
    system_prompt: str | None
    temperature: float
    trials: int
    max_tokens: int
    seed: int = 42


def protocol_settings(protocol: str) -> ProtocolSettings:
    if protocol == "ctibench":
        # The release: temperature 0, top_p 1, seed 42, max_tokens 2048, the official system prompt.
        return ProtocolSettings("ctibench", CTIBENCH_SYSTEM_PROMPT, 0.0, 1, 2048)
    if protocol == "cisco":
        # FAITH for instruct models: 0-shot, no system prompt, T=0.3, 10 trials; 1000 tokens (instruct report).
        return ProtocolSettings("cisco", None, 0.3, 10, 1000)
    raise CybersecqwenError(f"unknown protocol '{protocol}' (choose one of: {', '.join(PROTOCOLS)})")


def read_tsv(path: Path) -> list[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise CybersecqwenError(f"{path} is not a readable UTF-8 TSV file: {exc}") from None
    if not rows:
        raise CybersecqwenError(f"{path} has no rows")
    return rows


def require_columns(path: Path, row: Mapping[str, str], columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in row]
    if missing:
        raise CybersecqwenError(f"{path} lacks column(s) {', '.join(missing)} (has: {', '.join(row)})")


class Task(ABC):
    name: str
    file_name: str = ""  # the benchmark file in the cti-bench source; "" for the server's forms (no benchmark)
    columns: tuple[str, ...] = ()
    primary_metric: str
    higher_is_better: bool = True
    protocols: tuple[str, ...] = PROTOCOLS
    # Choice scoring (`--mode logprob`) is defined only for tasks with a closed answer set.
    choices: tuple[str, ...] | None = None
    # The item's own text, without the task's fixed instructions: what decontamination compares.
    item_text_fields: tuple[str, ...] = ()
    # The form of the answer the corpus trains (see AnswerForm); None: free text, never scored by choices.
    answer_form: AnswerForm | None = None
    # A task whose prompt and answers are another's (CTI-RCM-2021 is CTI-RCM on older CVEs) trains on that
    # task's corpus examples instead of having a builder of its own.
    trained_as: str | None = None

    def __init__(self) -> None:
        # Every input file this task object has read, with its provenance (reports list them).
        self.data_files: dict[str, dict[str, Any]] = {}

    # --- data -------------------------------------------------------------------------------------------
    def load(self, data_dir: Path | str | None = None, download: bool = False) -> list[Item]:
        if not self.file_name:
            raise CybersecqwenError(f"task {self.name} has no benchmark file; it is evaluated on held-out corpus examples")
        rows = self.read_rows(self.file_name, self.columns, data_dir, download)
        return [self.make_item(i, row) for i, row in enumerate(rows)]

    def resolve_file(self, file_name: str, data_dir: Path | str | None, download: bool) -> Path:
        """A cti-bench file's path, its provenance recorded in `self.data_files` for reports."""
        path = datafiles.resolve("cti-bench", file_name, data_dir, download)
        self.data_files[file_name] = {"path": str(path), **datafiles.provenance("cti-bench", file_name, path)}
        return path

    def read_rows(self, file_name: str, columns: tuple[str, ...], data_dir: Path | str | None, download: bool) -> list[dict[str, str]]:
        """Rows of one benchmark file; its provenance is recorded in `self.data_files` for reports."""
        path = self.resolve_file(file_name, data_dir, download)
        rows = read_tsv(path)
        require_columns(path, rows[0], columns)
        return rows

    def make_item(self, index: int, row: Mapping[str, str]) -> Item:
        raise NotImplementedError(f"task {self.name} reads no benchmark rows")

    def skipped_indexes(self, protocol: str) -> frozenset[int]:
        """Rows a protocol leaves out (FAITH drops duplicate rows of RCM and VSP)."""
        return frozenset()

    # --- prompts ----------------------------------------------------------------------------------------
    def messages(self, item: Item, protocol: str) -> Messages:
        settings = protocol_settings(protocol)
        self.check_protocol(protocol)
        user = item.prompt if protocol == "ctibench" else self.cisco_prompt(item)
        system = [{"role": "system", "content": settings.system_prompt}] if settings.system_prompt else []
        return system + [{"role": "user", "content": user}]

    def check_protocol(self, protocol: str) -> None:
        if protocol not in self.protocols:
            raise CybersecqwenError(
                f"task {self.name} has no '{protocol}' protocol (it supports: {', '.join(self.protocols)})"
            )

    def cisco_prompt(self, item: Item) -> str:
        raise CybersecqwenError(f"task {self.name} has no cisco prompt")

    def build_prompt(self, fields: Mapping[str, str]) -> str:
        """The benchmark's Prompt column, rebuilt from an item's fields.

        The corpus builder and the server format new inputs with this, so a model trains and serves on the
        text it is evaluated on (a test checks it against every row of the real files).
        """
        raise CybersecqwenError(f"task {self.name} cannot build prompts for new inputs")

    def item_text(self, prompt: str) -> str:
        """The item's own text inside a prompt `build_prompt` made (the inverse, for its one text field)."""
        head, _, tail = self.build_prompt({self.item_text_fields[0]: "\x00"}).partition("\x00")
        if not prompt.startswith(head) or not prompt.endswith(tail) or len(prompt) < len(head) + len(tail):
            raise CybersecqwenError(f"a {self.name} prompt was expected (it starts with the task's instruction)")
        return prompt[len(head) : len(prompt) - len(tail)]

    def prompt_messages(self, fields: Mapping[str, str], protocol: str = "ctibench") -> Messages:
        """The chat messages for a new input: what the corpus trains on and the server sends."""
        return self.messages(Item(-1, self.build_prompt(fields), None, fields), protocol)

    @property
    def answer_prefix(self) -> str | None:
        """Where a served answer starts before the choice the server scores; None: not served by choice scoring."""
        return self.answer_form.prefix if self.answer_form else None

    def choice_text(self, value: str, label: str = "") -> str:
        """How the answer the corpus trains names one choice (an id and its catalog name), after `answer_prefix`."""
        if self.answer_prefix is None:
            raise CybersecqwenError(f"task {self.name} does not serve answers by choice scoring")
        return self.answer_form.choice_text(value, label)

    def render_answer(self, **facts: Any) -> str | None:
        """The answer the corpus trains, written from source facts in the task's answer form."""
        raise CybersecqwenError(f"task {self.name} has no trained answer")

    def answer_value(self, **facts: Any) -> Any:
        """The gold answer the facts of `render_answer` state (what `extract` must read back from the trained answer)."""
        raise CybersecqwenError(f"task {self.name} states no gold answer from facts")

    # --- base (pretrained) models: Cisco prompts them 5-shot, exemplars drawn from the benchmark itself ----
    base_instruction: str | None = None
    base_shots = 5

    def base_question(self, item: Item) -> str:
        raise CybersecqwenError(f"task {self.name} has no few-shot prompt for base models")

    def base_answer(self, item: Item) -> str:
        raise CybersecqwenError(f"task {self.name} has no few-shot prompt for base models")

    def few_shot_examples(self, pool: list[Item], trial: int, seed: int) -> list[Item]:
        """FAITH's exemplars for one trial: k rows drawn per trial, shared by every item of that trial. Those rows are
        set aside: a trial scores only the remaining rows."""
        if self.base_instruction is None:
            raise CybersecqwenError(
                f"task {self.name} has no few-shot prompt for base models; evaluate an instruct model on it"
            )
        return random.Random(f"{seed}:{trial}").sample(pool, min(self.base_shots, len(pool)))

    def few_shot_prompt(self, item: Item, examples: list[Item]) -> str:
        """FAITH's base-model prompt: the instruction, the solved examples, the question, and a final newline."""
        blocks = [self.base_instruction] + [f"{self.base_question(e)}\n{self.base_answer(e)}" for e in examples]
        return "\n\n".join(blocks + [self.base_question(item)]) + "\n"

    def choice_prefix(self, protocol: str) -> str | None:
        """Text the assistant turn starts with before the scored choice (`--mode logprob`); None: choice scoring is not
        valid for this task's answer form under the protocol (`choice_mode_refusal` says why)."""
        return self.answer_prefix

    def choice_mode_refusal(self, protocol: str) -> str | None:
        """One line refusing `--mode logprob` for this task under `protocol`, or None when choice scoring is valid."""
        if not self.choices or self.choice_prefix(protocol) is not None:
            return None
        form = self.answer_form
        reason = form.why_not_choice_scoring() if form else "its answers are free text"
        return f"task {self.name}: mode logprob is not valid for answer form '{form.name if form else 'free text'}': {reason}"

    # --- answers ----------------------------------------------------------------------------------------
    @abstractmethod
    def extract(self, response: str, rules: str) -> Answer: ...

    @abstractmethod
    def stats(self, item: Item, answer: Answer) -> dict[str, float]:
        """Additive per-response statistics; always includes `n` (1) and `valid` (0/1)."""

    @abstractmethod
    def metrics(self, totals: Mapping[str, Any], rules: str) -> dict[str, Any]:
        """Metrics from summed statistics; works element-wise on numpy arrays (for the bootstrap)."""

    @abstractmethod
    def paired_value(self, stats: Mapping[str, float]) -> float:
        """Per-item number two models are compared on (correct 0/1, item F1, deviation...)."""

    def is_binary(self) -> bool:
        return True

    def trivial_answer(self, items: list[Item]) -> Answer:
        """The majority answer of the key: the baseline a model must beat to show knowledge."""
        return Answer(Counter(item.gold for item in items).most_common(1)[0][0], "proper")

    def official_metric_names(self, rules: str) -> list[str]:
        return [self.primary_metric]


def ratio(numerator: Any, denominator: Any) -> Any:
    """numerator/denominator with 0/0 -> nan, for scalars and numpy arrays alike."""
    import numpy as np

    num = np.asarray(numerator, dtype=float)
    den = np.asarray(denominator, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return out if out.ndim else float(out)


class AccuracyTask(Task):
    """A task with one gold answer per item scored by exact match (CTI-MCQ, CTI-RCM)."""

    def stats(self, item: Item, answer: Answer) -> dict[str, float]:
        correct = float(answer.value == item.gold)
        return {
            "n": 1.0,
            "valid": float(answer.valid),
            "correct": correct,
            "correct_proper": correct if answer.kind == "proper" else 0.0,
        }

    def metrics(self, totals: Mapping[str, Any], rules: str) -> dict[str, Any]:
        return accuracy_metrics(totals, rules)

    def paired_value(self, stats: Mapping[str, float]) -> float:
        return stats["correct"]

    def official_metric_names(self, rules: str) -> list[str]:
        return ["accuracy", "lenient_accuracy"] if rules == "cisco" else ["accuracy", "strict_accuracy"]


def validity(totals: Mapping[str, Any]) -> dict[str, Any]:
    """The counts every task reports first: items, parseable answers, and the parse-failure rate."""
    n, valid = totals["n"], totals["valid"]
    return {"n": n, "valid": valid, "invalid": n - valid, "parse_failure_rate": ratio(n - valid, n)}


def accuracy_metrics(totals: Mapping[str, Any], rules: str) -> dict[str, Any]:
    """Accuracy under each rule set's denominator.

    ctibench/robust: correct over parseable answers (the release), plus strict over all items.
    cisco: FAITH's `accuracy` (proper format only) and `lenient_accuracy`, both over all items.
    """
    n, valid = totals["n"], totals["valid"]
    out = validity(totals)
    if rules == "cisco":
        out["accuracy"] = ratio(totals["correct_proper"], n)
        out["lenient_accuracy"] = ratio(totals["correct"], n)
    else:
        out["accuracy"] = ratio(totals["correct"], valid)
        out["strict_accuracy"] = ratio(totals["correct"], n)
    return out
