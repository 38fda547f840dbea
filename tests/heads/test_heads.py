"""Specialist heads: trained on a corpus, saved without pickle, refused when tampered, scored like any model, fused."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.heads import load_heads
from cybersecqwen.heads.fusion import fused_probabilities, learn_weights
from cybersecqwen.heads.train import train_heads
from tests.heads.conftest import example, synthetic_examples, write_corpus


def test_heads_train_save_load_and_predict(trained_heads, heads_corpus):
    manifest = json.loads((trained_heads / "manifest.json").read_text())
    assert set(manifest["heads"]) == {"cwe", "attack", "attack-sentences", *(f"cvss-{k}" for k in ("AV", "AC", "PR", "UI", "S", "C", "I", "A"))}
    assert "actor" in manifest["skipped"]  # the corpus has no threat-actor examples: said, not hidden
    assert manifest["heads"]["cwe"]["validation"]["validation_examples"] > 0
    heads = load_heads(trained_heads, heads_corpus / "manifest.json")
    assert heads.ranked("cwe", ["SQL injection via the id parameter of the login query"], 1)[0][0][0] == "CWE-89"
    assert heads.cvss(["A remote unauthenticated attacker can compromise the server over the network"])[0]["vector"] == \
        "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
    assert {t for t, _ in heads.techniques(["The implant beacons to its C2 server over HTTPS."])[0]} >= {"T1071"}
    probabilities = [p for _, p in heads.ranked("cwe", ["buffer overflow in the image parser"])[0]]
    assert abs(sum(probabilities) - 1) < 1e-6


def test_same_corpus_and_seed_give_identical_predictions(trained_heads, heads_corpus, source_mirror, tmp_path):
    train_heads(heads_corpus, tmp_path / "again", source_mirror)
    texts = ["Path traversal lets attackers read files via ../ sequences", "heap overflow in a crafted chunk"]
    first, second = load_heads(trained_heads), load_heads(tmp_path / "again")
    assert first.ranked("cwe", texts) == second.ranked("cwe", texts)
    assert first.cvss(texts) == second.cvss(texts)


def test_tampered_or_foreign_heads_are_refused(trained_heads, tmp_path):
    weights = trained_heads / "weights.npz"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CybersecqwenError, match="does not match its sha256"):
        load_heads(trained_heads)
    other = write_corpus(tmp_path / "other", synthetic_examples()[:10])
    with pytest.raises(CybersecqwenError, match="not a heads folder"):
        load_heads(tmp_path)
    with pytest.raises(CybersecqwenError, match="does not match|another corpus"):
        load_heads(trained_heads, other / "manifest.json")


def test_a_pickled_array_is_never_loaded_even_with_a_matching_hash(trained_heads):
    import hashlib

    weights = trained_heads / "weights.npz"
    with zipfile.ZipFile(weights, "a") as archive:  # an object array: loading it would unpickle
        with archive.open("evil.npy", "w") as handle:
            np.lib.format.write_array(handle, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    manifest = json.loads((trained_heads / "manifest.json").read_text())
    manifest["files"]["weights.npz"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    (trained_heads / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CybersecqwenError, match="cannot be read as plain arrays"):
        load_heads(trained_heads)


def test_too_few_examples_name_the_head_and_the_count(source_mirror, tmp_path):
    corpus = write_corpus(tmp_path / "small", synthetic_examples(per_label=3))
    with pytest.raises(CybersecqwenError, match=r"head cwe: \d+ labelled examples"):
        train_heads(corpus, tmp_path / "heads", source_mirror)
    assert not (tmp_path / "heads").exists()  # nothing half written
    with pytest.raises(CybersecqwenError, match="not a built corpus"):
        train_heads(tmp_path / "missing", tmp_path / "heads", source_mirror)


def test_served_cvss_vector_is_the_one_eval_heads_scores_even_with_a_calibrated_weight(trained_heads, source_mirror):
    """Issue 36.6: /v1/cve/map without a model and `eval --model heads:` give the same CTI-VSP answer: the median-score
    vector of the heads' distributions. A lone head's fusion weight (a calibration temperature, 1.132 on the default
    heads) used to sharpen the distribution and move that median: 8 of 20 CTI-VSP answers differed."""
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService
    from cybersecqwen.heads.respond import HeadsResponder
    from cybersecqwen.tasks import get_task
    from cybersecqwen.tasks.base import Item

    service = CtiService(None, load_catalogs(source_mirror), load_heads(trained_heads))
    service.fusion.weights["cvss"] = [1.6, 0.0, 0.0]
    texts = ["A remote unauthenticated attacker can compromise the server over the network",
             "A local user with low privileges can crash the kernel driver", "Stored script in the comment form runs in a victim's browser",
             "Physical access to the device reads its memory", "An attacker on the adjacent network reads traffic after the user clicks"]
    task = get_task("cti-vsp")
    items = [Item(i, task.build_prompt({"Description": text}), "", {"Description": text}) for i, text in enumerate(texts)]
    expected = HeadsResponder(trained_heads, source_mirror).answers(task, items)
    served = [task.render_answer(service.map_cve("CVE-2024-0001", text)["cvss"]["vector"]) for text in texts]
    assert served == expected


def test_heads_are_evaluated_like_any_model_through_the_task_scorers(trained_heads, source_mirror, tmp_path):
    from cybersecqwen.evaluate.runner import EvalConfig, run_eval

    report = run_eval(EvalConfig(model=f"heads:{trained_heads}", tasks={"cti-rcm": None, "cti-vsp": None, "cti-ate": None},
                                 out=tmp_path / "eval", data_dir=source_mirror))
    rcm = report["tasks"]["cti-rcm"]
    assert rcm["metrics"]["parse_failure_rate"] == 0 and rcm["n_items"] == 4
    assert rcm["ci95"]["accuracy"] and rcm["trivial_baseline"]["answer"] == "CWE-79"
    assert report["tasks"]["cti-vsp"]["metrics"]["valid"] == 2
    assert report["backend"]["kind"] == "heads"
    # These heads' corpus has no MCQ examples, so no MCQ answerer: refused before any item is answered, saying why.
    with pytest.raises(CybersecqwenError, match="cannot answer cti-mcq: their corpus could not train mcq"):
        run_eval(EvalConfig(model=f"heads:{trained_heads}", tasks={"cti-mcq": None}, out=tmp_path / "mcq", data_dir=source_mirror))
    assert not (tmp_path / "mcq").exists()


def fusion_items(model_quality: str, n: int = 200, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    """Synthetic validation items: a head right 60% of the time, a model that is useless or perfect."""
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        gold = int(rng.integers(5))
        head = rng.normal(size=5)
        if rng.random() < 0.6:
            head[gold] += 3
        model = np.zeros(5) if model_quality == "useless" else np.where(np.arange(5) == gold, 0.0, -5.0)
        if model_quality == "useless":
            model = rng.normal(size=5)
        items.append((np.stack([head, model, np.zeros(5)], axis=1), gold))
    return items


def test_fusion_gives_a_useless_model_no_weight_and_a_perfect_one_the_lead():
    useless = learn_weights(fusion_items("useless"))
    assert useless[1] < 0.1 * useless[0]
    perfect = learn_weights(fusion_items("perfect"))
    assert perfect[1] > perfect[0]
    x, gold = fusion_items("perfect", n=1, seed=3)[0]
    assert int(np.argmax(fused_probabilities(x, perfect))) == gold


def test_heads_only_service_answers_from_the_catalog_with_components(trained_heads, source_mirror):
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService

    catalogs = load_catalogs(source_mirror)
    service = CtiService(None, catalogs, load_heads(trained_heads))
    result = service.classify_cwe("SQL injection in the login query via the id parameter", top_k=3)
    assert result["candidates"][0]["cwe_id"] == "CWE-89"
    assert all(c["cwe_id"] in catalogs.cwe for c in result["candidates"])
    assert result["candidates"][0]["components"]["model"] is None and result["candidates"][0]["components"]["head"] > 0.5
    assert "heads only" in result["method"]
    everything = service.fuse("cwe", "SQL injection in the login query", "cwe-classify", {"Text": "SQL injection in the login query"})
    assert abs(sum(row["confidence"] for row in everything) - 1) < 1e-3  # one distribution over the whole shortlist
    mapped = service.map_cve("CVE-2024-0001", "A remote unauthenticated attacker can compromise the server over the network")
    assert mapped["cvss"]["vector"] == "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
    with pytest.raises(CybersecqwenError, match="need a language model"):
        service.ask("What is CWE-79?")


def test_fusion_sees_validation_texts_as_the_heads_did_before_their_refit(source_mirror, tmp_path):
    # Two of the newest CVEs (the validation split) say something no training text says, labelled CWE-22. The served
    # head is refit on them and learns it; the holdout view (what `heads fuse` learns from) answers as the head did
    # before it saw them.
    rows = synthetic_examples()
    planted = [example("cti-rcm", "cve-vulnrichment-2022-2023", f"CVE-2099-{i}", {"Description": f"zorblax frobnicator quux {word}"},
                       cwe_id="CWE-22", name="CWE-22", explanation="synthetic") for i, word in enumerate(("alpha", "beta"))]
    corpus = write_corpus(tmp_path / "corpus", rows + planted)
    train_heads(corpus, tmp_path / "heads", source_mirror)
    heads = load_heads(tmp_path / "heads", corpus / "manifest.json")
    text = "zorblax frobnicator quux alpha"
    served = dict(heads.ranked("cwe", [text])[0])
    before_refit = dict(heads.holdout().ranked("cwe", [text])[0])
    assert served["CWE-22"] > before_refit.get("CWE-22", 0.0) + 0.2
    with pytest.raises(CybersecqwenError, match="no holdout prediction"):
        heads.holdout().ranked("cwe", ["a text that was never a validation item"])


def label_items(model_quality: str, n: int = 60, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, int]]:
    """Multi-label items of six candidates, two or three of them right; the head's logit is informative but noisy."""
    from cybersecqwen.heads.fusion import logit

    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        truth = np.zeros(6)
        truth[rng.choice(6, size=rng.integers(2, 4), replace=False)] = 1
        head = logit(np.clip(0.25 + 0.3 * truth + rng.normal(0, 0.2, 6), 0.01, 0.99))
        model = rng.normal(size=6) if model_quality == "useless" else np.where(truth == 1, 0.0, -6.0)
        items.append((np.stack([head, model, np.zeros(6)], axis=1), truth, int(truth.sum())))
    return items


