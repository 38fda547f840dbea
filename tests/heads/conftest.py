"""A synthetic corpus large enough to train every head but the actor's, written in the tasks' own formats."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from cybersecqwen.tasks import get_task
from cybersecqwen.tasks.ate import technique_list
from tests.corpus.conftest import source_mirror  # noqa: F401 - the CWE catalog the heads check labels against

PRODUCTS = ["Acme Portal", "Zeta CMS", "Orion Router", "Helix Mail", "Nimbus Shop", "Vega ERP", "Lumen Wiki", "Quark VPN"]
CWE_TEXTS = {
    "CWE-79": "Cross-site scripting in the {p} comment form lets remote attackers inject arbitrary web script or HTML via the {f} field.",
    "CWE-89": "SQL injection in {p} allows attackers to execute arbitrary SQL commands via the {f} parameter of the login query.",
    "CWE-22": "Path traversal in {p} lets attackers read arbitrary files via ../ sequences in the {f} filename argument.",
    "CWE-787": "Out-of-bounds write in the {p} image parser allows a heap buffer overflow via a crafted {f} chunk length.",
}
VSP = [("A remote unauthenticated attacker can fully compromise {p} over the network via {f}.",
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"),
       ("A local authenticated user of {p} who tricks an admin into opening {f} gains limited access beyond its scope.",
        "CVSS:3.1/AV:L/AC:H/PR:L/UI:R/S:C/C:L/I:L/A:N")]
ATE = {"T1071": ("Application Layer Protocol", "The implant beacons to its C2 server over HTTPS from {p}."),
       "T1070": ("Indicator Removal", "The operators clear event logs on {p} to hide the intrusion."),
       "T1083": ("File and Directory Discovery", "The malware enumerates directories and lists files on {p}.")}
FIELDS = ["name", "id", "title", "path", "size", "token", "query", "header"]


def example(task_name: str, source: str, source_id: str, fields: dict, **facts) -> dict:
    task = get_task(task_name)
    messages = task.prompt_messages(fields) + [{"role": "assistant", "content": task.render_answer(**facts)}]
    return {"task": task_name, "source": source, "source_id": source_id, "messages": messages}


def synthetic_examples(per_label: int = 30) -> list[dict]:
    rng = random.Random(7)
    rows, number = [], 0
    for cwe_id, template in CWE_TEXTS.items():
        for _ in range(per_label):
            number += 1
            text = template.format(p=rng.choice(PRODUCTS), f=rng.choice(FIELDS))
            rows.append(example("cti-rcm", "cve-vulnrichment-2022-2023", f"CVE-2023-{1000 + number}", {"Description": text},
                                cwe_id=cwe_id, name=cwe_id, explanation="synthetic"))
    for template, vector in VSP:
        for _ in range(per_label * 2):
            number += 1
            text = template.format(p=rng.choice(PRODUCTS), f=rng.choice(FIELDS))
            rows.append(example("cti-vsp", "cve-vulnrichment-2022-2023", f"CVE-2023-{1000 + number}", {"Description": text}, vector=vector))
    reference = technique_list([(t, name) for t, (name, _) in ATE.items()])
    for start in range(per_label * 6):
        chosen = rng.sample(sorted(ATE), rng.choice([1, 2]))
        sentences = [(t, ATE[t][1].format(p=f"{rng.choice(PRODUCTS)} host {rng.randrange(100)}")) for t in chosen]
        rows.append({**example("cti-ate", "tram-attack-sentences", f"doc-{start}#0",
                               {"Platform": "Enterprise", "Description": " ".join(s for _, s in sentences), "TechniqueList": reference},
                               evidence={t: ATE[t][1] for t in chosen}, names={t: ATE[t][0] for t in ATE}),
                     "sentences": [list(pair) for pair in sentences]})  # as the corpus writes CTI-ATE examples
    return rows


def write_corpus(folder: Path, rows: list[dict], val_every: int = 5) -> Path:
    folder.mkdir(parents=True)
    train = [r for i, r in enumerate(rows) if i % val_every]
    val = [r for i, r in enumerate(rows) if not i % val_every]
    for name, split in (("train.jsonl", train), ("val.jsonl", val)):
        (folder / name).write_text("".join(json.dumps(r) + "\n" for r in split))
    (folder / "manifest.json").write_text(json.dumps({"recipe": "synthetic", "counts": {"train": len(train), "val": len(val)}}))
    return folder


@pytest.fixture
def heads_corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path / "corpus", synthetic_examples())


@pytest.fixture
def trained_heads(heads_corpus: Path, source_mirror: Path, tmp_path: Path) -> Path:  # noqa: F811
    from cybersecqwen.heads.train import train_heads

    train_heads(heads_corpus, tmp_path / "heads", source_mirror)
    return tmp_path / "heads"
