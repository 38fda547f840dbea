"""Supervised examples from source records, one registered builder per task.

A builder only maps source records to a task's fields (the prompt) and facts (the answer): the task module
renders both (`prompt_messages`, `render_answer`), so training text is the text the model is evaluated and
served on. Answers are written from the sources' facts only, never by a model.

To add a task's builder: `@builder("task-name", needs={"source": "why"})` on a `build(records, options)` generator.
"""

from __future__ import annotations

import random
import re
from collections import defaultdict
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Iterator

from cybersecqwen.catalogs.attack import AttackCatalog
from cybersecqwen.catalogs.capec import AttackPattern
from cybersecqwen.catalogs.cwe import Weakness, in_simplified_view
from cybersecqwen.datafiles import CVE_SOURCES
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.ate import technique_list
from cybersecqwen.tasks.mcq import LETTERS

Records = dict[str, Any]  # source name -> parsed records (catalogs.registry)


@dataclass(frozen=True)
class Builder:
    task: str
    needs: dict[str, str]  # sources the task cannot be built without -> what they give it
    build: Callable[[Records, "BuildOptions"], Iterable["Example"]]  # (records, options) -> examples


BUILDERS: dict[str, Builder] = {}


def builder(task: str, needs: dict[str, str] | None = None):
    """Register `build(records, options)` as the corpus builder of `task`; registration order is build order."""

    def register(build: Callable[[Records, "BuildOptions"], Iterable["Example"]]):
        BUILDERS[task] = Builder(task, needs or {}, build)
        return build

    return register


@dataclass(frozen=True)
class BuildOptions:
    """What the recipe's data section tells the builders (config.DataConfig's fields of the same names)."""

    seed: int = 0
    cwe_labels: str = "view-1003"  # or "as-given": see DataConfig.cwe_labels


def build_examples(tasks: Iterable[str], records: Records, options: BuildOptions) -> list["Example"]:
    """Examples of the named tasks, in registration order (dedup keeps the first copy, so order is part of the corpus)."""
    examples: list[Example] = []
    for name, entry in BUILDERS.items():
        if name not in tasks:
            continue
        for source, purpose in entry.needs.items():
            if source not in records:
                raise CybersecqwenError(f"task {name} needs the source {source} ({purpose}) in data.sources")
        # A builder yields None where the facts do not make an example (a question without 3 distractors).
        examples += [example for example in entry.build(records, options) if example is not None]
    return examples


@dataclass(frozen=True)
class Example:
    task: str
    source: str
    source_id: str
    messages: tuple[tuple[str, str], ...]  # (role, content), the assistant's answer last
    content: str = ""  # the item's own text (fields without the task's fixed instructions): what dedup compares
    source_label: str = ""  # the source's own label where the answer teaches another (a CNA's CWE-121 taught as CWE-787)
    # CTI-ATE examples: the labelled sentences the text was joined from, (technique or sub-technique id, sentence);
    # the heads' sentence-level ATT&CK classifier learns from them (heads/train.py).
    sentences: tuple[tuple[str, str], ...] = ()

    def as_json(self) -> dict:
        row = {"task": self.task, "source": self.source, "source_id": self.source_id,
               "messages": [{"role": r, "content": c} for r, c in self.messages]}
        if self.source_label:
            row["source_label"] = self.source_label
        if self.sentences:
            row["sentences"] = [list(pair) for pair in self.sentences]
        return row

    @property
    def user_text(self) -> str:
        return next(c for r, c in self.messages if r == "user")


def make_example(task_name: str, source: str, source_id: str, fields: dict[str, str], **facts: Any) -> Example | None:
    """One example: the task renders the prompt from the fields and the answer from the facts."""
    task = get_task(task_name)
    messages = task.prompt_messages(fields)
    answer = task.render_answer(**facts)
    if answer is None:  # facts the task cannot state (a CVSS vector without all eight base metrics)
        return None
    content = " ".join(value for key, value in fields.items() if key != "TechniqueList")
    return Example(task_name, source, source_id, tuple((m["role"], m["content"]) for m in messages) + (("assistant", answer),),
                   content)


