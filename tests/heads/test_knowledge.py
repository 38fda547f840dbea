"""Issue 26: the knowledge index of the open catalogs and the open-book MCQ answerer, on the fixture catalogs; then
the answerer trained as a head, evaluated as one (open-book, never beside closed-book numbers) and served by
/v1/cti/ask with citations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cybersecqwen.errors import CybersecqwenError
from tests.corpus.conftest import source_mirror  # noqa: F401 - the fixture catalogs
from tests.heads.conftest import heads_corpus, synthetic_examples, write_corpus  # noqa: F401


@pytest.fixture
def records(source_mirror):  # noqa: F811
    from cybersecqwen.heads.knowledge import load_records

    return load_records(source_mirror)


@pytest.fixture
def index(records):
    from cybersecqwen.heads.knowledge import KnowledgeIndex

    return KnowledgeIndex.from_records(records)


def mcq_rows(records) -> list[tuple[str, list[str], int]]:
    """The corpus builder's own MCQ examples over the fixture catalogs, as (question, options, gold index)."""
    from cybersecqwen.corpus.builders import BuildOptions, mcq_examples
    from cybersecqwen.heads.mcq import mcq_fields

    rows = []
    for example in (e.as_json() for e in mcq_examples(records, BuildOptions()) if e is not None):
        question, options = mcq_fields(example["messages"][-2]["content"])
        rows.append((question, options, "ABCD".index(example["messages"][-1]["content"].strip())))
    return rows


def test_passages_keep_their_source_id_field_and_url(index):
    fields = {(p.source, p.field) for p in index.passages}
    assert {("mitre-attack-enterprise", "description"), ("mitre-attack-enterprise", "tactics"), ("mitre-attack-enterprise", "mitigation"),
            ("mitre-attack-enterprise", "procedure"), ("mitre-capec", "description"), ("mitre-cwe", "description"),
            ("mitre-cwe", "consequences"), ("misp-galaxy-threat-actor", "description")} <= fields
    mitigation = next(p for p in index.passages if p.field == "mitigation")
    assert mitigation.entry_id == "T1059" and "(M" in mitigation.text and "(T1059)" in mitigation.text
    assert mitigation.url.startswith("https://attack.mitre.org/techniques/T1059")
    cwe = next(p for p in index.passages if p.entry_id == "CWE-89")
    assert cwe.url == "https://cwe.mitre.org/data/definitions/89.html" and cwe.text.startswith("CWE-89 (")
    # Ids a question writes are looked up exactly; ids the catalogs lack are not invented.
    assert index.named_ids("Is t1059 like CWE-89, CAPEC-66 or T9999?") == ["T1059", "CWE-89", "CAPEC-66"]
    assert all(index.passages[i].entry_id == "CWE-89" for i in index.lookup("cwe-89"))


def test_a_question_finds_the_entry_it_was_written_from(index):
    top = [index.passages[i] for i, _ in index.search("Which weakness lets attackers inject SQL commands into a query?", 3)]
    assert "CWE-89" in {p.entry_id for p in top}
    assert index.search("zzzz qqqq", 5) == []  # nothing shared: nothing returned, never a guess


def test_the_answerer_learns_on_train_chooses_on_validation_and_cites(index, records):
    from cybersecqwen.heads.mcq import McqAnswerer, fit_answerer

    rows = mcq_rows(records)
    train, val = rows[::2] + rows[1::4], rows[3::4]
    answerer = fit_answerer(index, train, val)
    assert answerer.details["validation_items"] == len(val) and answerer.depth in (5, 10, 20)
    assert answerer.details["validation_accuracy"] > 0.25  # above chance over four options, on items it did not learn from
    question = "Which MITRE ATT&CK tactic does the technique Command and Scripting Interpreter (T1059) serve?"
    tactics = sorted(records["mitre-attack-enterprise"].tactics.values())[:4]
    if "Execution" not in tactics:
        tactics = tactics[:3] + ["Execution"]
    result = answerer.answer(question, tactics)
    assert tactics[result["best"]] == "Execution"
    assert abs(float(result["probabilities"].sum()) - 1) < 1e-9
    assert result["passages"][result["best"]].entry_id == "T1059"
    # Saved and read back: the same answer.
    again = McqAnswerer.from_json(json.loads(json.dumps(answerer.to_json())), index).answer(question, tactics)
    assert again["best"] == result["best"]
    with pytest.raises(CybersecqwenError, match="other features"):
        McqAnswerer.from_json({**answerer.to_json(), "features": ["x"]}, index)


