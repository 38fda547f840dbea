"""Supervised examples from source records, one builder per CTI task.

Every prompt goes through the task module's `build_prompt` and `messages`, so training text is the text the
model is evaluated and served on. Answers are written from the sources' facts only, never by a model, and end
the way the task's prompt asks (the CWE id, the vector, the letter, the ids on the last line).
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterator

from cvss import CVSS3

from cybersecqwen.corpus.sources.attack import AttackCatalog
from cybersecqwen.corpus.sources.capec import AttackPattern
from cybersecqwen.corpus.sources.cve import CveRecord
from cybersecqwen.corpus.sources.cwe import Weakness
from cybersecqwen.corpus.sources.misp import MispActor
from cybersecqwen.corpus.sources.release import ReleaseExample
from cybersecqwen.corpus.sources.tram import LabelledSentence
from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.ate import technique_list
from cybersecqwen.tasks.base import Item
from cybersecqwen.tasks.mcq import LETTERS
from cybersecqwen.tasks.vsp import base_score


@dataclass(frozen=True)
class Example:
    task: str
    source: str
    source_id: str
    messages: tuple[tuple[str, str], ...]  # (role, content), the assistant's answer last
    content: str = ""  # the item's own text (fields without the task's fixed instructions): what dedup compares

    def as_json(self) -> dict:
        return {"task": self.task, "source": self.source, "source_id": self.source_id,
                "messages": [{"role": r, "content": c} for r, c in self.messages]}

    @property
    def user_text(self) -> str:
        return next(c for r, c in self.messages if r == "user")


def make_example(task_name: str, source: str, source_id: str, fields: dict[str, str], answer: str) -> Example:
    task = get_task(task_name)
    messages = task.messages(Item(-1, task.build_prompt(fields), None, fields), "ctibench")
    content = " ".join(value for key, value in fields.items() if key != "TechniqueList")
    return Example(task_name, source, source_id, tuple((m["role"], m["content"]) for m in messages) + (("assistant", answer),),
                   content)


def first_sentence(text: str, limit: int = 300) -> str:
    match = re.match(r"(.+?[.!?])(\s|$)", text.strip())
    sentence = match.group(1) if match else text.strip()
    return sentence if len(sentence) <= limit else sentence[:limit].rsplit(" ", 1)[0] + "..."


# --- CTI-RCM: CVE description -> CWE -----------------------------------------------------------------------
def rcm_answer(weakness: Weakness) -> str:
    return (f"The weakness behind this vulnerability is {weakness.name} ({weakness.cwe_id}): "
            f"{first_sentence(weakness.description)}\n\n{weakness.cwe_id}")


def rcm_examples(cves: list[CveRecord], release: list[ReleaseExample], catalog: dict[str, Weakness]) -> Iterator[Example]:
    for record in cves:
        # One CWE per record: a multi-labelled CVE has no single right answer to teach.
        if len(record.cwe_ids) == 1 and record.cwe_ids[0] in catalog:
            yield make_example("cti-rcm", "cve-vulnrichment-2022-2023", record.cve_id, {"Description": record.description},
                               rcm_answer(catalog[record.cwe_ids[0]]))
    # CWE's own observed examples: a vulnerability as the catalog describes it, and the weakness it shows.
    for weakness in sorted(catalog.values(), key=lambda w: int(w.cwe_id[4:])):
        if weakness.mapping_usage in ("Prohibited", "Discouraged"):
            continue
        for reference, description in weakness.observed_examples:
            if description and len(description.split()) >= 6:
                yield make_example("cti-rcm", "mitre-cwe", f"{weakness.cwe_id}/{reference}", {"Description": description},
                                   rcm_answer(weakness))
    for number, example in enumerate(release):
        if example.cwe_id in catalog:
            yield make_example("cti-rcm", "cybersecqwen-release-rcm-2021", f"line-{number + 1}",
                               {"Description": example.description}, rcm_answer(catalog[example.cwe_id]))


# --- CTI-VSP: CVE description -> CVSS v3.1 vector ----------------------------------------------------------
METRIC_NAMES = {
    "AV": ("Attack Vector", {"N": "Network", "A": "Adjacent", "L": "Local", "P": "Physical"}),
    "AC": ("Attack Complexity", {"L": "Low", "H": "High"}),
    "PR": ("Privileges Required", {"N": "None", "L": "Low", "H": "High"}),
    "UI": ("User Interaction", {"N": "None", "R": "Required"}),
    "S": ("Scope", {"U": "Unchanged", "C": "Changed"}),
    "C": ("Confidentiality", {"N": "None", "L": "Low", "H": "High"}),
    "I": ("Integrity", {"N": "None", "L": "Low", "H": "High"}),
    "A": ("Availability", {"N": "None", "L": "Low", "H": "High"}),
}


def vsp_answer(vector: str) -> str | None:
    body = vector.split("/", 1)[1] if vector.startswith("CVSS:") else vector
    try:
        metrics = dict(part.split(":", 1) for part in body.split("/"))
    except ValueError:
        return None
    # Temporal and environmental metrics (E:P/RL:O/...) are not part of the task: keep the base eight.
    if not set(METRIC_NAMES) <= set(metrics):
        return None
    body = "/".join(f"{key}:{metrics[key]}" for key in METRIC_NAMES)
    if base_score("CVSS:3.1/" + body) is None:
        return None
    lines = [f"- {name} ({key}): {values[metrics[key]]} ({metrics[key]})" for key, (name, values) in METRIC_NAMES.items()]
    score = CVSS3("CVSS:3.1/" + body).scores()[0]
    return "\n".join(lines) + f"\n\nBase score {score}.\n\nCVSS:3.1/{body}"


def vsp_examples(cves: list[CveRecord]) -> Iterator[Example]:
    for record in cves:
        answer = vsp_answer(record.cvss_vector) if record.cvss_vector else None
        if answer:
            yield make_example("cti-vsp", "cve-vulnrichment-2022-2023", record.cve_id, {"Description": record.description}, answer)


# --- CTI-MCQ: questions generated from ATT&CK, CWE and CAPEC facts ------------------------------------------
def pick(rng: random.Random, pool: list, k: int) -> list:
    """Up to k distinct draws (small catalogs may hold fewer; mcq_example then skips the question)."""
    return rng.sample(pool, min(k, len(pool)))


class LetterBalancer:
    """Places the right answer at A, B, C, D in turn, so no letter is a shortcut."""

    def __init__(self) -> None:
        self.count = 0

    def place(self, correct: str, distractors: list[str]) -> tuple[list[str], str]:
        letter_index = self.count % 4
        self.count += 1
        options = distractors[:3]
        options.insert(letter_index, correct)
        return options, LETTERS[letter_index]


def mcq_example(source: str, source_id: str, question: str, correct: str, distractors: list[str], fact: str,
                balancer: LetterBalancer) -> Example | None:
    distractors = list(dict.fromkeys(d for d in distractors if d and d != correct))
    if len(distractors) < 3:
        return None
    options, letter = balancer.place(correct, distractors)
    fields = {"Question": question, **{f"Option {l}": o for l, o in zip(LETTERS, options)}}
    return make_example("cti-mcq", source, source_id, fields, f"{fact}\n\n{letter}")


def mcq_examples(attack: AttackCatalog | None, cwe: dict[str, Weakness] | None, capec: list[AttackPattern] | None,
                 seed: int) -> Iterator[Example]:
    rng = random.Random(seed)
    balancer = LetterBalancer()
    if attack is not None:
        yield from _attack_questions(attack, rng, balancer)
    if cwe is not None:
        yield from _cwe_questions(cwe, rng, balancer)
    if cwe is not None and capec is not None:
        yield from _capec_questions(capec, cwe, rng, balancer)


def _attack_questions(attack: AttackCatalog, rng: random.Random, balancer: LetterBalancer) -> Iterator[Example]:
    tactic_names = sorted(attack.tactics.values())
    techniques = sorted(attack.techniques.values(), key=lambda t: t.technique_id)
    main_names = sorted({t.name for t in techniques if "." not in t.technique_id})
    for t in techniques:
        if len(t.tactics) == 1 and t.tactics[0] in attack.tactics:
            tactic = attack.tactics[t.tactics[0]]
            example = mcq_example("mitre-attack-enterprise", t.technique_id,
                                  f"Which MITRE ATT&CK tactic does the technique {t.name} ({t.technique_id}) serve?", tactic,
                                  pick(rng, [n for n in tactic_names if n != tactic], 3),
                                  f"{t.name} ({t.technique_id}) belongs to the {tactic} tactic.", balancer)
            if example:
                yield example
        if "." not in t.technique_id and t.description:
            yield from filter(None, [mcq_example(
                "mitre-attack-enterprise", t.technique_id + "#description",
                f"Which ATT&CK technique does this describe: \"{first_sentence(t.description)}\"", t.name,
                pick(rng, [n for n in main_names if n != t.name], 3), f"This is {t.name} ({t.technique_id}).", balancer)])
    mitigated: dict[str, set[str]] = defaultdict(set)
    for mitigation_id, technique_id in attack.mitigates:
        mitigated[technique_id].add(mitigation_id)
    mitigation_names = {m: name for m, (name, _) in attack.mitigations.items()}
    for technique_id in sorted(mitigated):
        technique = attack.techniques.get(technique_id)
        if technique is None or "." in technique_id:
            continue
        right = sorted(mitigated[technique_id])
        correct = mitigation_names.get(rng.choice(right))
        wrong = [name for m, name in sorted(mitigation_names.items()) if m not in mitigated[technique_id]]
        if correct and len(wrong) >= 3:
            example = mcq_example("mitre-attack-enterprise", technique_id + "#mitigation",
                                  f"Which mitigation addresses the ATT&CK technique {technique.name} ({technique_id})?",
                                  correct, pick(rng, wrong, 3), f"{correct} is a documented mitigation of {technique.name}.", balancer)
            if example:
                yield example
    used: dict[str, set[str]] = defaultdict(set)
    for procedure in attack.procedures:
        used[procedure.actor_id].add(procedure.technique_id.split(".")[0])
    for actor_id in sorted(used):
        actor = attack.actors.get(actor_id)
        candidates = sorted(t for t in used[actor_id] if t in attack.techniques)
        if actor is None or not candidates:
            continue
        technique = attack.techniques[rng.choice(candidates)]
        wrong = [t.name for t in techniques if "." not in t.technique_id and t.technique_id not in used[actor_id]]
        what = "the threat group" if actor.kind == "group" else f"the {actor.kind}"
        example = mcq_example("mitre-attack-enterprise", actor_id + "#technique",
                              f"Which technique has {what} {actor.name} been documented using?", technique.name,
                              pick(rng, wrong, 3), f"ATT&CK documents {actor.name} using {technique.name} ({technique.technique_id}).",
                              balancer)
        if example:
            yield example
    detected: dict[str, set[str]] = defaultdict(set)
    for strategy_id, technique_id in attack.detects:
        detected[technique_id].add(strategy_id)
    for technique_id in sorted(detected):
        technique = attack.techniques.get(technique_id)
        if technique is None:
            continue
        strategy = attack.detection_strategies[sorted(detected[technique_id])[0]]
        wrong = [name for d, name in sorted(attack.detection_strategies.items()) if d not in detected[technique_id]]
        example = mcq_example("mitre-attack-enterprise", technique_id + "#detection",
                              f"Which detection strategy addresses the ATT&CK technique {technique.name} ({technique_id})?",
                              strategy, pick(rng, wrong, 3), f"ATT&CK lists \"{strategy}\" as a detection strategy for {technique.name}.",
                              balancer)
        if example:
            yield example


def _cwe_questions(cwe: dict[str, Weakness], rng: random.Random, balancer: LetterBalancer) -> Iterator[Example]:
    weaknesses = [w for w in sorted(cwe.values(), key=lambda w: int(w.cwe_id[4:])) if w.status != "Deprecated"]
    all_impacts = sorted({c.split(": ", 1)[1] for o in weaknesses for c in o.consequences})
    for w in weaknesses:
        if w.description:
            example = mcq_example("mitre-cwe", w.cwe_id + "#description",
                                  f"Which CWE weakness is described as: \"{first_sentence(w.description)}\"",
                                  f"{w.cwe_id}: {w.name}",
                                  [f"{o.cwe_id}: {o.name}" for o in pick(rng, weaknesses, 4) if o.cwe_id != w.cwe_id],
                                  f"The description is that of {w.cwe_id} ({w.name}).", balancer)
            if example:
                yield example
        impacts = sorted({c.split(": ", 1)[1] for c in w.consequences})
        if impacts:
            impact = rng.choice(impacts)
            example = mcq_example("mitre-cwe", w.cwe_id + "#consequence",
                                  f"Which is a common consequence of {w.cwe_id} ({w.name})?", impact,
                                  pick(rng, [i for i in all_impacts if i not in impacts], 3),
                                  f"CWE lists \"{impact}\" among the consequences of {w.cwe_id}.", balancer)
            if example:
                yield example
        parents = [cwe[p] for p in w.parents if p in cwe]
        if len(parents) == 1:
            parent = parents[0]
            example = mcq_example("mitre-cwe", w.cwe_id + "#parent",
                                  f"In the CWE Research view, which weakness is the parent of {w.cwe_id} ({w.name})?",
                                  f"{parent.cwe_id}: {parent.name}",
                                  [f"{o.cwe_id}: {o.name}" for o in pick(rng, weaknesses, 4) if o.cwe_id not in (parent.cwe_id, w.cwe_id)],
                                  f"{w.cwe_id} is a child of {parent.cwe_id} ({parent.name}).", balancer)
            if example:
                yield example


def _capec_questions(capec: list[AttackPattern], cwe: dict[str, Weakness], rng: random.Random,
                     balancer: LetterBalancer) -> Iterator[Example]:
    weaknesses = sorted(cwe.values(), key=lambda w: int(w.cwe_id[4:]))
    for pattern in capec:
        linked = [cwe[c] for c in pattern.cwe_ids if c in cwe]
        if not linked:
            continue
        right = rng.choice(linked)
        example = mcq_example("mitre-capec", pattern.capec_id,
                              f"The attack pattern {pattern.name} ({pattern.capec_id}) exploits which weakness?",
                              f"{right.cwe_id}: {right.name}",
                              [f"{w.cwe_id}: {w.name}" for w in pick(rng, weaknesses, 6) if w.cwe_id not in pattern.cwe_ids],
                              f"CAPEC lists {right.cwe_id} ({right.name}) as a weakness {pattern.capec_id} exploits.", balancer)
        if example:
            yield example


# --- CTI-ATE: text -> main technique ids ---------------------------------------------------------------------
def ate_answer(evidence: dict[str, str], names: dict[str, str]) -> str:
    ids = sorted(evidence)
    lines = [f"- {t} ({names.get(t, 'technique')}): \"{first_sentence(evidence[t], 200)}\"" for t in ids]
    return "\n".join(lines) + "\n\n" + ", ".join(ids)


def ate_examples(attack: AttackCatalog, tram: list[LabelledSentence] | None, chunk: int = 4) -> Iterator[Example]:
    names = {t: n for t, n in attack.main_techniques()}
    reference = technique_list(attack.main_techniques(), "Enterprise")
    by_actor: dict[str, list] = defaultdict(list)
    for procedure in attack.procedures:
        if procedure.actor_id.startswith("S"):
            by_actor[procedure.actor_id].append(procedure)
    for actor_id in sorted(by_actor):
        procedures = by_actor[actor_id][:8]
        evidence = {}
        for p in procedures:
            evidence.setdefault(p.technique_id.split(".")[0], p.text)
        text = " ".join(p.text for p in procedures)
        actor = attack.actors.get(actor_id)
        yield make_example("cti-ate", "mitre-attack-enterprise", actor_id + (f" {actor.url}" if actor else ""),
                           {"Platform": "Enterprise", "Description": text, "TechniqueList": reference},
                           ate_answer(evidence, names))
    if tram:
        by_document: dict[str, list[LabelledSentence]] = defaultdict(list)
        for sentence in tram:
            by_document[sentence.document].append(sentence)
        for document in sorted(by_document):
            sentences = by_document[document]
            for start in range(0, len(sentences), chunk):
                group = sentences[start : start + chunk]
                evidence = {}
                for s in group:
                    evidence.setdefault(s.technique_id.split(".")[0], s.text)
                yield make_example("cti-ate", "tram-attack-sentences", f"{document}#{start}",
                                   {"Platform": "Enterprise", "Description": " ".join(s.text for s in group), "TechniqueList": reference},
                                   ate_answer(evidence, names))


# --- CTI-TAA: redacted actor profile -> actor --------------------------------------------------------------
def redact(text: str, names: list[str]) -> str | None:
    redacted = text
    for name in sorted({n for n in names if len(n) >= 3}, key=len, reverse=True):
        redacted = re.sub(rf"(?i)(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", "[PLACEHOLDER]", redacted)
    return redacted if "[PLACEHOLDER]" in redacted and len(redacted.split()) >= 15 else None


def taa_answer(name: str, aliases: tuple[str, ...], evidence: str) -> str:
    known = f" (also tracked as {', '.join(aliases[:4])})" if aliases else ""
    return f"The activity is most consistent with {name}{known}. Basis: {evidence}\n\n{name}"


def taa_examples(attack: AttackCatalog | None, misp: list[MispActor] | None) -> Iterator[Example]:
    if attack is not None:
        for actor in sorted(attack.actors.values(), key=lambda a: a.attack_id):
            if actor.kind != "group":
                continue
            text = redact(actor.description, [actor.name, *actor.aliases])
            if text:
                yield make_example("cti-taa", "mitre-attack-enterprise", f"{actor.attack_id} {actor.url}", {"Text": text},
                                   taa_answer(actor.name, actor.aliases, first_sentence(text)))
    for actor in misp or []:
        text = redact(actor.description, [actor.name, *actor.synonyms])
        if text:
            yield make_example("cti-taa", "misp-galaxy-threat-actor", actor.name, {"Text": text},
                               taa_answer(actor.name, actor.synonyms, first_sentence(text)))


# --- server forms: CWE classification (JSON) and CTI Q&A ----------------------------------------------------
def cwe_classify_examples(cves: list[CveRecord], catalog: dict[str, Weakness]) -> Iterator[Example]:
    from cybersecqwen.tasks.serving import cwe_json

    for weakness in sorted(catalog.values(), key=lambda w: int(w.cwe_id[4:])):
        if weakness.mapping_usage in ("Prohibited", "Discouraged"):
            continue
        for reference, description in weakness.observed_examples:
            if description and len(description.split()) >= 6:
                yield make_example("cwe-classify", "mitre-cwe", f"{weakness.cwe_id}/{reference}#classify", {"Text": description},
                                   cwe_json(weakness.cwe_id, weakness.name, first_sentence(weakness.description)))
    for record in cves:
        if len(record.cwe_ids) == 1 and record.cwe_ids[0] in catalog:
            weakness = catalog[record.cwe_ids[0]]
            yield make_example("cwe-classify", "cve-vulnrichment-2022-2023", record.cve_id + "#classify",
                               {"Text": record.description}, cwe_json(weakness.cwe_id, weakness.name, first_sentence(weakness.description)))


def qa_examples(attack: AttackCatalog | None, cwe: dict[str, Weakness] | None, capec: list[AttackPattern] | None) -> Iterator[Example]:
    if attack is not None:
        for t in sorted(attack.techniques.values(), key=lambda t: t.technique_id):
            if t.description:
                tactics = ", ".join(attack.tactics.get(x, x) for x in t.tactics)
                yield make_example("cti-qa", "mitre-attack-enterprise", t.technique_id + "#qa",
                                   {"Question": f"What is the MITRE ATT&CK technique {t.technique_id} and which tactic does it serve?"},
                                   f"{t.technique_id} is {t.name} ({tactics}). {first_sentence(t.description)}")
        for actor in sorted(attack.actors.values(), key=lambda a: a.attack_id):
            if actor.kind == "group" and actor.description:
                aliases = f" Also known as {', '.join(actor.aliases[:5])}." if actor.aliases else ""
                yield make_example("cti-qa", "mitre-attack-enterprise", actor.attack_id + "#qa",
                                   {"Question": f"Who is the threat group {actor.name} ({actor.attack_id})?"},
                                   first_sentence(actor.description) + aliases)
    if cwe is not None:
        for w in sorted(cwe.values(), key=lambda w: int(w.cwe_id[4:])):
            if w.description:
                consequence = f" Typical consequence: {w.consequences[0]}." if w.consequences else ""
                yield make_example("cti-qa", "mitre-cwe", w.cwe_id + "#qa", {"Question": f"What is {w.cwe_id}?"},
                                   f"{w.cwe_id} is {w.name}: {first_sentence(w.description)}{consequence}")
    for pattern in capec or []:
        if pattern.description:
            weaknesses = f" It exploits {', '.join(pattern.cwe_ids[:4])}." if pattern.cwe_ids else ""
            yield make_example("cti-qa", "mitre-capec", pattern.capec_id + "#qa", {"Question": f"What is {pattern.capec_id}?"},
                               f"{pattern.capec_id} is the attack pattern {pattern.name}: {first_sentence(pattern.description)}{weaknesses}")