def first_sentence(text: str, limit: int = 300) -> str:
    match = re.match(r"(.+?[.!?])(\s|$)", text.strip())
    sentence = match.group(1) if match else text.strip()
    return sentence if len(sentence) <= limit else sentence[:limit].rsplit(" ", 1)[0] + "..."


# --- CTI-RCM: CVE description -> CWE -----------------------------------------------------------------------
def weakness_facts(weakness: Weakness) -> dict[str, str]:
    return {"cwe_id": weakness.cwe_id, "name": weakness.name}


def cve_records(records: Records) -> Iterator[tuple[str, Any]]:
    """(source, record) of every CVE source the recipe reads, oldest source first."""
    for source in CVE_SOURCES:
        for record in records.get(source, []):
            yield source, record


def labelled_cves(records: Records, catalog: dict[str, Weakness], options: BuildOptions) -> Iterator[tuple[str, Any, Weakness, str]]:
    """(source, record, the weakness taught, the source's own label where it differs). One CWE per record: a
    multi-labelled CVE has no single right answer to teach. Under cwe_labels "view-1003" a CNA's CWE outside that
    view is taught as its nearest ancestor inside it (the label NVD, CTI-RCM's judge, would assign)."""
    for source, record in cve_records(records):
        if len(record.cwe_ids) != 1 or record.cwe_ids[0] not in catalog:
            continue
        yield source, record, *taught(record.cwe_ids[0], catalog, options)


def taught(cwe_id: str, catalog: dict[str, Weakness], options: BuildOptions) -> tuple[Weakness, str]:
    """The weakness an example teaches for a label, and the label itself where that differs (see labelled_cves)."""
    mapped = in_simplified_view(cwe_id, catalog) if options.cwe_labels == "view-1003" else None
    return (catalog[mapped], cwe_id) if mapped and mapped != cwe_id else (catalog[cwe_id], "")


def observed_examples(catalog: dict[str, Weakness]) -> Iterator[tuple[Weakness, str, str]]:
    """CWE's own observed examples: a vulnerability as the catalog describes it, and the weakness it shows."""
    for weakness in sorted(catalog.values(), key=lambda w: int(w.cwe_id[4:])):
        if weakness.mapping_usage in ("Prohibited", "Discouraged"):
            continue
        for reference, description in weakness.observed_examples:
            if description and len(description.split()) >= 6:
                yield weakness, reference, description


@builder("cti-rcm", needs={"mitre-cwe": "CWE names for the answers"})
def rcm_examples(records: Records, options: BuildOptions) -> Iterator[Example]:
    catalog = records["mitre-cwe"]

    def example(source: str, source_id: str, description: str, weakness: Weakness, given: str = "") -> Example | None:
        made = make_example("cti-rcm", source, source_id, {"Description": description}, **weakness_facts(weakness),
                            explanation=first_sentence(weakness.description))
        return replace(made, source_label=given) if made and given else made

    for source, record, weakness, given in labelled_cves(records, catalog, options):
        yield example(source, record.cve_id, record.description, weakness, given)
    for weakness, reference, description in observed_examples(catalog):
        yield example("mitre-cwe", f"{weakness.cwe_id}/{reference}", description, *taught(weakness.cwe_id, catalog, options))
    for number, row in enumerate(records.get("cybersecqwen-release-rcm-2021", [])):
        if row.cwe_id in catalog:
            yield example("cybersecqwen-release-rcm-2021", f"line-{number + 1}", row.description, catalog[row.cwe_id])


# --- CTI-VSP: CVE description -> CVSS v3.1 vector ----------------------------------------------------------
@builder("cti-vsp")
def vsp_examples(records: Records, options: BuildOptions) -> Iterator[Example | None]:
    for source, record in cve_records(records):
        if record.cvss_vector:
            yield make_example("cti-vsp", source, record.cve_id, {"Description": record.description}, vector=record.cvss_vector)


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
    return make_example("cti-mcq", source, source_id, fields, fact=fact, letter=letter)