@pytest.fixture
def mcq_heads(records, source_mirror, tmp_path):  # noqa: F811
    """Heads trained on a corpus holding the synthetic examples and the builder's MCQ examples in both splits."""
    from cybersecqwen.corpus.builders import BuildOptions, mcq_examples
    from cybersecqwen.heads.train import train_heads

    corpus = write_corpus(tmp_path / "corpus", synthetic_examples() + [e.as_json() for e in mcq_examples(records, BuildOptions()) if e is not None],
                          val_every=4)
    train_heads(corpus, tmp_path / "heads", source_mirror)
    return tmp_path / "heads"


def test_heads_train_the_answerer_and_guard_its_file(mcq_heads, tmp_path):
    from cybersecqwen.heads import load_heads

    manifest = json.loads((mcq_heads / "manifest.json").read_text())
    assert "mcq.json" in manifest["files"] and manifest["mcq"]["protocol"] == "open-book over the open catalogs"
    routes = load_heads(mcq_heads).mcq_payload["routes"]
    assert set(routes) == {"attack", "weakness"}  # issue 36.3: one answerer per kind of question, each chosen on its own
    assert all(r["depth"] in (5, 10, 20) and set(r["retrievers_tried"]) == {"tfidf", "bm25"} for r in routes.values())
    assert set(manifest["mcq"]["validation"]["routes"]) == {"attack", "weakness"}
    tampered = tmp_path / "tampered"
    shutil.copytree(mcq_heads, tampered)
    payload = json.loads((tampered / "mcq.json").read_text())
    payload["routes"]["attack"]["bias"] += 1
    (tampered / "mcq.json").write_text(json.dumps(payload))
    with pytest.raises(CybersecqwenError, match="does not match its sha256"):
        load_heads(tampered)


def test_eval_answers_cti_mcq_open_book_and_keeps_closed_book_numbers_apart(mcq_heads, source_mirror, tmp_path):  # noqa: F811
    from cybersecqwen.evaluate.references import differences, run_settings
    from cybersecqwen.evaluate.runner import EvalConfig, run_eval

    report = run_eval(EvalConfig(model=f"heads:{mcq_heads}", tasks={"cti-mcq": None}, out=tmp_path / "eval", data_dir=source_mirror))
    entry = report["tasks"]["cti-mcq"]
    assert entry["book"].startswith("open-book") and entry["metrics"]["parse_failure_rate"] == 0
    assert "**open-book**" in (tmp_path / "eval" / "report.md").read_text()
    published = {"model": "X-8B", "protocol": "ctibench", "mode": "generate", "trials": 1, "temperature": 0, "items": "whole",
                 "scores": {"cti-mcq": {"accuracy": 0.7}}}
    reasons = differences(published, "cti-mcq", "accuracy", run_settings(report, "cti-mcq"))
    assert any("open-book vs closed-book" in r for r in reasons)


def test_ask_is_grounded_with_citations_or_says_it_found_nothing(mcq_heads, source_mirror, tmp_path):  # noqa: F811
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService
    from cybersecqwen.heads import load_heads
    from cybersecqwen.heads.knowledge import KnowledgeIndex
    from cybersecqwen.serve.app import ServerSettings, create_app

    service = CtiService(None, load_catalogs(source_mirror), load_heads(mcq_heads), knowledge=KnowledgeIndex.load(source_mirror))
    http = TestClient(create_app(None, service, ServerSettings(model_name="heads", audit_log=tmp_path / "a.jsonl")),
                      base_url="http://localhost")
    question = "Which MITRE ATT&CK tactic does the technique Command and Scripting Interpreter (T1059) serve?"
    options = ["Discovery", "Execution", "Persistence", "Defense Evasion"]
    reply = http.post("/v1/cti/ask", json={"question": question, "options": options})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["answer"] == "B" and body["option"] == "Execution" and body["found"] is True
    assert body["citations"][0]["id"] == "T1059" and body["citations"][0]["url"].startswith("https://attack.mitre.org/")
    assert "Execution" in body["citations"][0]["text"] and "open-book" in body["method"]
    free = http.post("/v1/cti/ask", json={"question": "What does CWE-89 allow attackers to do?"}).json()
    assert free["found"] is True and free["citations"][0]["id"] == "CWE-89" and free["answer"] in free["citations"][0]["text"]
    missing = http.post("/v1/cti/ask", json={"question": "Which tactic is T0849 under?"}).json()
    assert missing["found"] is False and "could not find" in missing["answer"] and "T0849" in missing["answer"]
    assert missing["citations"] == []
    foreign = http.post("/v1/cti/ask", json={"question": "Quelle est la capitale de la France ?"}).json()
    assert foreign["found"] is False
    assert http.post("/v1/cti/ask", json={"question": question, "options": options[:3]}).status_code == 422
    assert http.post("/v1/cti/ask", json={"question": question, "options": [1, 2, 3, 4]}).status_code == 422
    assert http.post("/v1/cti/ask", json={"question": ""}).status_code == 422
    assert http.post("/v1/cti/ask", json={"question": "x" * 1_100_000}).status_code == 413