def test_multi_label_fusion_learns_per_candidate_weights_and_reports_several_techniques():
    from cybersecqwen.heads.fusion import label_probabilities, learn_label_weights
    from cybersecqwen.answering.fuse import evaluate_labels

    useless = learn_label_weights([(x, y) for x, y, _ in label_items("useless", n=400)])
    assert useless[1] < 0.1 * useless[0] and len(useless) == 4  # three features and the bias
    perfect = learn_label_weights([(x, y) for x, y, _ in label_items("perfect")])
    assert perfect[1] > perfect[0]
    x, truth, _ = label_items("perfect", n=1, seed=5)[0]
    probabilities = label_probabilities(x, perfect)
    assert ((probabilities > 0.5) == (truth == 1)).all()  # several right candidates are likely at once, not one
    from cybersecqwen.answering.service import Fusion

    with pytest.raises(CybersecqwenError, match="fusion weights for attack need 6 values"):
        Fusion({"attack": [1.0, 0.0, 0.0]}, {"attack": 0.5}, "a softmax-era weight list")
    result = evaluate_labels(label_items("perfect"), perfect, head_threshold=0.5)
    assert result["micro_f1_fused"] == 1.0 and result["micro_f1_fused"] > result["micro_f1_head"]
    assert result["unflagged_precision"] == 1.0 and result["flagged_share"] == 0.0