@builder("cti-mcq")
def mcq_examples(records: Records, options: BuildOptions) -> Iterator[Example | None]:
    attack, cwe, capec = records.get("mitre-attack-enterprise"), records.get("mitre-cwe"), records.get("mitre-capec")
    rng = random.Random(options.seed)
    balancer = LetterBalancer()
    if attack is not None:
        yield from _attack_questions(attack, rng, balancer)
    if cwe is not None:
        yield from _cwe_questions(cwe, rng, balancer)
    if cwe is not None and capec is not None:
        yield from _capec_questions(capec, cwe, rng, balancer)
    # Questions of the shapes CTI-MCQ asks (what an actor did, what a mitigation involves, what a CWE recommends in a
    # phase, a CAPEC pattern's skills, mitigations and consequences): the answers are sentences, not catalog names, so
    # choosing the answerer's settings on them measures what CTI-MCQ measures (issue 36.3).
    if attack is not None:
        yield from _attack_shaped_questions(attack, rng, balancer)
    if cwe is not None:
        yield from _cwe_shaped_questions(cwe, rng, balancer)
    if capec is not None:
        yield from _capec_shaped_questions(capec, rng, balancer)


def _attack_questions(attack: AttackCatalog, rng: random.Random, balancer: LetterBalancer) -> Iterator[Example | None]:
    tactic_names = sorted(attack.tactics.values())
    techniques = sorted(attack.techniques.values(), key=lambda t: t.technique_id)
    main_names = sorted({t.name for t in techniques if "." not in t.technique_id})
    for t in techniques:
        if len(t.tactics) == 1 and t.tactics[0] in attack.tactics:
            tactic = attack.tactics[t.tactics[0]]
            yield mcq_example("mitre-attack-enterprise", t.technique_id,
                              f"Which MITRE ATT&CK tactic does the technique {t.name} ({t.technique_id}) serve?", tactic,
                              pick(rng, [n for n in tactic_names if n != tactic], 3),
                              f"{t.name} ({t.technique_id}) belongs to the {tactic} tactic.", balancer)
        if "." not in t.technique_id and t.description:
            yield mcq_example("mitre-attack-enterprise", t.technique_id + "#description",
                              f"Which ATT&CK technique does this describe: \"{first_sentence(t.description)}\"", t.name,
                              pick(rng, [n for n in main_names if n != t.name], 3), f"This is {t.name} ({t.technique_id}).",
                              balancer)
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
            yield mcq_example("mitre-attack-enterprise", technique_id + "#mitigation",
                              f"Which mitigation addresses the ATT&CK technique {technique.name} ({technique_id})?",
                              correct, pick(rng, wrong, 3), f"{correct} is a documented mitigation of {technique.name}.", balancer)
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
        yield mcq_example("mitre-attack-enterprise", actor_id + "#technique",
                          f"Which technique has {what} {actor.name} been documented using?", technique.name,
                          pick(rng, wrong, 3), f"ATT&CK documents {actor.name} using {technique.name} ({technique.technique_id}).",
                          balancer)
    detected: dict[str, set[str]] = defaultdict(set)
    for strategy_id, technique_id in attack.detects:
        detected[technique_id].add(strategy_id)
    for technique_id in sorted(detected):
        technique = attack.techniques.get(technique_id)
        if technique is None:
            continue
        strategy = attack.detection_strategies[sorted(detected[technique_id])[0]]
        wrong = [name for d, name in sorted(attack.detection_strategies.items()) if d not in detected[technique_id]]
        yield mcq_example("mitre-attack-enterprise", technique_id + "#detection",
                          f"Which detection strategy addresses the ATT&CK technique {technique.name} ({technique_id})?",
                          strategy, pick(rng, wrong, 3), f"ATT&CK lists \"{strategy}\" as a detection strategy for {technique.name}.",
                          balancer)