def test_technique_ids_a_report_writes_are_returned_exactly_and_first(source_mirror, trained_heads):  # noqa: F811
    """Issue 26.5: what a report states comes back as stated, with its span; revoked ids mapped, unknown ids dropped."""
    from types import SimpleNamespace

    from cybersecqwen.answering.attack import stated
    from cybersecqwen.answering.catalog import Entry, load_catalogs
    from cybersecqwen.answering.service import CtiService
    from cybersecqwen.heads import load_heads

    catalogs = SimpleNamespace(
        written={"T1059": Entry("T1059", "Command and Scripting Interpreter", "", "https://attack.mitre.org/techniques/T1059/", ("execution",)),
                 "T1059.001": Entry("T1059.001", "PowerShell", "", "https://attack.mitre.org/techniques/T1059/001/", ("execution",))},
        retired={"T1086": "T1059.001", "T1002": ""}, tactics={"execution": "Execution"})
    text = "Table 2. T1059.001 PowerShell; T1086 (old id); T1002; T9999 is no technique; xT1059 and T1059.001 again."
    found = stated(catalogs, text)
    assert [t["technique_id"] for t in found] == ["T1059.001", "T1002"]  # T1086 maps onto T1059.001, already stated
    first = found[0]
    assert first["origin"] == "stated" and text[first["span"][0]:first["span"][1]] == "T1059.001" and first["tactics"] == ["Execution"]
    assert found[1]["note"] == "T1002 is deprecated in ATT&CK" and found[1]["needs_review"]
    assert stated(catalogs, "T1086 was used.")[0]["note"] == "T1086 is revoked in ATT&CK; its successor is T1059.001"

    service = CtiService(None, load_catalogs(source_mirror), load_heads(trained_heads))
    result = service.extract_attack("The group ran scripts (T1059) and then searched files and directories on the host.")
    assert result["techniques"][0]["technique_id"] == "T1059" and result["techniques"][0]["origin"] == "stated"
    assert all(t["origin"] == "inferred" for t in result["techniques"][1:])
    assert "T1059" not in [t["technique_id"] for t in result["techniques"][1:]]


@pytest.mark.slow
def test_heads_fuse_weighs_the_answerer_against_the_model_on_validation_questions(mcq_heads, source_mirror, tmp_path):  # noqa: F811
    from cybersecqwen.answering.fuse import fit_fusion, fused_service

    result = fit_fusion(mcq_heads, tmp_path / "corpus", "embedded", items=10, data_dir=source_mirror)
    mcq = result["jobs"]["mcq"]
    assert len(mcq["weights"]) == 3 and mcq["validation_items"] >= 1 and {"top1_head", "top1_model", "top1_fused"} <= set(mcq)
    # Every rotation of the options is asked, so a model that prefers one letter scores chance, not its bias, and
    # gets no weight (the fixture's few validation answers all sit on "A", where SmolLM2 answers: 100% without it).
    assert mcq["top1_model"] <= 0.5 and mcq["weights"][1] < mcq["weights"][0]
    service, backend = fused_service(mcq_heads, "embedded", source_mirror)
    try:
        assert service.fusion.weights["mcq"] == mcq["weights"]
        question = "Which MITRE ATT&CK tactic does the technique Command and Scripting Interpreter (T1059) serve?"
        answer = service.ask(question, ["Discovery", "Execution", "Persistence", "Defense Evasion"])
        said = "fused with the model's letters" if mcq["weights"][1] > 0 else "the model has no learned say"
        assert said in answer["method"] and answer["citations"][0]["id"] == "T1059"
    finally:
        backend.close()


