"""CTI-MCQ: 2,500 four-option questions on ATT&CK, CAPEC, CWE and CTI practice. Metric: accuracy."""

from __future__ import annotations

import re
from typing import Mapping

from cybersecqwen.tasks.base import INVALID, AccuracyTask, Answer, AnswerForm, Item
from cybersecqwen.tasks.patterns import AnswerPattern, first_match, is_refusal, strip_markdown
from cybersecqwen.tasks.registry import register

LETTERS = ("A", "B", "C", "D")

# The CTI-Bench release's prompt around the question and options (Prompt column).
CTIBENCH_HEAD = (
    "You are given a multiple-choice question (MCQ) from a Cyber Threat Intelligence (CTI) knowledge benchmark "
    "dataset. Your task is to choose the best option among the four provided. Return your answer as a single "
    "uppercase letter: A, B, C, or D.  "
)
CTIBENCH_TAIL = (
    "  **Important:** The last line of your answer should contain only the single letter corresponding to the "
    "best option, with no additional text. "
)

# FAITH's chat MCQ instruction for four options (its mcqa-template, rendered for A-D).
CISCO_INSTRUCTION = (
    "Given the following question and four candidate answers (A, B, C and D), choose the best answer. "
    "Your response should be of the following format: 'Answer: $LETTER' (without quotes) where $LETTER is "
    "one of A, B, C, or D."
)

# FAITH reads the TSV with pandas, whose default NA strings become NaN and are then written "None".
PANDAS_NA_STRINGS = frozenset(
    ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN", "<NA>",
     "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"]
)

# FAITH's answer formats for multiple choice, in order (proper first).
CISCO_PATTERNS = [
    AnswerPattern(r"(?i)\banswer\s*:\s*\(?([A-D])\b", "proper", "unique"),
    AnswerPattern(r"(?i)\banswer\s+is:?\s+(?:\(|\*\*)?([A-Z])\b", "improper", "unique"),
    AnswerPattern(r"\(([A-Z])\)", "improper", "singular"),
    AnswerPattern(r"(?i)\boption\s+([A-Z])\b", "improper", "singular"),
    # Without re.MULTILINE: only a response that is a single letter in total matches.
    AnswerPattern(r"(?i)^\W*([A-Z])\W*$", "improper", "singular"),
]

# The project's robust extractor: explicit answer statements, then the last line, then a lone "(X)".
ROBUST_STATEMENT = re.compile(
    r"(?i)\b(?:final\s+answer|correct\s+answer|best\s+answer|answer|option|choice)\s*(?:is|would be|:)?\s*:?\s*"
    r"\(?\b([A-D])\b(?:\)|\.|,|:|\s|$)"
)
ROBUST_LINE = re.compile(r"^\W*\(?([A-D])\)?(?:[).:\-\s]|$)")


# The answer forms measured for the corpus (benchmarks/mcq_answer_form.py, BENCHMARKS.md "CTI-MCQ answer form"):
# the letter alone is read by the release's last-line rule and by first-token choice scoring alike; the deciding
# fact before the letter can only be scored by generation.
ANSWER_FORMS = {
    "letter": AnswerForm("letter", "{choice}"),
    "fact-then-letter": AnswerForm("fact-then-letter", "{fact}\n\n{choice}"),
}


def ctibench_letter(response: str) -> str | None:
    """The release's rule: the last line (the one before when the last is empty) ..."""
    lines = response.split("\n")
    line = lines[-1]
    if not line.strip() and len(lines) > 1:
        line = lines[-2]
    line = line.strip()
    if line[:2] in ("A)", "B)", "C)", "D)"):
        return line[0]
    if line and line[-1] in LETTERS:
        return line[-1]
    if line.endswith("**") and len(line) >= 3 and line[-3] in LETTERS:
        return line[-3]
    return None


def robust_letter(response: str) -> str | None:
    text = strip_markdown(response)
    statements = ROBUST_STATEMENT.findall(text)
    if statements:
        return statements[-1].upper()
    for line in reversed(text.splitlines()):
        if line.strip():
            match = ROBUST_LINE.match(line.strip())
            if match:
                return match.group(1)
            break
    lone = set(re.findall(r"\(([A-D])\)", text))
    return lone.pop() if len(lone) == 1 else None


@register
class MCQ(AccuracyTask):
    name = "cti-mcq"
    file_name = "cti-mcq.tsv"
    columns = ("URL", "Question", "Option A", "Option B", "Option C", "Option D", "Prompt", "GT")
    primary_metric = "accuracy"
    choices = LETTERS
    answer_form = ANSWER_FORMS["letter"]
    # The question alone: options are short catalog names ("Execution Prevention") shared across items.
    item_text_fields = ("Question",)

    def make_item(self, index: int, row: Mapping[str, str]) -> Item:
        return Item(index, row["Prompt"], row["GT"].strip().upper(), dict(row))

    base_instruction = "The following are multiple choice questions."  # FAITH's words for base models

    def base_question(self, item: Item) -> str:
        """FAITH's question block: the question, a blank line, then "A. .." to "D. .."."""
        options = []
        for letter in LETTERS:
            text = item.fields[f"Option {letter}"]
            options.append(f"{letter}. {'None' if text in PANDAS_NA_STRINGS else text}")
        return item.fields["Question"].strip() + "\n\n" + "\n".join(options)

    def base_answer(self, item: Item) -> str:
        return f"Answer: {item.gold}"

    def build_prompt(self, fields: Mapping[str, str]) -> str:
        options = " ".join(f"{letter}) {fields[f'Option {letter}']}" for letter in LETTERS)
        return f"{CTIBENCH_HEAD}**Question:** {fields['Question']}  **Options:** {options}{CTIBENCH_TAIL}"

    def render_answer(self, fact: str, letter: str) -> str:
        """The trained answer in the task's form (the fact is written only by forms that state it)."""
        return self.answer_form.render(letter, fact=fact)

    def answer_value(self, fact: str, letter: str) -> str:
        return letter

    def cisco_prompt(self, item: Item) -> str:
        return CISCO_INSTRUCTION + "\n\n" + self.base_question(item)

    def choice_prefix(self, protocol: str) -> str | None:
        # FAITH's prompt dictates its own form, "Answer: X" (the corpus never trains it): score the letter where the
        # prompt asks for it. Under the release's prompt, the trained form decides.
        return "Answer: " if protocol == "cisco" else self.answer_prefix

    def extract(self, response: str, rules: str) -> Answer:
        if rules == "cisco":
            value, kind = first_match(response, CISCO_PATTERNS)
            return Answer(value, kind) if value is not None else INVALID
        letter = ctibench_letter(response) if rules == "ctibench" else robust_letter(response)
        if letter is not None:
            return Answer(letter, "proper")
        # The release coded refusals and errors as "X" by hand: a valid answer that is never correct.
        if is_refusal(response):
            return Answer("X", "improper")
        return INVALID