def _cwe_questions(cwe: dict[str, Weakness], rng: random.Random, balancer: LetterBalancer) -> Iterator[Example | None]:
    weaknesses = [w for w in sorted(cwe.values(), key=lambda w: int(w.cwe_id[4:])) if w.status != "Deprecated"]
    all_impacts = sorted({c.split(": ", 1)[1] for o in weaknesses for c in o.consequences})
    for w in weaknesses:
        if w.description:
            yield mcq_example("mitre-cwe", w.cwe_id + "#description",
                              f"Which CWE weakness is described as: \"{first_sentence(w.description)}\"",
                              f"{w.cwe_id}: {w.name}",
                              [f"{o.cwe_id}: {o.name}" for o in pick(rng, weaknesses, 4) if o.cwe_id != w.cwe_id],
                              f"The description is that of {w.cwe_id} ({w.name}).", balancer)
        impacts = sorted({c.split(": ", 1)[1] for c in w.consequences})
        if impacts:
            impact = rng.choice(impacts)
            yield mcq_example("mitre-cwe", w.cwe_id + "#consequence",
                              f"Which is a common consequence of {w.cwe_id} ({w.name})?", impact,
                              pick(rng, [i for i in all_impacts if i not in impacts], 3),
                              f"CWE lists \"{impact}\" among the consequences of {w.cwe_id}.", balancer)
        parents = [cwe[p] for p in w.parents if p in cwe]
        if len(parents) == 1:
            parent = parents[0]
            yield mcq_example("mitre-cwe", w.cwe_id + "#parent",
                              f"In the CWE Research view, which weakness is the parent of {w.cwe_id} ({w.name})?",
                              f"{parent.cwe_id}: {parent.name}",
                              [f"{o.cwe_id}: {o.name}" for o in pick(rng, weaknesses, 4) if o.cwe_id not in (parent.cwe_id, w.cwe_id)],
                              f"{w.cwe_id} is a child of {parent.cwe_id} ({parent.name}).", balancer)


def _capec_questions(capec: list[AttackPattern], cwe: dict[str, Weakness], rng: random.Random,
                     balancer: LetterBalancer) -> Iterator[Example | None]:
    weaknesses = sorted(cwe.values(), key=lambda w: int(w.cwe_id[4:]))
    for pattern in capec:
        linked = [cwe[c] for c in pattern.cwe_ids if c in cwe]
        if not linked:
            continue
        right = rng.choice(linked)
        yield mcq_example("mitre-capec", pattern.capec_id,
                          f"The attack pattern {pattern.name} ({pattern.capec_id}) exploits which weakness?",
                          f"{right.cwe_id}: {right.name}",
                          [f"{w.cwe_id}: {w.name}" for w in pick(rng, weaknesses, 6) if w.cwe_id not in pattern.cwe_ids],
                          f"CAPEC lists {right.cwe_id} ({right.name}) as a weakness {pattern.capec_id} exploits.", balancer)


def _without_lead(text: str, names: list[str]) -> str:
    """A sentence about an actor as an option: its name replaced by "It" where it leads ("APT28 has used ..." ->
    "It has used ..."), so the option does not give the question away."""
    for name in sorted(names, key=len, reverse=True):
        if text.startswith(name + " "):
            return "It " + text[len(name) + 1:]
    return text


