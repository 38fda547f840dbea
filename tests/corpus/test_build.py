"""`data build` on hand-written sources: examples in the task formats, decontaminated, reproducible."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from cybersecqwen.config import load_recipe
from cybersecqwen.corpus.build import build_corpus
from cybersecqwen.errors import CybersecqwenError
from cybersecqwen.tasks import get_task


@pytest.fixture(autouse=True)
def _embedded(embedded_available):
    pass


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_corpus_examples_use_the_task_prompts_and_planted_items_are_dropped(source_mirror, recipe_file, tmp_path):
    out = tmp_path / "corpus"
    manifest = build_corpus(load_recipe(recipe_file), out, source_mirror)
    for name in ("train.jsonl", "val.jsonl", "manifest.json", "datacard.md", "datacard.png"):
        assert (out / name).is_file(), name
    examples = read(out / "train.jsonl") + read(out / "val.jsonl")
    tasks = {e["task"] for e in examples}
    assert tasks == {"cti-mcq", "cti-rcm", "cti-vsp", "cti-ate", "cti-taa", "cwe-classify", "cti-qa"}
    classify = next(e for e in examples if e["task"] == "cwe-classify" and e["source_id"].startswith("CVE-2023-0001"))
    assert json.loads(classify["messages"][2]["content"])["cwe_id"] == "CWE-89"
    assert get_task("cwe-classify").extract(classify["messages"][2]["content"], "robust").value == "CWE-89"
    qa = next(e for e in examples if e["task"] == "cti-qa" and e["source_id"] == "T1059#qa")
    assert qa["messages"][2]["content"].startswith("T1059 is Command and Scripting Interpreter (Execution).")
    rcm = [e for e in examples if e["task"] == "cti-rcm"]
    assert any(e["source"] == "mitre-cwe" for e in rcm)  # CWE observed examples
    sql = next(e for e in rcm if e["source_id"] == "CVE-2023-0001")
    assert [m["role"] for m in sql["messages"]] == ["system", "user", "assistant"]
    assert sql["messages"][1]["content"] == get_task("cti-rcm").build_prompt(
        {"Description": "SQL injection in the login form of Acme Portal 2.1 lets remote attackers read the user database."})
    assert sql["messages"][2]["content"].endswith("\n\nCWE-89")
    # The answer parses back under the task's own rules: training and evaluation agree on the format.
    assert get_task("cti-rcm").extract(sql["messages"][2]["content"], "ctibench").value == "CWE-89"
    vsp = next(e for e in examples if e["task"] == "cti-vsp" and e["source_id"] == "CVE-2023-0001")
    assert get_task("cti-vsp").extract(vsp["messages"][2]["content"], "ctibench").value.endswith("AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H")
    for mcq in (e for e in examples if e["task"] == "cti-mcq"):
        assert get_task("cti-mcq").extract(mcq["messages"][2]["content"], "ctibench").value in "ABCD"
    taa = next(e for e in examples if e["task"] == "cti-taa" and e["source"] == "mitre-attack-enterprise")
    assert "[PLACEHOLDER]" in taa["messages"][1]["content"] and "Fancy Bear" not in taa["messages"][1]["content"]
    ate = [e for e in examples if e["task"] == "cti-ate"]
    assert any(e["messages"][2]["content"].endswith("T1059, T1083") for e in ate)  # TRAM, sub-technique folded
    # The planted CTI-RCM item (a CVE record and a release line copying fixture rows) never reaches the corpus.
    assert not any("use-after-free in the kernel" in e["messages"][1]["content"] for e in examples)
    assert not any("Stored XSS in the admin page" in e["messages"][1]["content"] for e in examples)
    assert manifest["dropped"]["cve-vulnrichment-2022-2023"]["contaminated"] == 3  # its RCM, VSP and cwe-classify examples
    assert manifest["contaminated_by_split"]["cybersecqwen-release-rcm-2021"]["cti-rcm"] == 1
    assert manifest["sources"]["mitre-cwe"]["license"] == "MITRE-CWE-terms"
    # The ATT&CK software page that a CTI-ATE item came from is dropped by its URL even though the text differs.
    assert not any(e["source_id"].startswith("S0066") for e in ate)


def test_cwe_catalog_parts(source_mirror):
    from cybersecqwen.catalogs.cwe import parse_cwe_catalog, parse_cwe_categories

    path = source_mirror / "mitre-cwe" / "cwec_v4.14.xml"
    weaknesses = parse_cwe_catalog(path)
    assert weaknesses["CWE-79"].parents == ("CWE-20",) and weaknesses["CWE-79"].mapping_usage == "Allowed"
    assert weaknesses["CWE-79"].consequences == ("Integrity: Modify Memory",)
    assert weaknesses["CWE-79"].observed_examples[0][0] == "CVE-2099-0001"
    assert parse_cwe_categories(path)["CWE-1019"].members == ("CWE-20", "CWE-79")


def test_rebuild_is_byte_identical(source_mirror, recipe_file, tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    build_corpus(load_recipe(recipe_file), first, source_mirror)
    build_corpus(load_recipe(recipe_file), second, source_mirror)
    for name in ("train.jsonl", "val.jsonl", "manifest.json", "datacard.md", "datacard.png"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_license_not_allowed_is_refused(source_mirror, recipe_file, tmp_path):
    recipe_file.write_text(recipe_file.read_text().replace('MITRE-CWE-terms, ', ''))
    with pytest.raises(CybersecqwenError, match="mitre-cwe.*MITRE-CWE-terms.*license_allow"):
        build_corpus(load_recipe(recipe_file), tmp_path / "out", source_mirror)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda root: (root / "mitre-cwe" / "cwec_v4.14.xml").write_text("<Weakness_Catalog><Weaknesses><Weakness ID='1'"), "cwec_v4.14.xml is malformed XML at line 1"),
    (lambda root: (root / "mitre-capec" / "stix-capec-3.9.json").write_text('{"type": "bundle", "objects": [{"type": '), "stix-capec-3.9.json is malformed JSON at line 1"),
    (lambda root: (root / "mitre-capec" / "stix-capec-3.9.json").write_text('{"objects": 3}'), "is not a STIX bundle"),
    (lambda root: gzip.open(root / "mitre-attack-enterprise" / "enterprise-attack-v18.1.json.gz", "wt").close(), "enterprise-attack-v18.1.json.gz is malformed JSON"),
    (lambda root: (root / "tram-attack-sentences" / "single_label.json").write_text('[{"text": "x"}]'), "entry 0 lacks text/label"),
    (lambda root: gzip.open(root / "cve-vulnrichment-2022-2023" / "cve-records-2022-2023.jsonl.gz", "at").write('{"cveMetadata": {}}\n'),
     "line 5 is not a CVE JSON 5 record"),
])
def test_malformed_sources_name_the_file_and_position(source_mirror, recipe_file, tmp_path, edit, message):
    edit(source_mirror)
    with pytest.raises(CybersecqwenError, match=message.replace(".", r"\.")):
        build_corpus(load_recipe(recipe_file), tmp_path / "out", source_mirror)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize("text, message", [
    ("name: x\ndata: {sources: [], license_allow: [], tasks: {cti-xyz: {}}}", "data.tasks: Value error, unknown task"),
    ("name: x\ndata: {sources: [], license_allow: [], tasks: {cti-mcq: {weight: -1}}}", "data.tasks.cti-mcq.weight"),
    ("name: x\ndata: {sources: [], license_allow: [], tasks: {cti-mcq: {}}, seeds: 3}", "data.seeds: Extra inputs"),
    ("name: [unclosed", "is not valid YAML"),
    ("name: x\ndata: {sources: [], license_allow: [], tasks: {cti-mcq: {}}}\ntrain: {gradient_checkpointing_above: 512}",
     "train: Value error, gradient_checkpointing_above is set but gradient_checkpointing is false"),
    ("name: x\ndata: {sources: [], license_allow: [], tasks: {cti-mcq: {}}}\n"
     "train: {gradient_checkpointing: true, gradient_checkpointing_above: 0}", "train.gradient_checkpointing_above"),
])
def test_bad_recipes_name_the_key(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(CybersecqwenError, match=message):
        load_recipe(path)


@pytest.mark.parametrize("years, count", [("2022-2023", 5913), ("2024", 21412)])
def test_cve_json5_records_agree_with_the_mirror_labels(mirror, years, count):
    import csv

    from cybersecqwen import catalogs

    records, provenance = catalogs.load(f"cve-vulnrichment-{years}", mirror)
    assert provenance["pinned"] and provenance["license"] == "CC0-1.0"
    folder = mirror / f"cve-vulnrichment-{years}"
    labels = {row["cve_id"]: row for row in csv.DictReader((folder / f"cve-labels-{years}.csv").open(encoding="utf-8"))}
    assert len(records) == len(labels) == count
    for record in records:
        row = labels[record.cve_id]
        assert ";".join(record.cwe_ids) == row["cwe_ids"] and record.cvss_vector == row["cvss_v3_vector"]
        assert record.description.split() == row["description"].split()


@pytest.mark.slow
def test_real_sources_build_in_sane_ranges_with_zero_benchmark_overlap(mirror, tmp_path):
    from cybersecqwen.corpus.audit import audit_file

    out = tmp_path / "corpus"
    # The epoch recipe: the demo's mix from the sources before 2024. The demo's own (with the 2024 records, 2.4x the
    # CVE examples) took 206 s here against 84 s, too much of a suite that must fit 20 minutes; its decontamination on
    # real data is measured in BENCHMARKS.md ("Issue 36": 354 of its 2024 examples dropped).
    manifest = build_corpus(load_recipe(Path("configs/recipes/smollm2-135m-cpu-epoch.yaml")), out, mirror)
    assert 5000 <= manifest["counts"]["train"]["total"] <= 7000
    assert set(manifest["counts"]["train"]["by_task"]) >= {"cti-mcq", "cti-rcm", "cti-vsp", "cti-taa", "cwe-classify", "cti-qa"}
    assert manifest["contaminated_by_split"]["cybersecqwen-release-rcm-2021"]["cti-rcm-2021"] > 900
    assert all(source["pinned"] for source in manifest["sources"].values())
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    letters = [r["messages"][-1]["content"][-1] for r in rows if r["task"] == "cti-mcq"]
    for letter in "ABCD":  # the right answer is spread over A-D, so no letter is a shortcut
        assert 0.2 <= letters.count(letter) / len(letters) <= 0.3, letter
    for name in ("train.jsonl", "val.jsonl"):
        result = audit_file(out / name, mirror)
        assert result["examples_overlapping_any_split"] == 0, result["first_hits"][:3]


def test_a_corpus_another_process_is_building_is_refused_and_the_lock_goes_with_it(source_mirror, recipe_file, tmp_path):
    import fcntl

    out = tmp_path / "corpus"
    other = (tmp_path / ".corpus.lock").open("a+")  # another process's lock (a separate open file holds its own)
    fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    other.write("4242"), other.flush()
    with pytest.raises(CybersecqwenError, match=r"corpus is being built by another process \(pid 4242\)"):
        build_corpus(load_recipe(recipe_file), out, source_mirror)
    assert not out.exists()
    other.close()  # the process ends: its lock is gone with it
    build_corpus(load_recipe(recipe_file), out, source_mirror)
    assert (out / "manifest.json").is_file() and not (tmp_path / ".corpus.lock").exists()


def test_cve_labels_are_taught_in_view_1003_with_the_source_label_kept_and_the_protocol_named(source_mirror, recipe_file, tmp_path):
    """Issue 36.1-2: the 2024 records join the corpus under the "test period" protocol; a CNA's CWE-121 is taught as
    its view-1003 ancestor CWE-787 with CWE-121 kept beside it; "as-given" keeps it; the datacard names both."""
    text = recipe_file.read_text().replace("cve-vulnrichment-2022-2023,", "cve-vulnrichment-2022-2023, cve-vulnrichment-2024,")
    recipe_file.write_text(text)
    manifest = build_corpus(load_recipe(recipe_file), tmp_path / "mapped", source_mirror)
    assert manifest["cve_protocol"] == "test period without the test items" and manifest["cwe_labels"] == "view-1003"
    rows = [json.loads(line) for name in ("train.jsonl", "val.jsonl") for line in (tmp_path / "mapped" / name).open()]
    stack = [r for r in rows if r["source_id"].startswith("CVE-2024-0101")]
    assert {r["task"] for r in stack} == {"cti-rcm", "cwe-classify", "cti-vsp"}
    for row in stack:
        if row["task"] != "cti-vsp":
            assert "CWE-787" in row["messages"][-1]["content"] and row["source_label"] == "CWE-121", row
    assert all("source_label" not in r for r in rows if r["source_id"].startswith("CVE-2023-0001"))  # CWE-89 is in the view
    # A CWE the catalog does not hold teaches no weakness (its CVSS vector still teaches CTI-VSP).
    assert {r["task"] for r in rows if r["source_id"].startswith("CVE-2024-0102")} == {"cti-vsp"}
    card = (tmp_path / "mapped" / "datacard.md").read_text()
    assert "test period without the test items" in card and "view 1003" in card

    recipe_file.write_text(text.replace("  seed: 0\n", "  seed: 0\n  cwe_labels: as-given\n"))
    build_corpus(load_recipe(recipe_file), tmp_path / "given", source_mirror)
    given = [json.loads(line) for name in ("train.jsonl", "val.jsonl") for line in (tmp_path / "given" / name).open()]
    rcm = [r for r in given if r["source_id"] == "CVE-2024-0101" and r["task"] == "cti-rcm"]
    assert rcm and rcm[0]["messages"][-1]["content"].endswith("CWE-121") and "source_label" not in rcm[0]


def test_a_recipe_naming_the_2024_source_without_its_files_says_which_file_in_one_line(source_mirror, recipe_file, tmp_path):
    import shutil

    shutil.rmtree(source_mirror / "cve-vulnrichment-2024")
    recipe_file.write_text(recipe_file.read_text().replace("cve-vulnrichment-2022-2023,", "cve-vulnrichment-2022-2023, cve-vulnrichment-2024,"))
    with pytest.raises(CybersecqwenError, match="cve-records-2024.jsonl.gz") as caught:
        build_corpus(load_recipe(recipe_file), tmp_path / "corpus", source_mirror)
    assert "\n" not in str(caught.value) and not (tmp_path / "corpus").exists()