def test_heads_only_attack_extraction_is_the_attack_head_at_its_own_threshold(trained_heads, source_mirror):
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService

    heads = load_heads(trained_heads)
    service = CtiService(None, load_catalogs(source_mirror), heads)
    text = "The implant beacons to its C2 server over HTTPS and dumps credentials from LSASS memory."
    found = service.extract_attack(text)["techniques"]
    expected = [(t, p) for t, p in heads.techniques([text])[0] if t in service.catalogs.attack][:5]
    assert [t["technique_id"] for t in found] == [t for t, _ in expected]
    assert all(abs(t["confidence"] - p) < 1e-3 and abs(t["components"]["head"] - p) < 1e-3 for t, (_, p) in zip(found, expected))


@pytest.mark.slow
def test_heads_fuse_learns_weights_with_the_embedded_model_and_the_server_uses_them(trained_heads, heads_corpus, source_mirror, caplog):
    from cybersecqwen.answering.fuse import fit_fusion, fused_service

    result = fit_fusion(trained_heads, heads_corpus, "embedded", items=10, data_dir=source_mirror)
    saved = json.loads((trained_heads / "fusion.json").read_text())
    assert saved == json.loads(json.dumps(result)) and saved["format"] == 4
    attack = saved["jobs"]["attack"]
    assert len(attack["weights"]) == 6 and attack["validation_items"] == 10 and 0 < attack["select_above"] < 1
    assert {"micro_f1_head", "micro_f1_model", "micro_f1_fused", "ece"} <= set(attack)
    assert len(saved["jobs"]["cwe"]["weights"]) == 3
    service, backend = fused_service(trained_heads, "embedded", source_mirror)
    try:
        assert service.fusion.select_above == attack["select_above"] and "learned on 10 validation items" in service.fusion.source
        found = service.extract_attack("The operators clear event logs on Zeta CMS to hide the intrusion.")["techniques"]
        assert found[0]["technique_id"] == "T1070" and "bias" in service.method("attack", "CTI-ATE prompt")
    finally:
        backend.close()
    # A fusion file from before per-technique ATT&CK fusion is not trusted: heads-only weights, with a warning.
    (trained_heads / "fusion.json").write_text(json.dumps({**saved, "format": 1}))
    service, backend = fused_service(trained_heads, "embedded", source_mirror)
    backend.close()
    assert "heads only" in service.fusion.source and "older cybersecqwen" in caplog.text