def _attack_shaped_questions(attack: AttackCatalog, rng: random.Random, balancer: LetterBalancer) -> Iterator[Example | None]:
    from cybersecqwen.catalogs.attack import clean

    by_actor: dict[str, list] = defaultdict(list)
    for procedure in attack.procedures:
        if procedure.actor_id in attack.actors and len(procedure.text.split()) >= 6:
            by_actor[procedure.actor_id].append(procedure)
    actors = sorted(by_actor)
    for actor_id in actors:
        actor = attack.actors[actor_id]
        procedure = rng.choice(by_actor[actor_id])
        technique = attack.techniques.get(procedure.technique_id)
        if technique is None:
            continue
        names = [actor.name, *actor.aliases]
        correct = _without_lead(first_sentence(clean(procedure.text)), names)
        wrong = []
        for other_id in pick(rng, [a for a in actors if a != actor_id], 8):
            other = rng.choice(by_actor[other_id])
            if other.technique_id != procedure.technique_id:
                wrong.append(_without_lead(first_sentence(clean(other.text)), [attack.actors[other_id].name, *attack.actors[other_id].aliases]))
        what = "the threat group" if actor.kind == "group" else f"the {actor.kind}"
        yield mcq_example("mitre-attack-enterprise", f"{actor_id}#{procedure.technique_id}#procedure",
                          f"Which action has {what} {actor.name} been documented performing ({technique.name})?", correct, wrong[:3],
                          f"ATT&CK's procedure example for {actor.name} under {technique.name} ({technique.technique_id}).", balancer)
    users: dict[str, set[str]] = defaultdict(set)
    for procedure in attack.procedures:
        if procedure.actor_id in attack.actors:
            users[procedure.technique_id].add(procedure.actor_id)
    software = sorted(a for a, actor in attack.actors.items() if actor.kind != "group")
    for technique_id in sorted(users):
        technique = attack.techniques.get(technique_id)
        right = sorted(a for a in users[technique_id] if a in software)
        if technique is None or not right:
            continue
        wrong = [attack.actors[a].name for a in pick(rng, [a for a in software if a not in users[technique_id]], 3)]
        correct = attack.actors[rng.choice(right)].name
        yield mcq_example("mitre-attack-enterprise", f"{technique_id}#software",
                          f"Which of the following software has been documented using {technique.name} ({technique_id})?",
                          correct, wrong, f"ATT&CK documents {correct} using {technique.name}.", balancer)
    names = {m: name for m, (name, _) in attack.mitigations.items()}
    for mitigation_id, (name, description) in sorted(attack.mitigations.items()):
        sentence = first_sentence(clean(description))
        if len(sentence.split()) < 6:
            continue
        # "Remote Data Storage focuses on moving critical data ..." -> "moving critical data ...": the name goes.
        lead = re.sub(rf"(?i)^{re.escape(name)}\s+(?:is|are|involves|refers to|focuses on)\s+", "", sentence)
        yield mcq_example("mitre-attack-enterprise", f"{mitigation_id}#involves",
                          f"Which ATT&CK mitigation involves the following: \"{lead}\"", name,
                          pick(rng, [n for m, n in sorted(names.items()) if m != mitigation_id and n != name], 3),
                          f"The mitigation is {name} ({mitigation_id}).", balancer)


def _phase_items(items: tuple[str, ...]) -> list[tuple[str, str]]:
    """("Architecture and Design", first sentence) of catalog entries written "Phase: text"."""
    out = []
    for item in items:
        phase, _, text = item.partition(": ")
        if text and len(phase) <= 40 and len(text.split()) >= 6:
            out.append((phase, first_sentence(text)))
    return out


def _cwe_shaped_questions(cwe: dict[str, Weakness], rng: random.Random, balancer: LetterBalancer) -> Iterator[Example | None]:
    weaknesses = [w for w in sorted(cwe.values(), key=lambda w: int(w.cwe_id[4:])) if w.status != "Deprecated"]
    pool = [(w.cwe_id, phase, text) for w in weaknesses for phase, text in _phase_items(w.extra.get("mitigations", ()))]
    for w in weaknesses:
        own = _phase_items(w.extra.get("mitigations", ()))
        if not own:
            continue
        phase, correct = rng.choice(own)
        wrong = [text for cwe_id, other_phase, text in pick(rng, pool, 12) if cwe_id != w.cwe_id and text != correct]
        yield mcq_example("mitre-cwe", f"{w.cwe_id}#mitigation",
                          f"What mitigation does {w.cwe_id} ({w.name}) recommend during the {phase} phase?", correct, wrong[:3],
                          f"CWE lists this mitigation for {w.cwe_id} ({phase}).", balancer)