def test_the_demo_heads_are_the_default_and_no_heads_turns_them_off(trained_heads, source_mirror, tmp_path, monkeypatch):  # noqa: F811
    """Issue 26.6 (in part): `serve`, `analyze` and `enrich` answer with the demo's heads when present, and say so."""
    from cybersecqwen.answering.default_heads import DEMO_HEADS, default_heads

    monkeypatch.chdir(tmp_path)
    heads, said = default_heads(None, False, data_dir=source_mirror, build=False)
    assert heads is None and "not built" in said and "heads train" in said
    (tmp_path / DEMO_HEADS).parent.mkdir(parents=True)
    (tmp_path / DEMO_HEADS).mkdir()
    (tmp_path / DEMO_HEADS / "manifest.json").write_text("{}")  # found but broken: not used, and the line says why
    heads, said = default_heads(None, False, data_dir=source_mirror, build=False)
    assert heads is None and "not using" in said and "not a heads manifest" in said
    shutil.rmtree(tmp_path / DEMO_HEADS)
    shutil.copytree(trained_heads, tmp_path / DEMO_HEADS)
    assert default_heads(None, False, data_dir=source_mirror)[0] == DEMO_HEADS
    assert default_heads(None, True) == (None, "heads: none (--no-heads): the language model answers the structured endpoints alone")
    assert default_heads(Path("other"), False)[0] == Path("other")
    with pytest.raises(CybersecqwenError, match="contradict"):
        default_heads(Path("other"), True)


def test_technique_support_reads_the_text_and_never_looks_a_named_actor_up(index):
    """Issue 26.5: the ATT&CK fusion's knowledge feature. A sentence like a procedure example supports its technique;
    the named actor's own procedure examples are left out (that would be a look-up of what ATT&CK records for it)."""
    text = "3PARA RAT uses HTTP for command and control."
    read = index.technique_support(text, [text])
    looked_up = index.technique_support(text, [text], exclude_named=False)
    assert index.named_actors(text) == {"S0066"}
    assert looked_up["T1071"] > 0.7 and read.get("T1071", 0.0) < looked_up["T1071"] / 2  # its own procedure example is the sentence
    unnamed = "The implant uses HTTP for command and control."
    assert index.technique_support(unnamed, [unnamed])["T1071"] == max(index.technique_support(unnamed, [unnamed]).values())
    # What ATT&CK documents for a named actor comes back apart from the extraction, with the name as written.
    assert index.documented("Seen with Fancy Bear and 3PARA RAT.") == [
        {"id": "G0007", "name": "APT28", "url": "https://attack.mitre.org/groups/G0007", "named_as": "Fancy Bear", "techniques": ["T1059"]},
        {"id": "S0066", "name": "3PARA RAT", "url": "https://attack.mitre.org/software/S0066", "named_as": "3PARA RAT",
         "techniques": ["T1071", "T1083"]}]
    assert index.documented("fancy bears and a 3para rat") == []  # names are matched as the catalog writes them


def test_heads_fuse_without_a_model_learns_the_knowledge_weight_and_serves_it(trained_heads, heads_corpus, source_mirror, caplog):  # noqa: F811
    """`heads fuse --no-model` writes HEADS/fusion-heads.json (head, lexical, knowledge; the model's weight 0), which a
    heads-only service and a model without weights of its own both use; components show the knowledge score."""
    import logging

    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.fuse import fit_fusion
    from cybersecqwen.answering.loading import load_service
    from cybersecqwen.answering.service import CtiService, Fusion
    from cybersecqwen.heads import load_heads

    result = fit_fusion(trained_heads, heads_corpus, None, items=10, data_dir=source_mirror)
    saved = json.loads((trained_heads / "fusion-heads.json").read_text())
    assert saved == json.loads(json.dumps(result)) and saved["model"] == "none" and saved["format"] == 4
    attack = saved["jobs"]["attack"]
    assert len(attack["weights"]) == 6 and attack["weights"][1] == 0.0 and "micro_f1_knowledge" in attack
    assert "micro_f1_sentences" in attack  # the sentence classifier's column (issue 36.4)
    assert "micro_f1_model" not in attack and "top1_model" not in saved["jobs"]["cvss"]  # no model: no model row
    assert not (trained_heads / "fusion.json").exists()
    service = load_service(None, source_mirror, False, False, trained_heads, "embedded")
    assert service.fusion.weights["attack"] == attack["weights"] and "heads alone (no model)" in service.fusion.source
    found = service.extract_attack("The implant uses HTTP for command and control and lists files in a directory.")
    assert all(t["components"]["knowledge"] is not None for t in found["techniques"]) and found["documented"] == []
    assert "knowledge " in found["method"]
    assert found["answerer"]["attack"]["kind"] == "heads" and "knowledge" in found["answerer"]["attack"]["uses"]
    assert found["answerer"]["attack"]["quality"]["value"] == attack["micro_f1_fused"]
    # Heads without learned weights: each job says its head's own validation measure.
    plain = CtiService(None, load_catalogs(source_mirror), load_heads(trained_heads))
    quality = plain.classify_cwe("SQL injection in the login form.")["answerer"]["cwe"]["quality"]
    assert quality["metric"] == "top-1" and quality["value"] == load_heads(trained_heads).validation("cwe")["top1"]
    # Heads that changed since: the file is passed over, with a warning, for the heads' own defaults.
    heads = load_heads(trained_heads)
    heads.manifest_sha256 = "other"
    with caplog.at_level(logging.WARNING):
        assert "heads only" in Fusion.load(heads, None, "embedded").source
    assert "passed over" in caplog.text
    # Without a knowledge index the feature reads 0 (never an error) and the weights still apply.
    bare = CtiService(None, load_catalogs(source_mirror), load_heads(trained_heads))
    assert bare.extract_attack("The implant uses HTTP for command and control.")["techniques"][0]["components"]["knowledge"] == 0.0