def test_the_sentence_classifier_finds_a_technique_one_sentence_shows_and_joins_the_attack_fusion(trained_heads, source_mirror):
    """Issue 36.4: trained on the labelled sentences of CTI-ATE examples, validated on whole reports (threshold chosen
    there); a report's technique probability is its best sentence's; it is a fusion feature and a shortlist source."""
    from cybersecqwen.answering.catalog import load_catalogs
    from cybersecqwen.answering.service import CtiService
    from cybersecqwen.heads.model import SENTENCE_HEAD

    heads = load_heads(trained_heads)
    validation = heads.validation(SENTENCE_HEAD)
    assert validation["validation_reports"] > 10 and 0 < validation["threshold"] < 1 and validation["micro_f1"] > 0.8
    report = ("Quarterly summary of the incident. The team met twice. The operators clear event logs on Helix Mail to hide "
              "the intrusion. Budget follows in the appendix.")
    found = heads.sentence_techniques([report])[0]
    assert max(found, key=found.get) == "T1070" and found["T1070"] > 0.5
    assert set(heads.holdout().sentence_techniques([next(iter(_validation_reports(trained_heads)))])[0]) <= set(heads.models[SENTENCE_HEAD].labels)
    service = CtiService(None, load_catalogs(source_mirror), heads)
    service.fusion.weights["attack"] = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # the sentence feature alone
    top = service.extract_attack(report)["techniques"][0]
    assert top["technique_id"] == "T1070" and top["components"]["sentences"] > 0.5


def _validation_reports(heads_dir):
    """The texts the sentence head kept holdout predictions for: found by asking the holdout view for each."""
    import json

    from cybersecqwen.heads.model import text_key

    keys = set(json.loads((heads_dir / "heads.json").read_text())["attack-sentences"]["holdout_keys"])
    corpus = heads_dir.parent / "corpus"
    from cybersecqwen.tasks import get_task

    for line in (corpus / "val.jsonl").read_text().splitlines() + (corpus / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["task"] == "cti-ate":
            text = get_task("cti-ate").item_text(row["messages"][-2]["content"])
            if text_key(text) in keys:
                yield text