def _capec_shaped_questions(capec: list[AttackPattern], rng: random.Random, balancer: LetterBalancer) -> Iterator[Example | None]:
    patterns = sorted(capec, key=lambda p: int(p.capec_id.split("-")[1]))
    for field_name, question, fact in (
            ("skills", "Which skill is required for executing a {id} ({name}) attack?", "CAPEC lists this skill for {id}."),
            ("mitigations", "What is a mitigation for preventing {name} ({id})?", "CAPEC lists this mitigation for {id}."),
            ("consequences", "What is a possible consequence of {name} ({id})?", "CAPEC lists this consequence for {id}.")):
        def values(pattern: AttackPattern) -> list[str]:
            raw = getattr(pattern, field_name)
            if field_name == "consequences":
                return sorted({c.split(": ", 1)[-1] for c in raw})
            return [first_sentence(v.split(": ", 1)[-1]) for v in raw if len(v.split()) >= 5]

        pool = [(p.capec_id, v) for p in patterns for v in values(p)]
        for pattern in patterns:
            own = values(pattern)
            if not own:
                continue
            correct = rng.choice(own)
            wrong = [v for capec_id, v in pick(rng, pool, 12) if capec_id != pattern.capec_id and v not in own]
            yield mcq_example("mitre-capec", f"{pattern.capec_id}#{field_name}", question.format(id=pattern.capec_id, name=pattern.name),
                              correct, wrong[:3], fact.format(id=pattern.capec_id), balancer)