def test_the_default_heads_are_built_once_from_the_mirror_and_reused(source_mirror, tmp_path, monkeypatch):  # noqa: F811
    """Issue 26.6: without demo heads, the first start builds the default heads from the mirror (with the demo's
    recipe), announces it and caches them; the next start reuses them; changed data builds new ones; missing data
    says which files instead of building."""
    import os

    from cybersecqwen.answering.default_heads import cached_heads_path, default_heads
    from cybersecqwen.heads import load_heads

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CYBERSECQWEN_HEADS_DIR", str(tmp_path / "cache"))
    add_cve_records(source_mirror / "cve-vulnrichment-2022-2023" / "cve-records-2022-2023.jsonl.gz")
    said: list[str] = []
    heads, line = default_heads(None, False, data_dir=source_mirror, announce=said.append)
    assert len(said) == 1 and "building the default heads once" in said[0] and "--no-heads" in said[0]
    assert heads == cached_heads_path(source_mirror) / "model" and "built now" in line, line
    assert load_heads(heads).has("cwe") and (heads / "fusion-heads.json").is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [heads.parent.name]  # no staging folder left behind
    again, line = default_heads(None, False, data_dir=source_mirror, announce=said.append)
    assert again == heads and len(said) == 1 and "the default heads, built from this data" in line
    cwe_file = next((source_mirror / "mitre-cwe").iterdir())
    os.utime(cwe_file, ns=(1, 1))
    assert cached_heads_path(source_mirror) != heads.parent  # a changed source file: other heads
    shutil.rmtree(source_mirror / "mitre-capec")
    none, line = default_heads(None, False, data_dir=source_mirror, announce=said.append)
    assert none is None and "cannot be built" in line and "mitre-capec" in line
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [heads.parent.name]  # the failed build left nothing


def vector(rng) -> str:
    values = {"AV": "NL", "AC": "LH", "PR": "NL", "UI": "NR", "S": "UC", "C": "HL", "I": "HL", "A": "HN"}
    return "CVSS:3.1/" + "/".join(f"{k}:{rng.choice(v)}" for k, v in values.items())


def add_cve_records(path: Path, per_cwe: int = 40) -> None:
    """Enough distinct CVE records over three CWEs for a CWE head (the fixture mirror holds four)."""
    import gzip
    import random

    rng = random.Random(0)
    words = ("gateway portal router camera printer firmware plugin service agent console module viewer editor tracker "
             "scheduler manager dashboard reporter uploader exporter").split()
    kinds = {"CWE-89": "SQL injection in the {a} {b} of {p} {v} lets remote attackers read the {c} table via the {d} parameter.",
             "CWE-79": "Stored cross-site scripting in the {a} {b} page of {p} {v} lets attackers inject script through the {d} field.",
             "CWE-416": "A use-after-free in the {a} {b} handler of {p} {v} crashes the {c} process when the {d} object is freed."}
    with gzip.open(path, "at") as handle:
        for n, (cwe, form) in enumerate((c, f) for c, f in kinds.items() for _ in range(per_cwe)):
            a, b, c, d, product = rng.sample(words, 5)
            text = form.format(a=a, b=b, c=c, d=d, p=f"{product.title()}{rng.randrange(1000)}", v=f"{rng.randrange(1, 9)}.{rng.randrange(10)}")
            handle.write(json.dumps({"cveMetadata": {"cveId": f"CVE-2023-{1000 + n}"}, "containers": {"cna": {
                "descriptions": [{"lang": "en", "value": text}], "problemTypes": [{"descriptions": [{"cweId": cwe, "type": "CWE"}]}],
                "metrics": [{"cvssV3_1": {"vectorString": vector(rng)}}]}}}) + "\n")