# --- CTI-ATE: text -> main technique ids ---------------------------------------------------------------------
def first_evidence(labelled: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Main technique id -> the first sentence quoting it, from (technique or sub-technique id, text) pairs."""
    evidence: dict[str, str] = {}
    for technique_id, text in labelled:
        evidence.setdefault(technique_id.split(".")[0], first_sentence(text, 200))
    return evidence


@builder("cti-ate", needs={"mitre-attack-enterprise": "the technique reference list"})
def ate_examples(records: Records, options: BuildOptions, chunk: int = 4) -> Iterator[Example]:
    attack: AttackCatalog = records["mitre-attack-enterprise"]
    names = dict(attack.main_techniques())
    reference = technique_list(attack.main_techniques(), "Enterprise")

    def example(source: str, source_id: str, labelled: list[tuple[str, str]]) -> Example | None:
        fields = {"Platform": "Enterprise", "Description": " ".join(text for _, text in labelled), "TechniqueList": reference}
        made = make_example("cti-ate", source, source_id, fields, evidence=first_evidence(labelled), names=names)
        return replace(made, sentences=tuple(labelled)) if made else None

    # Every procedure example of every software and group, eight to an example: the sentence classifier learns from
    # each sentence. The actor's page URL is in the source id, so decontamination drops every example of a software
    # page a CTI-ATE item was written from (and counts its sentences).
    by_actor: dict[str, list] = defaultdict(list)
    for procedure in attack.procedures:
        by_actor[procedure.actor_id].append(procedure)
    for actor_id in sorted(by_actor):
        actor = attack.actors.get(actor_id)
        procedures = by_actor[actor_id]
        for start in range(0, len(procedures), 8):
            yield example("mitre-attack-enterprise", actor_id + (f"#{start}" if start else "") + (f" {actor.url}" if actor else ""),
                          [(p.technique_id, p.text) for p in procedures[start:start + 8]])
    by_document: dict[str, list] = defaultdict(list)
    for sentence in records.get("tram-attack-sentences") or []:
        by_document[sentence.document].append(sentence)
    for document in sorted(by_document):
        sentences = by_document[document]
        for start in range(0, len(sentences), chunk):
            yield example("tram-attack-sentences", f"{document}#{start}",
                          [(s.technique_id, s.text) for s in sentences[start : start + chunk]])


# --- CTI-TAA: redacted actor profile -> actor --------------------------------------------------------------
def redact(text: str, names: list[str]) -> str | None:
    redacted = text
    for name in sorted({n for n in names if len(n) >= 3}, key=len, reverse=True):
        redacted = re.sub(rf"(?i)(?<![A-Za-z0-9]){re.escape(name)}(?![A-Za-z0-9])", "[PLACEHOLDER]", redacted)
    return redacted if "[PLACEHOLDER]" in redacted and len(redacted.split()) >= 15 else None


@builder("cti-taa")
def taa_examples(records: Records, options: BuildOptions) -> Iterator[Example | None]:
    attack = records.get("mitre-attack-enterprise")
    groups = sorted((a for a in attack.actors.values() if a.kind == "group"), key=lambda a: a.attack_id) if attack else []
    profiles = [("mitre-attack-enterprise", f"{a.attack_id} {a.url}", a.name, a.aliases, a.description) for a in groups]
    profiles += [("misp-galaxy-threat-actor", a.name, a.name, a.synonyms, a.description)
                 for a in records.get("misp-galaxy-threat-actor") or []]
    for source, source_id, name, aliases, description in profiles:
        text = redact(description, [name, *aliases])
        if text:
            yield make_example("cti-taa", source, source_id, {"Text": text}, name=name, aliases=aliases,
                               evidence=first_sentence(text))


# --- server forms: CWE classification (JSON) and CTI Q&A ----------------------------------------------------
@builder("cwe-classify", needs={"mitre-cwe": "the CWE catalog"})
def cwe_classify_examples(records: Records, options: BuildOptions) -> Iterator[Example]:
    catalog = records["mitre-cwe"]
    labelled = [(*taught(weakness.cwe_id, catalog, options), f"{weakness.cwe_id}/{reference}#classify", "mitre-cwe", description)
                for weakness, reference, description in observed_examples(catalog)]
    labelled += [(weakness, given, record.cve_id + "#classify", source, record.description)
                 for source, record, weakness, given in labelled_cves(records, catalog, options)]
    for weakness, given, source_id, source, text in labelled:
        made = make_example("cwe-classify", source, source_id, {"Text": text}, **weakness_facts(weakness),
                            justification=first_sentence(weakness.description))
        yield replace(made, source_label=given) if made and given else made


@builder("cti-qa")
def qa_examples(records: Records, options: BuildOptions) -> Iterator[Example]:
    attack, cwe, capec = records.get("mitre-attack-enterprise"), records.get("mitre-cwe"), records.get("mitre-capec")
    pairs: list[tuple[str, str, str, str]] = []  # (source, source id, question, answer)
    if attack is not None:
        for t in sorted(attack.techniques.values(), key=lambda t: t.technique_id):
            if t.description:
                tactics = ", ".join(attack.tactics.get(x, x) for x in t.tactics)
                pairs.append(("mitre-attack-enterprise", t.technique_id + "#qa",
                              f"What is the MITRE ATT&CK technique {t.technique_id} and which tactic does it serve?",
                              f"{t.technique_id} is {t.name} ({tactics}). {first_sentence(t.description)}"))
        for actor in sorted(attack.actors.values(), key=lambda a: a.attack_id):
            if actor.kind == "group" and actor.description:
                aliases = f" Also known as {', '.join(actor.aliases[:5])}." if actor.aliases else ""
                pairs.append(("mitre-attack-enterprise", actor.attack_id + "#qa",
                              f"Who is the threat group {actor.name} ({actor.attack_id})?", first_sentence(actor.description) + aliases))
    for w in sorted((cwe or {}).values(), key=lambda w: int(w.cwe_id[4:])):
        if w.description:
            consequence = f" Typical consequence: {w.consequences[0]}." if w.consequences else ""
            pairs.append(("mitre-cwe", w.cwe_id + "#qa", f"What is {w.cwe_id}?",
                          f"{w.cwe_id} is {w.name}: {first_sentence(w.description)}{consequence}"))
    for pattern in capec or []:
        if pattern.description:
            weaknesses = f" It exploits {', '.join(pattern.cwe_ids[:4])}." if pattern.cwe_ids else ""
            pairs.append(("mitre-capec", pattern.capec_id + "#qa", f"What is {pattern.capec_id}?",
                          f"{pattern.capec_id} is the attack pattern {pattern.name}: {first_sentence(pattern.description)}{weaknesses}"))
    for source, source_id, question, answer in pairs:
        yield make_example("cti-qa", source, source_id, {"Question": question}, answer=answer)
